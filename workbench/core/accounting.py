"""Cost accounting: training FLOPs counted by torch's FlopCounterMode, bytes of real payloads.

Conventions (docs/architecture.md, cost accounting):
- FLOPs: matmul and convolution work of forward + backward of each training step as it actually
  runs, 2 FLOPs per multiply-add (FlopCounterMode's convention). Frozen layers still cost their
  forward; a frozen weight costs no weight-gradient op. Scaled dot-product attention is counted
  with torch's own SDPA formulas (registered here for the CPU kernel, which FlopCounterMode
  leaves out), and normalisation (BatchNorm, LayerNorm) by the convention `NORM_FLOPS`: two
  multiply-adds per element forward (normalise, affine), twice that backward. Other elementwise
  ops (ReLU, GELU, pooling, loss, optimizer update) are not counted. Evaluation is not training
  and is not counted.
- Bytes: numel × element size of every tensor in a payload; uplink and downlink separately.
Beside the costs the ledger settles each client's training: rounds sampled, optimizer steps per
phase and the L2 norm of its latest update (`update_l2`). What a client's round produced reaches
the ledger as one `TrainingRecord` and its evaluation as one `EvaluationRecord`, whoever ran it
(the in-process loop or Flower).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from workbench.core.facts import Payload
from workbench.core.results import TIMING_COLUMNS, Evaluation, Row


def update_l2(upload: Payload, reference: Payload) -> float:
    """sqrt(Σ ‖upload − reference‖²) over the upload's floating tensors (a missing reference
    tensor counts as zero), in float64 so every process computes the same number."""
    total = 0.0
    for name, t in upload.items():
        if t.is_floating_point():
            delta = t.detach().double() - (reference[name].double() if name in reference else 0.0)
            total += float(torch.sum(delta * delta))
    return math.sqrt(total)


def payload_bytes(payload: Payload) -> int:
    """Bytes on the wire for a name → tensor payload: Σ numel × element size."""
    return sum(t.numel() * t.element_size() for t in payload.values())


NORM_FLOPS = {"forward": 4, "backward": 8}  # per element of the normalised input


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The CPU flash-attention kernel: QKᵀ and the weighted sum of V."""
    return flop_counter.sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Its backward: the four products torch counts for every SDPA backward."""
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _norm(x, *args, out_shape=None, **kwargs) -> int:
    return NORM_FLOPS["forward"] * math.prod(x)


def _norm_backward(grad_out, *args, out_shape=None, **kwargs) -> int:
    return NORM_FLOPS["backward"] * math.prod(grad_out)


aten = torch.ops.aten
EXTRA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
    aten.native_batch_norm: _norm,
    aten._native_batch_norm_legit: _norm,
    aten._native_batch_norm_legit_no_training: _norm,
    aten.native_batch_norm_backward: _norm_backward,
    aten.native_layer_norm: _norm,
    aten.native_layer_norm_backward: _norm_backward,
}


def flop_counter_mode() -> FlopCounterMode:
    """FlopCounterMode with attention on CPU and normalisation counted (`EXTRA_FLOPS`)."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS)


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
        with flop_counter_mode() as counter:
            result = run()
        self._per_step[key] = int(counter.get_total_flops())
        return result, self._per_step[key]

    def known(self) -> dict[Hashable, int]:
        """FLOPs per step of every key counted so far."""
        return dict(self._per_step)


@dataclass(frozen=True)
class TrainingRecord:
    """What one sampled client's round cost and did, as the server learns it: training FLOPs,
    bytes up and down, its last training loss, optimizer steps per phase and the norm of the
    update it sent (a client whose upload never arrived: only the bytes sent to it)."""

    flops: int = 0
    up: int = 0
    down: int = 0
    loss: float = math.nan
    steps: Mapping[str, int] = field(default_factory=dict)
    update_norm: float = math.nan


@dataclass(frozen=True)
class EvaluationRecord:
    """A client's evaluation as its row states it: who it is, what its deployed model scored
    (with the diagnostics measured in the same pass) and the sizes of its splits."""

    client: int
    model: str
    algorithm: str
    evaluation: Evaluation
    num_train: int
    num_test: int
    num_val: int = 0


