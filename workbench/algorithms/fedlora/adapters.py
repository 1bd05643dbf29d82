"""FedLoRA's adapter on a zoo model: PEFT's LoRA layers (injected, not subclassed) beside target
Linear layers, or a parallel low-rank branch (`workbench.algorithms.fedlora.branch`).

Selected by structure: the adapter is the A and B factors of every LoRA layer and branch, keyed
`<module>.lora_A` / `<module>.lora_B` and found by one walk over the model (`adapter_sites`);
everything else in the model is private. A placement may keep some factors on the client (`fc2`
keeps A, whose input side differs by model): those are trained with the adapter but never sent.
`adapter_state` is the one definition of what is sent. Which layers carry the adapter, and how
it is drawn, is the placement's (`workbench.algorithms.fedlora.placements`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
from torch import Tensor, nn

from workbench.algorithms.fedlora.branch import LowRankBranch
from workbench.core.lazy import lazy

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

if TYPE_CHECKING:
    import peft.tuners.lora as peft_lora
else:
    peft_lora = lazy("peft.tuners.lora")  # PEFT (and transformers) load when an adapter is first used

ADAPTER = "default"  # PEFT's adapter name; the workbench uses one adapter per model
KEPT = "kept_adapter_factors"  # model attribute: adapter factors that never leave the client


class Site(NamedTuple):
    """One adapter site of a built model: a LoRA layer or a branch, its factors and its scale."""

    module: LoraLayer | LowRankBranch
    a: nn.Parameter  # r, d_in
    b: nn.Parameter  # d_out, r
    scale: float


def parameter(weight: Tensor | nn.Module) -> nn.Parameter:
    """A layer's weight as what it is, a Parameter (torch types module attributes loosely)."""
    return cast(nn.Parameter, weight)


def adapter_sites(model: nn.Module) -> dict[str, Site]:
    """The one walk over a model's modules: every LoRA layer and low-rank branch, by module name."""
    sites: dict[str, Site] = {}
    for name, module in model.named_modules():
        if isinstance(module, peft_lora.LoraLayer):
            a, b = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
            sites[name] = Site(module, parameter(a), parameter(b), module.scaling[ADAPTER])
        elif isinstance(module, LowRankBranch):
            sites[name] = Site(
                module, parameter(module.lora_A.weight), parameter(module.lora_B.weight), module.scaling
            )
    return sites


def small_b(weights: list[nn.Parameter], std: float, seed: int) -> None:
    """Draw B's entries from N(0, std²): the update stays (α/r)·B·A, but A receives a gradient
    from the first step. B's own generator, so B is the same on every model even where A's
    shape (and so what A's draws consume) differs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in weights:
            weight.copy_(torch.randn(weight.shape, generator=generator) * std)


def inject_lora(
    model: nn.Module,
    targets: tuple[str, ...],
    rank: int,
    alpha: float,
    seed: int,
    *,
    rslora: bool = False,
    init: bool | str = True,
) -> nn.Module:
    """Wrap each target Linear with PEFT's LoRA (B = 0, so the model's output is unchanged),
    A drawn under `seed`; `rslora` and `init` are PEFT's use_rslora and init_lora_weights
    (the defaults: PEFT's own LoRA)."""
    missing = [t for t in targets if not isinstance(dict(model.named_modules()).get(t), nn.Linear)]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not Linear layers of {type(model).__name__}")
    # imported here: PEFT imports transformers (seconds), so only runs that inject pay for it
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT declares int; it scales by any float
        lora_dropout=0.0,
        bias="none",
        target_modules=list(targets),
        use_rslora=rslora,
        init_lora_weights=init,  # type: ignore[arg-type]  # True or "gaussian", both PEFT's values
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    wrapped = set(adapter_sites(model))
    if wrapped != set(targets):
        raise ValueError(f"LoRA injection wrapped {sorted(wrapped)}, expected {sorted(targets)}")
    set_trainable(model, private=True, adapter=True)  # PEFT froze the base model; phases decide
    return model


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every adapter parameter, selected by structure (A and B of LoRA layers and branches),
    shared or kept."""
    params = {}
    for name, site in adapter_sites(model).items():
        params[f"{name}.lora_A"], params[f"{name}.lora_B"] = site.a, site.b  # r×d_in, d_out×r
    return params


def shared_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters that are sent: all but the ones the placement keeps."""
    kept: frozenset[str] = getattr(model, KEPT, frozenset())
    return {k: p for k, p in adapter_parameters(model).items() if k not in kept}


def private_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that is not part of the shared adapter."""
    shared = {id(p) for p in adapter_parameters(model).values()}
    return [p for p in model.parameters() if id(p) not in shared]


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the shared adapter: what a client uploads."""
    return {name: p.detach().clone() for name, p in shared_parameters(model).items()}


def load_adapter_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy a shared adapter state into the model exactly; keys and shapes must match."""
    params = shared_parameters(model)
    if set(state) != set(params):
        raise KeyError(f"adapter keys {sorted(state)} do not match the model's {sorted(params)}")
    with torch.no_grad():
        for name, p in params.items():
            if state[name].shape != p.shape:
                raise ValueError(
                    f"adapter tensor {name}: shape {tuple(state[name].shape)} != model's {tuple(p.shape)}"
                )
            p.copy_(state[name])


def set_trainable(model: nn.Module, *, private: bool, adapter: bool) -> None:
    """Freeze or unfreeze the private model and the adapter independently."""
    for p in private_parameters(model):
        p.requires_grad_(private)
    for p in adapter_parameters(model).values():
        p.requires_grad_(adapter)


def _switch(model: nn.Module, enabled: bool) -> None:
    """Turn every LoRA layer and branch of the model on or off (PEFT's switch; branches mirror it)."""
    for site in adapter_sites(model).values():
        site.module.enable_adapters(enabled)


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """Run the model as if it had no adapter, restoring grad flags afterwards."""
    flags = {id(p): p.requires_grad for p in adapter_parameters(model).values()}
    _switch(model, False)
    try:
        yield
    finally:
        _switch(model, True)
        for p in adapter_parameters(model).values():
            p.requires_grad_(flags[id(p)])


def lora_delta(layer: LoraLayer, x: Tensor) -> Tensor:
    """A LoRA layer's branch alone: (α/r)·B·A·x (dropout is off in the workbench)."""
    return layer.lora_B[ADAPTER](layer.lora_A[ADAPTER](x)) * layer.scaling[ADAPTER]
