"""A low-rank adapter network beside a zoo model, reading the input (FedLoRA's `parallel` placements).

The branch is LoRA's update of a virtual zero weight from the flattened image to the
representation (or the logits): Δ(x) = (α/r)·B·A·vec(x) (α/√r under rsLoRA), A (r×3072)
initialised like PEFT's (Kaiming-uniform, or N(0, 1/r²) for `gaussian`), B = 0 (FedLoRA's
`small_b` then draws B: `adapters.small_b`). Its shape depends only on the input and the target
width, so it is the same on every client whatever the client's architecture. The placements
that use it, and their forwards, are `workbench.algorithms.fedlora.placements.parallel`.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from workbench.algorithms.fedlora.params import scaling
from workbench.core.models import ZooCNN

OUTPUTS = ("representation", "logits")


class LowRankBranch(nn.Module):
    """x ↦ (α/r)·B·A·vec(x); `enabled` False makes the adapted model its local model."""

    def __init__(
        self, d_in: int, d_out: int, rank: int, alpha: float, rslora: bool = False, gaussian: bool = False
    ) -> None:
        super().__init__()
        self.lora_A = nn.Linear(d_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, d_out, bias=False)
        if gaussian:  # PEFT's init_lora_weights="gaussian"
            nn.init.normal_(self.lora_A.weight, std=1 / rank)
        else:  # PEFT's LoRA init
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = scaling(alpha, rank, rslora)
        self.enabled = True

    def forward(self, x: Tensor) -> Tensor:
        return self.lora_B(self.lora_A(x.flatten(1))) * self.scaling  # B, d_out

    def enable_adapters(self, enabled: bool) -> None:
        """Switch the branch on or off (the name of PEFT's own switch on its LoRA layers)."""
        self.enabled = enabled


class ParallelAdapted(nn.Module):
    """A private zoo model with a homogeneous branch added to its representation or logits."""

    def __init__(self, base: ZooCNN, adapter: LowRankBranch, output: str) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"branch output {output!r} is not one of {OUTPUTS}")
        self.base, self.adapter, self.output = base, adapter, output

    @property
    def head(self) -> nn.Module:
        """The private classifier (500→C)."""
        return self.base.head

    def features(self, x: Tensor) -> Tensor:
        """The representation the head reads (with the branch where it adds there)."""
        z = self.base.features(x)  # B, 500
        if self.output == "representation" and self.adapter.enabled:
            return z + self.adapter(x)
        return z

    def forward(self, x: Tensor) -> Tensor:
        logits = self.base.head(self.features(x))  # B, C
        if self.output == "logits" and self.adapter.enabled:
            return logits + self.adapter(x)
        return logits
