"""Deferred imports: a module stand-in that imports the real module on its first attribute use.

Algorithm modules are imported to read their parameter sections, and the CLI refuses a bad
parameter before torch or PEFT load; so they bind heavy modules with `lazy(...)` and pay the
import where work starts.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for module `__name__` until an attribute is read."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads are plain attribute hits
        return getattr(module, attr)


def lazy(name: str) -> types.ModuleType:
    """The module `name`, imported now if it already is, else on first attribute access."""
    return sys.modules.get(name) or LazyModule(name)
