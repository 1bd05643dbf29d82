"""Local training: one phase = some epochs of SGD over the trainable parameters of a model."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from workbench.core.accounting import FlopMeter

Batches = Callable[[], Iterator[tuple[Tensor, Tensor]]]
LossFn = Callable[[Tensor, Tensor], Tensor]
LrOf = Callable[
    [nn.Parameter], float
]  # a parameter's own learning rate (e.g. a second rate for some of a phase's parameters)


@dataclass(frozen=True)
class SGDSpec:
    """SGD hyperparameters of one phase."""

    lr: float
    momentum: float
    weight_decay: float
    max_grad_norm: float = 0.0  # clip the gradients' global L2 norm to this before a step; 0: off


@dataclass(frozen=True)
class PhaseStats:
    """What one phase cost and how its loss went."""

    flops: int
    steps: int
    mean_loss: float
    phase_steps: Mapping[str, int] = field(default_factory=dict)  # optimizer steps by phase name

    def then(self, later: PhaseStats) -> PhaseStats:
        """This phase followed by a later one: costs and steps add up, the loss is the later phase's."""
        steps = dict(self.phase_steps)
        for name, count in later.phase_steps.items():
            steps[name] = steps.get(name, 0) + count
        return PhaseStats(
            flops=self.flops + later.flops,
            steps=self.steps + later.steps,
            mean_loss=later.mean_loss,
            phase_steps=steps,
        )

    def plus_flops(self, flops: int) -> PhaseStats:
        """The same phase with forward-only work (e.g. a statistics pass) added to its cost."""
        return PhaseStats(
            flops=self.flops + flops, steps=self.steps, mean_loss=self.mean_loss, phase_steps=self.phase_steps
        )


class Probe:
    """One evaluation pass of a client: logits per test batch, and what the pass measures
    besides accuracy (a method's diagnostics, read by `values` once the pass is over)."""

    def __init__(self, predict: Callable[[Tensor], Tensor]) -> None:
        self.predict = predict

    def __call__(self, x: Tensor) -> Tensor:
        return self.predict(x)  # B, C

    def values(self) -> dict[str, float]:
        """The diagnostics measured over the pass (none by default)."""
        return {}


def param_groups(params: list[nn.Parameter], lr_of: LrOf | None) -> list[Any]:
    """The optimizer's parameters: one group (the phase's lr), or one group per distinct rate
    that `lr_of` gives, in first-seen order."""
    if lr_of is None:
        return params
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(float(lr_of(p)), []).append(p)
    return [{"params": ps, "lr": lr} for lr, ps in groups.items()]


def run_phase(
    modules: list[nn.Module],
    loss_fn: LossFn,
    batches: Batches,
    epochs: int,
    sgd: SGDSpec,
    meter: FlopMeter,
    key: Hashable,
    lr_of: LrOf | None = None,
) -> PhaseStats:
    """Train the parameters that are trainable now with a fresh SGD optimizer (no shared
    momentum); `lr_of` gives chosen parameters a learning rate of their own."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"phase {key!r} has no trainable parameters")
    optimizer = torch.optim.SGD(
        param_groups(params, lr_of), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay
    )
    for m in modules:
        m.train()

    def step(x: Tensor, y: Tensor) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        if sgd.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, sgd.max_grad_norm)
        optimizer.step()
        return loss.detach()

    flops, steps, losses = 0, 0, []
    for _ in range(epochs):
        for x, y in batches():
            loss, step_flops = meter.step((key, tuple(x.shape)), lambda: step(x, y))  # noqa: B023 (called at once)
            flops += step_flops
            steps += 1
            losses.append(loss)
    optimizer.zero_grad(set_to_none=True)  # an idle client should not hold a model-sized .grad
    mean_loss = torch.stack(losses).mean().item() if losses else float("nan")
    return PhaseStats(flops=flops, steps=steps, mean_loss=mean_loss)


@torch.no_grad()
def evaluate(
    predict: Callable[[Tensor], Tensor], batches: Iterator[tuple[Tensor, Tensor]], modules: list[nn.Module]
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of `predict` (logits) over the batches."""
    for m in modules:
        m.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in batches:
        logits = predict(x)  # B, C
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum().item())
        total += y.numel()
    if total == 0:
        raise ValueError("evaluation on an empty test split")
    return correct / total, loss_sum / total
