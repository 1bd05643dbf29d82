"""Where FedLoRA's homogeneous adapter sits on a heterogeneous zoo model, as plain data (no torch).

The paper's abstract does not say where the adapter sits, so each placement is a reconstruction
with LoRA semantics: a low-rank update (α/r)·B·A with B = 0 at the start (or, by default, a
small random B: `adapter_init`), so every client's combined model starts at or near its local
model. Only factors whose shape is the same on every
client can be shared:

- `head`: LoRA beside the Linear layers in `lora_targets` (default the 500→C head); A and B are
  shared, so every target must have one shape on all clients.
- `fc2`: LoRA beside fc2 (fc1_k→500). Its output side B (500×r) is common to the zoo and is
  shared; A (r×fc1_k) differs by model and stays on the client, trained with the adapter.
- `parallel`: a low-rank adapter network from the input, x ↦ (α/r)·B·A·vec(x) with
  A (r×3·32·32) and B (500×r), added to the 500-d representation; both factors shared.
- `parallel_logits`: the same network with B (C×r), added to the logits; both factors shared.
- `attention`: LoRA beside the query and value projections of every transformer block (PEFT's
  usual targets; ViTs only); A and B shared, so the clients' ViTs need one embedding width and
  one depth.

Every family ends in fc2 (trunk width → 500) and the 500→C head (`workbench.core.zoo`), so
`head`, `fc2` and the parallel placements work across CNNs, ResNets and ViTs alike.

`adapter_factors` is the one definition of every placement's tensors and which are shared;
`workbench.algorithms.fedlora.adapters` builds them and tests check the two agree, byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping

from workbench.core.params import ConfigError
from workbench.core.zoo import IMAGE_SIZE, REPRESENTATION_DIM, attention_sites, linear_shapes

PLACEMENTS = ("head", "fc2", "parallel", "parallel_logits", "attention")
INPUT_DIM = 3 * IMAGE_SIZE * IMAGE_SIZE  # the parallel adapter reads the flattened image
BRANCH = "adapter"  # module name of the parallel adapter network
SHARED_FACTORS = {
    "head": ("lora_A", "lora_B"),
    "fc2": ("lora_B",),
    "parallel": ("lora_A", "lora_B"),
    "parallel_logits": ("lora_A", "lora_B"),
    "attention": ("lora_A", "lora_B"),
}
Shapes = Mapping[str, Mapping[str, tuple[int, int]]]  # model → site → (d_in, d_out)


def adapter_sites(placement: str, targets: tuple[str, ...], model: str = "cnn5") -> tuple[str, ...]:
    """Module names carrying the adapter's factors (`<site>.lora_A`, `<site>.lora_B`)."""
    if placement == "attention":
        return attention_sites(model)
    if placement == "head":
        return tuple(targets)
    if placement == "fc2":
        return ("fc2",)
    return (BRANCH,)


def site_shapes(
    placement: str, targets: tuple[str, ...], model: str, num_classes: int
) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of the low-rank update at each site of a zoo model."""
    if placement == "parallel":
        return {BRANCH: (INPUT_DIM, REPRESENTATION_DIM)}
    if placement == "parallel_logits":
        return {BRANCH: (INPUT_DIM, num_classes)}
    layers = linear_shapes(model, num_classes)
    return {site: layers[site] for site in adapter_sites(placement, targets, model)}


def adapter_factors(
    placement: str, model: str, num_classes: int, rank: int, targets: tuple[str, ...] = ("head",)
) -> dict[str, tuple[tuple[int, int], bool]]:
    """Every adapter tensor of a zoo model: name → (shape, shared?). A is r×d_in, B is d_out×r."""
    factors = {}
    for site, (d_in, d_out) in site_shapes(placement, targets, model, num_classes).items():
        shared = SHARED_FACTORS[placement]
        factors[f"{site}.lora_A"] = ((rank, d_in), "lora_A" in shared)
        factors[f"{site}.lora_B"] = ((d_out, rank), "lora_B" in shared)
    return factors


def shared_numel(
    placement: str, model: str, num_classes: int, rank: int, targets: tuple[str, ...] = ("head",)
) -> int:
    """Scalars a client uploads (and downloads) per round: the shared factors only."""
    return sum(
        rows * cols
        for (rows, cols), shared in adapter_factors(placement, model, num_classes, rank, targets).values()
        if shared
    )


def check_placement(
    placement: str, models: list[str], num_classes: int, rank: int, targets: tuple[str, ...]
) -> None:
    """Refuse a placement whose shared factors differ in shape across the clients' models."""
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"parameter adapter_placement={placement!r} is not allowed; choose from {list(PLACEMENTS)}"
        )
    if placement != "head" and tuple(targets) != ("head",):
        raise ConfigError(
            f"parameter lora_targets={','.join(targets)!r} applies only to "
            f"adapter_placement='head' (got {placement!r}); leave it at 'head'"
        )
    for m in models:
        sites = adapter_sites(placement, targets, m) if placement == "head" else ()
        lacking = [t for t in sites if t not in linear_shapes(m, num_classes)]
        if lacking:
            raise ConfigError(
                f"parameter lora_targets={','.join(targets)!r}: model {m} has no Linear layer "
                f"{', '.join(lacking)} (its layers at the end: fc2, head)"
            )
    shapes = {m: site_shapes(placement, targets, m, num_classes) for m in models}
    if placement == "attention":
        check_attention(shapes)
    check_shapes(placement, shapes, rank)


