"""The registry of methods by name: the one list the `algorithm` parameter, the parameter table,
the notebook's parameters cell and the Flower app's config are derived from.

A leaf on purpose: the config reads it, and nothing here imports a method or the config, so no
import runs in a circle. Importing it imports its package, `workbench.algorithms`, which
registers the built-in methods (and offers `register` for a researcher's own).
"""

from __future__ import annotations

REGISTRY: dict[str, type] = {}  # method name → its Algorithm subclass, in registration order
