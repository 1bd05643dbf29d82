"""What an honest upload looks like, per algorithm: the reference the server validates against.

`aggregation.validate_update` needs a reference payload. In the in-process loop every client is
trusted and some algorithms validate against the first upload; across a network the first
upload may be the bad one, so the server validates each upload against a reference of its own
before aggregating. Algorithms not listed (and FedKD, whose compressed uploads vary in rank
per client) are validated by their own `aggregate`, one refused client at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from workbench.algorithms.base import Payload
from workbench.config import ExperimentConfig
from workbench.zoo_spec import REPRESENTATION_DIM

Reference = Callable[[Payload, ExperimentConfig], Payload]


def _same_as_server(state: Payload, config: ExperimentConfig) -> Payload:
    """The upload mirrors the global state (adapter, head, shared or whole model)."""
    return state


def _class_table(width: Callable[[int], int], values: str) -> Reference:
    """Per-class means (C × width) with per-class counts (C), as FD and FedProto upload."""
    def reference(state: Payload, config: ExperimentConfig) -> dict[str, Tensor]:
        classes = config.num_classes
        return {values: torch.zeros(classes, width(classes), dtype=torch.float32),
                "counts": torch.zeros(classes, dtype=torch.int64)}
    return reference


REFERENCES: dict[str, Reference] = {
    "fedlora": _same_as_server,
    "fedavg": _same_as_server,
    "lg_fedavg": _same_as_server,
    "fml": _same_as_server,
    "fd": _class_table(lambda classes: classes, "logits"),
    "fedproto": _class_table(lambda classes: REPRESENTATION_DIM, "values"),
    "standalone": lambda state, config: {},
}


def upload_reference(config: ExperimentConfig, server_state: Payload) -> Payload | None:
    """The reference of this round's uploads, or None where only the algorithm can tell."""
    reference = REFERENCES.get(config.run.algorithm)
    return None if reference is None else reference(server_state, config)