@dataclass
class Ledger:
    """Costs per client accumulated since that client's last evaluated row."""

    flops: dict[int, int] = field(default_factory=dict)
    up: dict[int, int] = field(default_factory=dict)
    down: dict[int, int] = field(default_factory=dict)
    train_loss: dict[int, float] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)
    rounds: dict[int, int] = field(default_factory=dict)  # rounds the client was sampled in
    steps: dict[int, dict[str, int]] = field(default_factory=dict)  # optimizer steps by phase
    update_norm: dict[int, float] = field(default_factory=dict)  # of its latest upload
    # the simulated clock (workbench.loop.devices), kept only when `timed`: each client's busy
    # seconds and missed rounds since its last row, the run's clock, and the uploads that
    # missed a deadline and wait for the next round (client → (upload, weight))
    timed: bool = False
    seconds: dict[int, float] = field(default_factory=dict)
    missed: dict[int, int] = field(default_factory=dict)
    clock: float = 0.0
    late_uploads: dict[int, tuple[Any, float]] = field(default_factory=dict)

    def add(self, cid: int, training: TrainingRecord) -> None:
        """Record one client's costs, optimizer steps per phase and update norm for one round."""
        self.flops[cid] = self.flops.get(cid, 0) + training.flops
        self.up[cid] = self.up.get(cid, 0) + training.up
        self.down[cid] = self.down.get(cid, 0) + training.down
        self.train_loss[cid] = training.loss
        self.rounds[cid] = self.rounds.get(cid, 0) + 1
        mine = self.steps.setdefault(cid, {})
        for phase, count in training.steps.items():
            mine[phase] = mine.get(phase, 0) + int(count)
        self.update_norm[cid] = float(training.update_norm)

    def spend(self, cid: int, seconds: float) -> None:
        """Add a client's simulated seconds of one round."""
        self.seconds[cid] = self.seconds.get(cid, 0.0) + seconds

    def miss(self, cid: int) -> None:
        """Count one round a client dropped out of or answered too late in."""
        self.missed[cid] = self.missed.get(cid, 0) + 1

    def refuse(self, cid: int) -> None:
        """Count one refused upload of a client."""
        self.refused[cid] = self.refused.get(cid, 0) + 1

    def row(self, round_: int, record: EvaluationRecord) -> Row:
        """A client's table row: its evaluation (and the diagnostics measured with it) and its
        costs and training settled since its previous row."""
        cid, evaluation = record.client, record.evaluation
        took_part, train_loss, flops, up, down, refused = self.settle(cid)
        rounds, steps, update_norm = self.settle_training(cid)
        return Row(
            round=round_,
            client=cid,
            model=record.model,
            algorithm=record.algorithm,
            participated=took_part,
            accuracy=evaluation.accuracy,
            loss=evaluation.loss,
            train_loss=train_loss,
            train_flops=flops,
            bytes_up=up,
            bytes_down=down,
            num_train=record.num_train,
            num_test=record.num_test,
            refused=refused,
            local_rounds=rounds,
            local_steps=sum(steps.values()),
            update_norm=update_norm,
            val_accuracy=evaluation.val_accuracy,
            val_loss=evaluation.val_loss,
            num_val=record.num_val,
            phase_steps=steps,
            diagnostics=dict(evaluation.diagnostics or {}),
            timing=self.settle_timing(cid),
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

    def settle_timing(self, cid: int) -> dict[str, float]:
        """With the clock on: the client's simulated seconds and missed rounds since the last
        settlement and the clock now (then reset); else nothing."""
        if not self.timed:
            return {}
        values = (self.seconds.pop(cid, 0.0), self.clock, self.missed.pop(cid, 0))
        return dict(zip(TIMING_COLUMNS, values))

    def settle_training(self, cid: int) -> tuple[int, dict[str, int], float]:
        """(rounds sampled, optimizer steps by phase, latest update norm) since the last
        settlement; then reset."""
        return (
            self.rounds.pop(cid, 0),
            self.steps.pop(cid, {}),
            self.update_norm.pop(cid, math.nan),
        )