def describe_attention(sites: Mapping[str, tuple[int, int]]) -> str:
    """A model's attention sites in words: 'no attention' or 'B blocks of d→d query/value'."""
    if not sites:
        return "no attention layers"
    (d_in, d_out), blocks = next(iter(sites.values())), len(sites) // 2
    return f"{blocks} block{'s' * (blocks != 1)} of query/value {d_in}→{d_out}"


def check_attention(shapes: Shapes) -> None:
    """The attention placement shares one LoRA pair per block projection: every client's model
    needs attention, the same number of blocks and one embedding width."""
    if len({tuple(s.items()) for s in shapes.values()}) > 1 or not any(shapes.values()):
        listed = ", ".join(f"{m}: {describe_attention(s)}" for m, s in shapes.items())
        raise ConfigError(
            f"parameter adapter_placement='attention' needs the same attention shapes on every "
            f"client's model ({listed}); choose ViTs of one width and depth (models=vit) or "
            f"another placement (head works on every family)"
        )


def check_shapes(placement: str, shapes: Shapes, rank: int) -> None:
    """The homogeneity and rank rules on explicit per-model site shapes (d_in, d_out)."""
    what = "lora_targets" if placement == "head" else f"adapter_placement={placement!r}"
    shared = SHARED_FACTORS[placement]
    widths = site_widths(shapes)
    for site in widths:
        per_model = {m: s[site] for m, s in shapes.items()}
        sides = [("lora_A", 0, "input"), ("lora_B", 1, "output")]
        for factor, side, label in sides:
            if factor in shared and len({d[side] for d in per_model.values()}) > 1:
                listed = ", ".join(f"{m}: {i}→{o}" for m, (i, o) in per_model.items())
                raise ConfigError(
                    f"parameter {what}: layer {site!r} is not homogeneous across the clients' "
                    f"models ({listed}); its shared factor {site}.{factor} needs one {label} "
                    f"size, so the adapter cannot be shared"
                )
        low = widths[site]
        if rank > low:
            raise ConfigError(
                f"parameter rank={rank} is out of range: {_width_text(placement, site, low)}, "
                f"so rank must be <= {low}"
            )


def site_widths(shapes: Shapes) -> dict[str, int]:
    """Per adapter site, its narrowest side over the models (the largest rank it holds)."""
    sites = next(iter(shapes.values()))
    return {site: min(min(s[site]) for s in shapes.values()) for site in sites}


def _width_text(placement: str, site: str, width: int) -> str:
    return f"adapter site {site!r} ({placement}) is at most {width} wide"


def max_rank(
    placement: str, models: list[str], num_classes: int, targets: tuple[str, ...]
) -> tuple[int, str]:
    """The largest rank the placement holds on these models, and the site that bounds it."""
    widths = site_widths({m: site_shapes(placement, targets, m, num_classes) for m in models})
    site = min(widths, key=widths.get)
    return widths[site], f"{_width_text(placement, site, widths[site])} on {num_classes} classes"
