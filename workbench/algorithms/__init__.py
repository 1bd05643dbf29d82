"""The methods, registered by name in `workbench.algorithms.registry.REGISTRY`: the one list the
`algorithm` parameter, the parameter table, the notebook's parameters cell and the Flower app's
config are derived from.

A method is one module, or one package when it has mechanisms of its own (`fedlora/`,
`fedkd/`): an `Algorithm` subclass with its `name`, its `Params` section, its traits (`title`,
`kernel_imports`, `heatmap`), the facts it owns (`seed_purposes`, `diagnostics`) and its hooks.
Built-in methods are registered below; a researcher's own method is registered from anywhere
with `register(MyMethod)` and is then accepted by `build_config`, the CLI, sweeps and the
notebook like the built-ins; `register` refuses declarations that clash with another method's
(`declarations`). The registry hands `workbench.core.diagnostics` every registered method's
diagnostics, so core, which imports no method, reads and warns on their columns: higher layers
take the union from here (`DIAGNOSTICS`). Importing this package does not import torch.
"""

from __future__ import annotations

from dataclasses import fields

from workbench.algorithms import declarations
from workbench.algorithms.base import Algorithm, Client, Environment, Knob, KnobGrid
from workbench.algorithms.declarations import NAME
from workbench.algorithms.fd import FederatedDistillation
from workbench.algorithms.fedavg import FedAvg
from workbench.algorithms.fedkd import FedKD
from workbench.algorithms.fedlora import FedLoRA
from workbench.algorithms.fedproto import FedProto
from workbench.algorithms.fml import FML
from workbench.algorithms.lg_fedavg import LGFedAvg
from workbench.algorithms.registry import REGISTRY
from workbench.algorithms.standalone import Standalone
from workbench.core import diagnostics
from workbench.core.diagnostics import DIAGNOSTICS


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Add a method to the registry (usable as a class decorator); its name must be new and its
    seed purposes and diagnostics may not clash with another method's."""
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"register() takes an Algorithm subclass, got {cls!r}")
    if not NAME.fullmatch(cls.name) or cls.name == Algorithm.name:
        raise ValueError(f"algorithm name {cls.name!r} must be lower_snake_case and not 'base'")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(
            f"an algorithm named {cls.name!r} is already registered ({REGISTRY[cls.name].__module__})"
        )
    declarations.check(cls, [m for m in REGISTRY.values() if m.name != cls.name])
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method from the registry (a test's or notebook's own method, when done)."""
    REGISTRY.pop(name, None)


def method_parameters(name: str) -> list[str]:
    """The flat names of a method's own knobs (empty for a method without any)."""
    params = REGISTRY[name].Params
    return [params.prefix + f.name for f in fields(params)] if params is not None else []


def title(name: str) -> str:
    """A method's display name: its declared `title`, else the name (a method not registered here)."""
    method = REGISTRY.get(name)
    return method.title if method is not None else name


def seed_purposes() -> dict[str, int]:
    """Every seed purpose in use, name → number: the generic ones and each registered method's."""
    return declarations.seed_purposes(REGISTRY.values())


# core reads the registered methods' diagnostics through this (it imports no method)
diagnostics.use_declarations(lambda: [m.diagnostics for m in REGISTRY.values()])

for _builtin in (FedLoRA, Standalone, FedAvg, LGFedAvg, FederatedDistillation, FedProto, FML, FedKD):
    register(_builtin)

__all__ = [
    "DIAGNOSTICS",
    "REGISTRY",
    "Algorithm",
    "Client",
    "Environment",
    "Knob",
    "KnobGrid",
    "method_parameters",
    "register",
    "seed_purposes",
    "title",
    "unregister",
]
