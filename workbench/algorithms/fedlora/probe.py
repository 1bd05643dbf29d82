"""FedLoRA's diagnostics, measured on the evaluation pass it already makes (no extra pass).

- `adapter_contribution`: ‖out_with − out_without‖ ÷ ‖out_without‖ (Frobenius, over the client's
  whole test split) at the output the adapter adds to, the placement's site
  (`Placement.site_outputs`): the logits for `head` (LoRA beside the head), `parallel_logits`
  and `attention`, fc2's 500-d pre-activation for `fc2` (and `head` with the one target fc2),
  the 500-d representation for `parallel`; with several LoRA targets, the logits. 0 while B = 0.
- `adapter_weight_norm`: ‖scale·B·A‖ (Frobenius; root-sum-square over the adapter's sites) of
  the client's adapter, its kept factors included (`fc2`: the client's own A with the shared B).

The logits returned are the deployed model's own, computed by the same operations as its
forward, so evaluation results do not change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from workbench.algorithms.fedlora.adapters import adapter_sites
from workbench.algorithms.fedlora.advice import ADAPTER_CONTRIBUTION, ADAPTER_WEIGHT_NORM
from workbench.core.training import Probe

if TYPE_CHECKING:
    from workbench.algorithms.fedlora.placements import Placement


@torch.no_grad()
def effective_weight_norm(model: nn.Module) -> float:
    """‖scale·B·A‖ over the model's adapter sites, from r×r Gram matrices: ‖BA‖² = Σ (BᵀB) ⊙ (AAᵀ)."""
    total = 0.0
    for _, a, b, scale in adapter_sites(model).values():
        a64, b64 = a.double(), b.double()  # r, d_in and d_out, r
        total += scale**2 * float(torch.sum((b64.T @ b64) * (a64 @ a64.T)))  # r, r each
    return math.sqrt(max(total, 0.0))


class AdapterProbe(Probe):
    """The deployed model's logits; on the way, the adapter's share of the placement's output.
    `deployed` gives other logits than the model's own (`adapter_inference=private`: the private
    model alone, one more forward pass with the adapter switched off)."""

    def __init__(
        self, placement: Placement, model: nn.Module, deployed: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        super().__init__(model if deployed is None else deployed)
        self.model, self.deployed = model, deployed
        self.outputs = functools.partial(placement.site_outputs, model)  # logits, without, added
        self.without_sq, self.added_sq = 0.0, 0.0  # Σ over batches of squared Frobenius norms

    def __call__(self, x: Tensor) -> Tensor:
        logits, without, added = self.outputs(x)
        self.without_sq += float(torch.linalg.vector_norm(without)) ** 2
        self.added_sq += float(torch.linalg.vector_norm(added)) ** 2
        return logits if self.deployed is None else self.deployed(x)  # B, C

    def values(self) -> dict[str, float]:
        """Contribution (0 when the adapter adds nothing) and the effective weight's norm."""
        if self.added_sq == 0.0:
            contribution = 0.0
        else:
            contribution = (
                math.sqrt(self.added_sq) / math.sqrt(self.without_sq) if self.without_sq else math.inf
            )
        return {ADAPTER_CONTRIBUTION: contribution, ADAPTER_WEIGHT_NORM: effective_weight_norm(self.model)}
