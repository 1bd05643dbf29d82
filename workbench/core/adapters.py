"""LoRA adapters beside target Linear layers, using PEFT's LoRA layers (injected, not subclassed).

`adapter_state` is the one definition of what is shared: the A and B factors of every LoRA layer,
keyed `<layer>.lora_A` / `<layer>.lora_B`. Everything else in the model is private.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

ADAPTER = "default"  # PEFT's adapter name; the workbench uses one adapter per model


def inject_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float,
                seed: int) -> nn.Module:
    """Wrap each target Linear with a LoRA branch (B = 0, so the model's output is unchanged)."""
    missing = [t for t in targets if not isinstance(dict(model.named_modules()).get(t), nn.Linear)]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not Linear layers of {type(model).__name__}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=list(targets))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    wrapped = set(lora_layers(model))
    if wrapped != set(targets):
        raise ValueError(f"LoRA injection wrapped {sorted(wrapped)}, expected {sorted(targets)}")
    set_trainable(model, private=True, adapter=True)  # PEFT froze the base model; phases decide
    return model


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """The model's LoRA-wrapped layers by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The shared adapter's parameters, selected by structure (LoRA layers' A and B)."""
    params = {}
    for name, layer in lora_layers(model).items():
        params[f"{name}.lora_A"] = layer.lora_A[ADAPTER].weight  # r, d_in
        params[f"{name}.lora_B"] = layer.lora_B[ADAPTER].weight  # d_out, r
    return params


def private_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that is not part of the shared adapter."""
    shared = {id(p) for p in adapter_parameters(model).values()}
    return [p for p in model.parameters() if id(p) not in shared]


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the shared adapter: what a client uploads."""
    return {name: p.detach().clone() for name, p in adapter_parameters(model).items()}


def load_adapter_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy an adapter state into the model exactly; keys and shapes must match."""
    params = adapter_parameters(model)
    if set(state) != set(params):
        raise KeyError(f"adapter keys {sorted(state)} do not match the model's {sorted(params)}")
    with torch.no_grad():
        for name, p in params.items():
            if state[name].shape != p.shape:
                raise ValueError(f"adapter tensor {name}: shape {tuple(state[name].shape)} "
                                 f"!= model's {tuple(p.shape)}")
            p.copy_(state[name])


def set_trainable(model: nn.Module, *, private: bool, adapter: bool) -> None:
    """Freeze or unfreeze the private model and the adapter independently."""
    for p in private_parameters(model):
        p.requires_grad_(private)
    for p in adapter_parameters(model).values():
        p.requires_grad_(adapter)


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """Run the model as if it had no adapter (PEFT's switch), restoring grad flags afterwards."""
    layers = lora_layers(model).values()
    flags = {id(p): p.requires_grad for p in adapter_parameters(model).values()}
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p in adapter_parameters(model).values():
            p.requires_grad_(flags[id(p)])


def check_homogeneous(models: Mapping[str, nn.Module], targets: tuple[str, ...]) -> None:
    """Refuse an adapter target whose Linear shape differs between models, naming the shapes."""
    for target in targets:
        shapes = {}
        for key, model in models.items():
            layer = dict(model.named_modules()).get(target)
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"adapter target {target!r} is not a Linear layer of {key}")
            shapes[key] = (layer.in_features, layer.out_features)
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{k}: {i}→{o}" for k, (i, o) in shapes.items())
            raise ValueError(f"adapter target {target!r} is not homogeneous: {listed}")
