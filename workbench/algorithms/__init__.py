"""The explicit registry of algorithms: the `algorithm` parameter picks a class from it."""

from __future__ import annotations

from workbench.algorithms.base import Algorithm, Client, Environment
from workbench.algorithms.fd import FederatedDistillation
from workbench.algorithms.fedavg import FedAvg
from workbench.algorithms.fedkd import FedKD
from workbench.algorithms.fedlora import FedLoRA
from workbench.algorithms.fedproto import FedProto
from workbench.algorithms.fml import FML
from workbench.algorithms.lg_fedavg import LGFedAvg
from workbench.algorithms.standalone import Standalone

REGISTRY: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (FedLoRA, Standalone, FedAvg, LGFedAvg, FederatedDistillation, FedProto, FML,
                FedKD)
}

__all__ = ["REGISTRY", "Algorithm", "Client", "Environment"]
