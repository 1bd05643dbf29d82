"""FedLoRA's adapter on a zoo model: PEFT's LoRA layers (injected, not subclassed) beside target
Linear layers, or a parallel low-rank branch (`workbench.algorithms.fedlora.branch`).

Selected by structure: the adapter is the A and B factors of every LoRA layer and branch, keyed
`<module>.lora_A` / `<module>.lora_B`; everything else in the model is private. A placement may
keep some factors on the client (`fc2` keeps A, whose input side differs by model): those are
trained with the adapter but never sent. `adapter_state` is the one definition of what is sent.
`workbench.algorithms.fedlora.placements` describes the same tensors without torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.algorithms.fedlora.branch import LowRankBranch, ParallelAdapted
from workbench.algorithms.fedlora.placements import INPUT_DIM, SHARED_FACTORS
from workbench.core.lazy import lazy
from workbench.core.zoo import ATTENTION_PROJECTIONS

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

peft_lora = lazy("peft.tuners.lora")  # PEFT (and transformers) load when an adapter is first used

ADAPTER = "default"  # PEFT's adapter name; the workbench uses one adapter per model
KEPT = "kept_adapter_factors"  # model attribute: adapter factors that never leave the client


@dataclass(frozen=True)
class Variant:
    """How the adapter is scaled and initialised (FedLoRA's use_rslora, adapter_init,
    adapter_b_std); the default is LoRA's: α/r, A Kaiming-uniform, B = 0."""

    rslora: bool = False
    init: str = "lora"
    b_std: float = 0.01


PEFT_INIT = {"lora": True, "gaussian": "gaussian", "small_b": True}  # init → init_lora_weights


def attach_adapter(
    model: nn.Module,
    placement: str,
    rank: int,
    alpha: float,
    seed: int,
    targets: tuple[str, ...] = ("head",),
    variant: Variant = Variant(),
) -> nn.Module:
    """The model with its placement's adapter (B = 0 unless `small_b`: outputs unchanged);
    factors a placement does not share are recorded on the model as kept."""
    if placement in ("parallel", "parallel_logits"):
        # into the representation the head reads, or into the logits it writes
        d_out = model.head.in_features if placement == "parallel" else model.head.out_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            branch = LowRankBranch(
                INPUT_DIM, d_out, rank, alpha, variant.rslora, variant.init == "gaussian"
            ).to(model.head.weight.device)
        if variant.init == "small_b":
            small_b([branch.lora_B.weight], variant.b_std, seed)
        adapted: nn.Module = ParallelAdapted(
            model, branch, "representation" if placement == "parallel" else "logits"
        )
    elif placement in ("head", "fc2", "attention"):
        sites = {"head": targets, "fc2": ("fc2",), "attention": attention_projections(model)}
        adapted = inject_lora(model, tuple(sites[placement]), rank, alpha, seed, variant)
    else:
        raise ValueError(f"unknown adapter placement {placement!r}")
    shared = SHARED_FACTORS[placement]
    setattr(
        adapted, KEPT, frozenset(k for k in adapter_parameters(adapted) if k.rsplit(".", 1)[1] not in shared)
    )
    return adapted


def attention_projections(model: nn.Module) -> tuple[str, ...]:
    """Every transformer block's query and value Linear layers, by module name."""
    ends = tuple(f".self_attention.{p}" for p in ATTENTION_PROJECTIONS)
    return tuple(n for n, m in model.named_modules() if n.endswith(ends) and isinstance(m, nn.Linear))


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
    variant: Variant = Variant(),
) -> nn.Module:
    """Wrap each target Linear with a LoRA branch (B = 0 unless `small_b`, so the model's
    output is unchanged); rsLoRA and the initialisation are PEFT's own options."""
    missing = [t for t in targets if not isinstance(dict(model.named_modules()).get(t), nn.Linear)]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not Linear layers of {type(model).__name__}")
    # imported here: PEFT imports transformers (seconds), so only runs that inject pay for it
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(targets),
        use_rslora=variant.rslora,
        init_lora_weights=PEFT_INIT[variant.init],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    if variant.init == "small_b":
        layers = lora_layers(model)
        small_b([layers[name].lora_B[ADAPTER].weight for name in sorted(layers)], variant.b_std, seed)
    wrapped = set(lora_layers(model))
    if wrapped != set(targets):
        raise ValueError(f"LoRA injection wrapped {sorted(wrapped)}, expected {sorted(targets)}")
    set_trainable(model, private=True, adapter=True)  # PEFT froze the base model; phases decide
    return model


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """The model's LoRA-wrapped layers by module name."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every adapter parameter, selected by structure (A and B of LoRA layers and branches),
    shared or kept."""
    params = {}
    for name, module in model.named_modules():
        if isinstance(module, peft_lora.LoraLayer):
            params[f"{name}.lora_A"] = module.lora_A[ADAPTER].weight  # r, d_in
            params[f"{name}.lora_B"] = module.lora_B[ADAPTER].weight  # d_out, r
        elif isinstance(module, LowRankBranch):
            params[f"{name}.lora_A"] = module.lora_A.weight  # r, d_in
            params[f"{name}.lora_B"] = module.lora_B.weight  # d_out, r
    return params


def shared_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters that are sent: all but the ones the placement keeps."""
    kept = getattr(model, KEPT, frozenset())
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
    """Turn every LoRA layer (PEFT's switch) and branch of the model on or off."""
    for module in model.modules():
        if isinstance(module, peft_lora.LoraLayer):
            module.enable_adapters(enabled)
        elif isinstance(module, LowRankBranch):
            module.enabled = enabled


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


def local_and_combined(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits without and with the adapter; what both share is computed once."""
    if isinstance(model, ParallelAdapted):
        return model.local_and_combined(x)
    layers = lora_layers(model)
    if set(layers) == {"head"}:
        z = model.features(x)  # B, 500
        return model.head.get_base_layer()(z), model.head(z)  # B, C each
    if set(layers) == {"fc2"}:
        h = model.trunk(x)  # B, fc1
        pre = model.fc2.get_base_layer()(h)  # B, 500
        combined = pre + lora_delta(model.fc2, h)
        return model.head(F.relu(pre)), model.head(F.relu(combined))
    with adapter_disabled(model):
        local = model(x)
    return local, model(x)


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
