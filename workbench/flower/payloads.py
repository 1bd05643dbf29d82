"""Which algorithms run on Flower, and what an honest upload of each looks like.

`aggregation.validate_update` needs a reference payload. In the in-process loop every client is
trusted and some algorithms validate against the first upload; across a network the first
upload may be the bad one, so the server validates each upload against a reference of its own
before aggregating (the algorithm's own `aggregate` checks again, e.g. FD's class counts).

An algorithm runs on Flower only when every hook a client runs depends on nothing but the
client's own state and the message: each ClientApp call builds a fresh algorithm instance, so
server-side attributes never reach it. Each listed one is checked to reproduce the in-process
table exactly (tests/test_flower.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from workbench.algorithms.base import Payload
from workbench.core.config import ExperimentConfig
from workbench.core.zoo import REPRESENTATION_DIM

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


UNSUPPORTED: dict[str, str] = {
    "fedkd": "its clients compress uploads at the SVD energy of FedKD.round, a counter only the "
             "server's aggregate advances, so a Flower client (a fresh instance per call) would "
             "always use round 1's energy",
}


def check_supported(algorithm: str) -> None:
    """Refuse an algorithm that cannot run on Flower, saying why and what can."""
    if algorithm in REFERENCES:
        return
    why = UNSUPPORTED.get(algorithm, "it has not been checked against the in-process loop")
    raise ValueError(f"algorithm={algorithm!r} cannot run on Flower: {why}; "
                     f"Flower runs {sorted(REFERENCES)}")


def upload_reference(config: ExperimentConfig, server_state: Payload) -> Payload:
    """The reference this round's uploads must match."""
    check_supported(config.run.algorithm)
    return REFERENCES[config.run.algorithm](server_state, config)
