"""The registry of methods by name: the one list the `algorithm` parameter, the parameter table,
the notebook's parameters cell and the Flower app's config are derived from.

A leaf on purpose: the config reads it, and nothing here imports a method or the config, so no
import runs in a circle. Importing it imports its package, `workbench.algorithms`, which
registers the built-in methods (and offers `register` for a researcher's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.algorithms.base import Algorithm

REGISTRY: dict[str, type[Algorithm[Any]]] = {}  # method name → its Algorithm subclass, in registration order
