"""`python -m workbench.flower ...`: see workbench.flower.cli."""

import sys

from workbench.flower.cli import main

sys.exit(main())
