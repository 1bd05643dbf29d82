"""Placements that put PEFT's LoRA layers beside Linear layers of the private model: `head`
(the layers in `lora_targets`) and `fc2`; `LoraPlacement` is their common build."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from workbench.algorithms.fedlora.placements.base import Outputs, Placement
from workbench.core.lazy import lazy
from workbench.core.params import ConfigError
from workbench.core.zoo import linear_shapes

if TYPE_CHECKING:
    from peft.tuners.lora import Linear as LoraLinear
    from torch import Tensor, nn

if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")

# adapter_init → PEFT's init_lora_weights
PEFT_INIT: dict[str, bool | str] = {"lora": True, "gaussian": "gaussian", "small_b": True}


class Injected(Protocol):
    """A zoo model with PEFT's LoRA beside its head or fc2 (`LoraPlacement.build`)."""

    head: LoraLinear
    fc2: LoraLinear

    def trunk(self, x: Tensor) -> Tensor: ...

    def features(self, x: Tensor) -> Tensor: ...


def injected(model: nn.Module) -> Injected:
    """A model this placement built, as its type."""
    return cast("Injected", model)


class LoraPlacement(Placement):
    """PEFT's LoRA layers beside the built model's Linear layers named by `layers`."""

    def layers(self, model: nn.Module) -> tuple[str, ...]:
        """Module names of the built model's Linear layers that carry LoRA."""
        raise NotImplementedError

    def build(self, model: nn.Module, seed: int) -> nn.Module:
        from workbench.algorithms.fedlora.adapters import inject_lora

        p = self.params
        init = PEFT_INIT[p.adapter_init]
        return inject_lora(
            model, self.layers(model), p.rank, p.lora_alpha, seed, rslora=p.use_rslora, init=init
        )


class Head(LoraPlacement):
    """LoRA beside the Linear layers in `lora_targets` (default the 500→C head); A and B are
    shared, so every target must have one shape on all clients."""

    name = "head"
    about = "LoRA beside lora_targets"
    reads_targets = True

    def sites(self, model: str) -> tuple[str, ...]:
        return tuple(self.params.lora_targets)

    def layers(self, model: nn.Module) -> tuple[str, ...]:
        return tuple(self.params.lora_targets)

    def check_targets(self, models: list[str], num_classes: int) -> None:
        """Every target is a Linear layer of every client's model."""
        targets = self.params.lora_targets
        for m in models:
            lacking = [t for t in targets if t not in linear_shapes(m, num_classes)]
            if lacking:
                raise ConfigError(
                    f"parameter lora_targets={','.join(targets)!r}: model {m} has no Linear layer "
                    f"{', '.join(lacking)} (its layers at the end: fc2, head)"
                )

    def local_and_combined(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """The head alone: its input computed once; fc2 alone: as the fc2 placement."""
        if tuple(self.params.lora_targets) == ("head",):
            return beside_head(model, x)
        if tuple(self.params.lora_targets) == ("fc2",):
            return Fc2(self.params).local_and_combined(model, x)
        return super().local_and_combined(model, x)

    def site_outputs(self, model: nn.Module, x: Tensor) -> Outputs:
        """The head alone: at the logits; fc2 alone: as the fc2 placement; several: the logits."""
        if tuple(self.params.lora_targets) == ("head",):
            local, logits = beside_head(model, x)  # B, C each
            return logits, local, logits - local
        if tuple(self.params.lora_targets) == ("fc2",):
            return Fc2(self.params).site_outputs(model, x)
        return super().site_outputs(model, x)


def beside_head(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The head's output without and with its LoRA, on features computed once."""
    built = injected(model)
    z = built.features(x)  # B, 500
    return built.head.get_base_layer()(z), built.head(z)  # B, C each


class Fc2(LoraPlacement):
    """LoRA beside fc2 (fc1_k→500). Its output side B (500×r) is common to the zoo and is
    shared; A (r×fc1_k) differs by model and stays on the client, trained with the adapter."""

    name = "fc2"
    about = "LoRA on fc2 sharing B 500×r, A kept"
    shared = ("lora_B",)

    def sites(self, model: str) -> tuple[str, ...]:
        return ("fc2",)

    def layers(self, model: nn.Module) -> tuple[str, ...]:
        return ("fc2",)

    def _pre(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """fc2's pre-activation without its LoRA, and what its LoRA adds."""
        from workbench.algorithms.fedlora.adapters import lora_delta

        built = injected(model)
        h = built.trunk(x)  # B, fc1
        return built.fc2.get_base_layer()(h), lora_delta(built.fc2, h)  # B, 500 each

    def local_and_combined(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        pre, delta, head = *self._pre(model, x), injected(model).head
        return head(torch.relu(pre)), head(torch.relu(pre + delta))  # B, C each

    def site_outputs(self, model: nn.Module, x: Tensor) -> Outputs:
        """Measured at fc2's pre-activation."""
        pre, delta = self._pre(model, x)
        return injected(model).head(torch.relu(pre + delta)), pre, delta
