"""Where FedLoRA's homogeneous adapter sits on a heterogeneous zoo model: one class per placement.

The paper's abstract does not say where the adapter sits, so each placement is a reconstruction
with LoRA semantics: a low-rank update (α/r)·B·A with B = 0 at the start (or, by default, a
small random B: `adapter_init`), so every client's combined model starts at or near its local
model. Only factors whose shape is the same on every client can be shared. PEFT's LoRA layers
carry `head` and `fc2` (`lora`) and `attention` (`attention`); a low-rank branch from the
input carries `parallel` and `parallel_logits` (`parallel`). Every family ends in fc2 (trunk width → 500) and
the 500→C head (`workbench.core.zoo`), so `head`, `fc2` and the parallel placements work across
CNNs, ResNets and ViTs alike.

A placement is one subclass of `base.Placement` with a `name`: it joins the registry
`PLACEMENTS` under that `adapter_placement` value, and owns its torch-free shapes, bytes and
checks, its build, its forward without and with the adapter, and its probe site. Adding a
placement is adding one class (in one of these modules, or in a module imported here);
`adapter_placement`'s choices and help follow the registry. Importing this package does not
import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.algorithms.fedlora.placements.base import PLACEMENTS, Placement
from workbench.algorithms.fedlora.placements.lora import Fc2, Head
from workbench.algorithms.fedlora.placements.parallel import Parallel, ParallelLogits
from workbench.core.params import ConfigError

# isort: split
# last: the registry keeps the order classes are declared in, adapter_placement's order
from workbench.algorithms.fedlora.placements.attention import Attention

if TYPE_CHECKING:
    from workbench.algorithms.fedlora.params import FedLoRAParams

__all__ = [
    "PLACEMENTS",
    "Attention",
    "Fc2",
    "Head",
    "Parallel",
    "ParallelLogits",
    "Placement",
    "placement_for",
    "placements_help",
]


def placement_for(params: FedLoRAParams) -> Placement:
    """The configured placement, bound to the run's FedLoRA parameters."""
    kind = PLACEMENTS.get(params.adapter_placement)
    if kind is None:
        raise ConfigError(
            f"parameter adapter_placement={params.adapter_placement!r} is not allowed; "
            f"choose from {list(PLACEMENTS)}"
        )
    return kind(params)


def placements_help() -> str:
    """adapter_placement's help: every registered placement in its own words."""
    listed = ", ".join(f"{name} ({kind.about})" for name, kind in PLACEMENTS.items())
    return f"where the homogeneous adapter sits: {listed}"
