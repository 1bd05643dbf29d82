"""Cost accounting: training FLOPs counted by torch's FlopCounterMode, bytes of real payloads.

Conventions (docs/architecture.md, cost accounting):
- FLOPs: matmul and convolution work of forward + backward of each training step as it actually
  runs, 2 FLOPs per multiply-add (FlopCounterMode's convention). Frozen layers still cost their
  forward; a frozen weight costs no weight-gradient op. Elementwise ops (ReLU, pooling, loss,
  optimizer update) are not counted. Evaluation is not training and is not counted.
- Bytes: numel × element size of every tensor in a payload; uplink and downlink separately.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from workbench.core.facts import Payload
from workbench.core.results import NO_VALIDATION, Row


def payload_bytes(payload: Payload) -> int:
    """Bytes on the wire for a name → tensor payload: Σ numel × element size."""
    return sum(t.numel() * t.element_size() for t in payload.values())


class FlopMeter:
    """Counts a step's FLOPs once per distinct key (model, phase, batch shape) and reuses it.

    A step's FLOPs depend only on which ops run on which shapes, never on values, so
    instrumenting the first step of each kind is exact and keeps the hot loop uninstrumented.
    """

    def __init__(self) -> None:
        self._per_step: dict[Hashable, int] = {}

    def step(self, key: Hashable, run: Callable[[], Tensor]) -> tuple[Tensor, int]:
        """Run one training step; return its result and its FLOPs."""
        if key in self._per_step:
            return run(), self._per_step[key]
        with FlopCounterMode(display=False) as counter:
            result = run()
        self._per_step[key] = int(counter.get_total_flops())
        return result, self._per_step[key]

    def known(self) -> dict[Hashable, int]:
        """FLOPs per step of every key counted so far."""
        return dict(self._per_step)


@dataclass
class Ledger:
    """Costs per client accumulated since that client's last evaluated row."""

    flops: dict[int, int] = field(default_factory=dict)
    up: dict[int, int] = field(default_factory=dict)
    down: dict[int, int] = field(default_factory=dict)
    train_loss: dict[int, float] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)

    def add(self, cid: int, flops: int, up: int, down: int, loss: float) -> None:
        """Record one client's costs for one round."""
        self.flops[cid] = self.flops.get(cid, 0) + flops
        self.up[cid] = self.up.get(cid, 0) + up
        self.down[cid] = self.down.get(cid, 0) + down
        self.train_loss[cid] = loss

    def refuse(self, cid: int) -> None:
        """Count one refused upload of a client."""
        self.refused[cid] = self.refused.get(cid, 0) + 1

    def row(
        self,
        round_: int,
        cid: int,
        model: str,
        algorithm: str,
        accuracy: float,
        loss: float,
        num_train: int,
        num_test: int,
        *,
        val_accuracy: float = NO_VALIDATION,
        val_loss: float = NO_VALIDATION,
        num_val: int = 0,
    ) -> Row:
        """A client's table row: its evaluation and its costs settled since its previous row."""
        took_part, train_loss, flops, up, down, refused = self.settle(cid)
        return Row(
            round=round_,
            client=cid,
            model=model,
            algorithm=algorithm,
            participated=took_part,
            accuracy=accuracy,
            loss=loss,
            train_loss=train_loss,
            train_flops=flops,
            bytes_up=up,
            bytes_down=down,
            num_train=num_train,
            num_test=num_test,
            refused=refused,
            val_accuracy=val_accuracy,
            val_loss=val_loss,
            num_val=num_val,
        )

    def settle(self, cid: int) -> tuple[bool, float, int, int, int, int]:
        """(participated, last train loss, flops, up, down, refused) since the last settlement;
        then reset."""
        took_part = cid in self.flops
        return (
            took_part,
            self.train_loss.pop(cid, float("nan")),
            self.flops.pop(cid, 0),
            self.up.pop(cid, 0),
            self.down.pop(cid, 0),
            self.refused.pop(cid, 0),
        )
