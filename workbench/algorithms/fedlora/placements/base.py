"""What a placement is: `Placement`, the registry it joins, and the rules every placement shares.

A placement is bound to a run's `FedLoRAParams` (`placement_for`). Without torch it answers
where its sites are on a zoo model and their shapes (`site_shapes`), hence its tensors and
which are shared (`factors`, the one definition; `shared_numel`, its bytes), its config checks
(`check`) and the largest rank it holds (`max_rank`). With torch, imported only when called, it
builds its adapter on a private model (`attach` → `build`), gives the logits without and with it
(`local_and_combined`, for the μ-mixed loss) and the outputs the probe measures (`site_outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from workbench.core.params import ConfigError
from workbench.core.zoo import linear_shapes

if TYPE_CHECKING:
    from torch import Tensor, nn

    from workbench.algorithms.fedlora.params import FedLoRAParams

FACTORS = ("lora_A", "lora_B")
Shapes = Mapping[str, Mapping[str, tuple[int, int]]]  # model → site → (d_in, d_out)
Outputs = tuple["Tensor", "Tensor", "Tensor"]  # logits, the site's output without, what the adapter adds
PLACEMENTS: dict[str, type[Placement]] = {}  # adapter_placement → its class, in declaration order


class Placement:
    """One placement bound to a run's FedLoRA parameters; a subclass with a `name` registers."""

    name: ClassVar[str]
    about: ClassVar[str]  # its words in adapter_placement's help
    shared: ClassVar[tuple[str, ...]] = FACTORS  # the factors sent; the others stay on the client
    reads_targets: ClassVar[bool] = False  # whether lora_targets says where it sits

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PLACEMENTS[cls.name] = cls

    def __init__(self, params: FedLoRAParams) -> None:
        self.params = params

    # ---- without torch: sites, shapes, bytes, checks --------------------------------------
    def sites(self, model: str) -> tuple[str, ...]:
        """Module names carrying the adapter's factors (`<site>.lora_A`, `<site>.lora_B`)."""
        raise NotImplementedError

    def site_shapes(self, model: str, num_classes: int) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of the low-rank update at each site of a zoo model."""
        layers = linear_shapes(model, num_classes)
        return {site: layers[site] for site in self.sites(model)}

    def factors(self, model: str, num_classes: int) -> dict[str, tuple[tuple[int, int], bool]]:
        """Every adapter tensor of a zoo model: name → (shape, shared?). A is r×d_in, B is d_out×r."""
        rank, factors = self.params.rank, {}
        for site, (d_in, d_out) in self.site_shapes(model, num_classes).items():
            factors[f"{site}.lora_A"] = ((rank, d_in), "lora_A" in self.shared)
            factors[f"{site}.lora_B"] = ((d_out, rank), "lora_B" in self.shared)
        return factors

    def shared_numel(self, model: str, num_classes: int) -> int:
        """Scalars a client uploads (and downloads) per round: the shared factors only."""
        return sum(r * c for (r, c), shared in self.factors(model, num_classes).values() if shared)

    @property
    def subject(self) -> str:
        """The parameter a refusal names."""
        return "lora_targets" if self.reads_targets else f"adapter_placement={self.name!r}"

    def check(self, models: list[str], num_classes: int) -> None:
        """Refuse a placement whose shared factors differ in shape across the clients' models."""
        self.check_targets(models, num_classes)
        self.check_shapes({m: self.site_shapes(m, num_classes) for m in models})

    def check_targets(self, models: list[str], num_classes: int) -> None:
        """A placement that does not read lora_targets leaves it at its default."""
        targets, default = self.params.lora_targets, declared_default(self.params, "lora_targets")
        assert isinstance(default, tuple)  # a tuple of layer names, as FedLoRAParams declares
        if tuple(targets) != default:
            raise ConfigError(
                f"parameter lora_targets={','.join(targets)!r} applies only to "
                f"adapter_placement={targets_placement()!r} (got {self.name!r}); leave it at "
                f"{','.join(default)!r}"
            )

    def check_shapes(self, shapes: Shapes) -> None:
        """The homogeneity and rank rules on explicit per-model site shapes (d_in, d_out)."""
        widths = site_widths(shapes)
        for site in widths:
            per_model = {m: s[site] for m, s in shapes.items()}
            for factor, side, label in (("lora_A", 0, "input"), ("lora_B", 1, "output")):
                if factor in self.shared and len({d[side] for d in per_model.values()}) > 1:
                    listed = ", ".join(f"{m}: {i}→{o}" for m, (i, o) in per_model.items())
                    raise ConfigError(
                        f"parameter {self.subject}: layer {site!r} is not homogeneous across the "
                        f"clients' models ({listed}); its shared factor {site}.{factor} needs one "
                        f"{label} size, so the adapter cannot be shared"
                    )
            if self.params.rank > widths[site]:
                raise ConfigError(
                    f"parameter rank={self.params.rank} is out of range: "
                    f"{self._width_text(site, widths[site])}, so rank must be <= {widths[site]}"
                )

    def max_rank(self, models: list[str], num_classes: int) -> tuple[int, str]:
        """The largest rank the placement holds on these models, and the site that bounds it."""
        widths = site_widths({m: self.site_shapes(m, num_classes) for m in models})
        site = min(widths, key=widths.__getitem__)
        return widths[site], f"{self._width_text(site, widths[site])} on {num_classes} classes"

    def _width_text(self, site: str, width: int) -> str:
        return f"adapter site {site!r} ({self.name}) is at most {width} wide"

    # ---- with torch: build, forward, probe site --------------------------------------------
    def attach(self, model: nn.Module, seed: int) -> nn.Module:
        """The model with this placement's adapter (B = 0 unless `small_b`: outputs unchanged);
        factors the placement does not share are recorded on the model as kept."""
        from workbench.algorithms.fedlora import adapters

        adapted = self.build(model, seed)
        sites = adapters.adapter_sites(adapted)
        if self.params.adapter_init == "small_b":
            adapters.small_b([sites[name].b for name in sorted(sites)], self.params.adapter_b_std, seed)
        names = adapters.adapter_parameters(adapted)
        setattr(adapted, adapters.KEPT, frozenset(k for k in names if k.rsplit(".", 1)[1] not in self.shared))
        return adapted

    def build(self, model: nn.Module, seed: int) -> nn.Module:
        """The model with the adapter's modules, A drawn under `seed` as `adapter_init` says."""
        raise NotImplementedError

    def local_and_combined(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits without and with the adapter (here: the model run with it off, then on)."""
        return switched(model, x)

    def site_outputs(self, model: nn.Module, x: Tensor) -> Outputs:
        """(logits, output without the adapter, what the adapter adds) where the probe measures
        (here: at the logits, the model run with the adapter off, then on)."""
        local, logits = switched(model, x)  # B, C each
        return logits, local, logits - local


def declared_default(params: FedLoRAParams, name: str) -> object:
    """A parameter's default as its section declares it."""
    return next(f.default for f in dataclasses.fields(params) if f.name == name)


def targets_placement() -> str:
    """The placement that reads lora_targets."""
    return next(name for name, kind in PLACEMENTS.items() if kind.reads_targets)


def site_widths(shapes: Shapes) -> dict[str, int]:
    """Per adapter site, its narrowest side over the models (the largest rank it holds)."""
    sites = next(iter(shapes.values()))
    return {site: min(min(s[site]) for s in shapes.values()) for site in sites}


def switched(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The model's logits with its adapter switched off, then on."""
    from workbench.algorithms.fedlora.adapters import adapter_disabled

    with adapter_disabled(model):
        local = model(x)  # B, C
    return local, model(x)
