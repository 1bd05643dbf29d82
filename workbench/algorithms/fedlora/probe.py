"""FedLoRA's diagnostics, measured on the evaluation pass it already makes (no extra pass).

- `adapter_contribution`: ‖out_with − out_without‖ ÷ ‖out_without‖ (Frobenius, over the client's
  whole test split) at the output the adapter adds to: the logits for `head` (LoRA beside the
  head) and `parallel_logits`, fc2's 500-d pre-activation for `fc2`, the 500-d representation
  for `parallel`; with several LoRA targets, the logits. 0 while B = 0.
- `adapter_weight_norm`: ‖scale·B·A‖ (Frobenius; root-sum-square over the adapter's sites) of
  the client's adapter, its kept factors included (`fc2`: the client's own A with the shared B).

The logits returned are the deployed model's own, computed by the same operations as its
forward, so evaluation results do not change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from workbench.algorithms.fedlora.adapters import ADAPTER, adapter_disabled, lora_delta, lora_layers
from workbench.algorithms.fedlora.branch import LowRankBranch, ParallelAdapted
from workbench.core.diagnostics import ADAPTER_CONTRIBUTION, ADAPTER_WEIGHT_NORM
from workbench.core.lazy import lazy
from workbench.core.training import Probe

peft_lora = lazy("peft.tuners.lora")


Outputs = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


def site_function(model: nn.Module) -> Outputs:
    """x ↦ (logits, output without the adapter, what the adapter adds) at the placement's output,
    chosen once per model (the evaluation pass calls it per batch)."""
    if isinstance(model, ParallelAdapted):
        return functools.partial(_branch, model)
    layers = set(lora_layers(model))
    if layers == {"head"}:
        return functools.partial(_head, model)
    if layers == {"fc2"}:
        return functools.partial(_fc2, model)
    return functools.partial(_logits, model)


def site_outputs(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, output without the adapter, what the adapter adds) of one batch."""
    return site_function(model)(x)


def _branch(model: ParallelAdapted, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The parallel branch: measured where it adds, the representation or the logits."""
    z = model.base.features(x)  # B, 500
    delta = model.adapter(x)  # B, 500 or B, C
    if model.output == "representation":
        return model.base.head(z + delta), z, delta
    local = model.base.head(z)  # B, C
    return local + delta, local, delta


def _head(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LoRA beside the head: measured at the logits."""
    z = model.features(x)  # B, 500
    local, logits = model.head.get_base_layer()(z), model.head(z)  # B, C each
    return logits, local, logits - local


def _fc2(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LoRA beside fc2: measured at fc2's pre-activation."""
    h = model.trunk(x)  # B, fc1
    pre = model.fc2.get_base_layer()(h)  # B, 500
    delta = lora_delta(model.fc2, h)  # B, 500
    return model.head(torch.relu(pre + delta)), pre, delta


def _logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Several LoRA targets: measured at the logits, with the adapter switched off and on."""
    with adapter_disabled(model):
        local = model(x)  # B, C
    logits = model(x)  # B, C
    return logits, local, logits - local


def factor_pairs(model: nn.Module) -> list[tuple[Tensor, Tensor, float]]:
    """(A, B, scale) of every adapter site of the model."""
    pairs = []
    for module in model.modules():
        if isinstance(module, peft_lora.LoraLayer):
            pairs.append(
                (module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight, module.scaling[ADAPTER])
            )
        elif isinstance(module, LowRankBranch):
            pairs.append((module.lora_A.weight, module.lora_B.weight, module.scaling))
    return pairs


@torch.no_grad()
def effective_weight_norm(model: nn.Module) -> float:
    """‖scale·B·A‖ over the model's adapter sites, from r×r Gram matrices: ‖BA‖² = Σ (BᵀB) ⊙ (AAᵀ)."""
    total = 0.0
    for a, b, scale in factor_pairs(model):
        a64, b64 = a.double(), b.double()  # r, d_in and d_out, r
        total += scale**2 * float(torch.sum((b64.T @ b64) * (a64 @ a64.T)))  # r, r each
    return math.sqrt(max(total, 0.0))


class AdapterProbe(Probe):
    """The deployed model's logits; on the way, the adapter's share of the placement's output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.model, self.outputs = model, site_function(model)
        self.without_sq, self.added_sq = 0.0, 0.0  # Σ over batches of squared Frobenius norms

    def __call__(self, x: Tensor) -> Tensor:
        logits, without, added = self.outputs(x)
        self.without_sq += float(torch.linalg.vector_norm(without)) ** 2
        self.added_sq += float(torch.linalg.vector_norm(added)) ** 2
        return logits

    def values(self) -> dict[str, float]:
        """Contribution (0 when the adapter adds nothing) and the effective weight's norm."""
        if self.added_sq == 0.0:
            contribution = 0.0
        else:
            contribution = (
                math.sqrt(self.added_sq) / math.sqrt(self.without_sq) if self.without_sq else math.inf
            )
        return {ADAPTER_CONTRIBUTION: contribution, ADAPTER_WEIGHT_NORM: effective_weight_norm(self.model)}
