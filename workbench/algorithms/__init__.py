"""The explicit registry of algorithms: the `algorithm` parameter picks a class from it."""

from __future__ import annotations

from workbench.algorithms.base import Algorithm, Client, Environment
from workbench.algorithms.fedlora import FedLoRA

REGISTRY: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (FedLoRA,)
}

__all__ = ["REGISTRY", "Algorithm", "Client", "Environment"]
