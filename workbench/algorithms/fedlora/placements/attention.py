"""The `attention` placement: PEFT's LoRA on every ViT block's query and value projections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from workbench.algorithms.fedlora.placements.base import Shapes
from workbench.algorithms.fedlora.placements.lora import LoraPlacement
from workbench.core.lazy import lazy
from workbench.core.params import ConfigError
from workbench.core.zoo import MODELS, ViTSpec

if TYPE_CHECKING:
    from torch import nn

if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")

ATTENTION_PROJECTIONS = ("query", "value")  # PEFT's usual LoRA targets in attention


def attention_sites(model: str) -> tuple[str, ...]:
    """Module names of every block's query and value projections (empty off the ViTs)."""
    spec = MODELS[model]
    if not isinstance(spec, ViTSpec):
        return ()
    return tuple(
        f"vit.encoder.layers.encoder_layer_{i}.self_attention.{p}"
        for i in range(spec.depth)
        for p in ATTENTION_PROJECTIONS
    )


class Attention(LoraPlacement):
    """LoRA beside the query and value projections of every transformer block (PEFT's usual
    targets; ViTs only); A and B shared, so the clients' ViTs need one embedding width and one
    depth. Measured at the logits."""

    name = "attention"
    about = "LoRA on every ViT block's query and value projections; ViTs of one width and depth"

    def sites(self, model: str) -> tuple[str, ...]:
        return attention_sites(model)

    def layers(self, model: nn.Module) -> tuple[str, ...]:
        """Every transformer block's query and value Linear layers, by module name."""
        ends = tuple(f".self_attention.{p}" for p in ATTENTION_PROJECTIONS)
        linear = torch.nn.Linear
        return tuple(n for n, m in model.named_modules() if n.endswith(ends) and isinstance(m, linear))

    def check_shapes(self, shapes: Shapes) -> None:
        """One LoRA pair per block projection is shared: every client's model needs attention,
        the same number of blocks and one embedding width."""
        if len({tuple(s.items()) for s in shapes.values()}) > 1 or not any(shapes.values()):
            listed = ", ".join(f"{m}: {describe_attention(s)}" for m, s in shapes.items())
            raise ConfigError(
                f"parameter {self.subject} needs the same attention shapes on every "
                f"client's model ({listed}); choose ViTs of one width and depth (models=vit) or "
                f"another placement (head works on every family)"
            )
        super().check_shapes(shapes)


def describe_attention(sites: Mapping[str, tuple[int, int]]) -> str:
    """A model's attention sites in words: 'no attention' or 'B blocks of d→d query/value'."""
    if not sites:
        return "no attention layers"
    (d_in, d_out), blocks = next(iter(sites.values())), len(sites) // 2
    return f"{blocks} block{'s' * (blocks != 1)} of query/value {d_in}→{d_out}"
