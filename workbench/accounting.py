"""Cost accounting: training FLOPs counted by torch's FlopCounterMode, bytes of real payloads.

Conventions (DESIGN.md §5):
- FLOPs: matmul and convolution work of forward + backward of each training step as it actually
  runs, 2 FLOPs per multiply-add (FlopCounterMode's convention). Frozen layers still cost their
  forward; a frozen weight costs no weight-gradient op. Elementwise ops (ReLU, pooling, loss,
  optimizer update) are not counted. Evaluation is not training and is not counted.
- Bytes: numel × element size of every tensor in a payload; uplink and downlink separately.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

Payload = Mapping[str, Tensor]


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
