"""Placements that add a low-rank network from the input beside the private model
(`workbench.algorithms.fedlora.branch`): `parallel` into the representation, `parallel_logits`
into the logits. Its shape depends only on the input and its output width, so both factors are
the same on every client, whatever the client's architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from workbench.algorithms.fedlora.placements.base import Outputs, Placement
from workbench.core.lazy import lazy
from workbench.core.zoo import IMAGE_SIZE, REPRESENTATION_DIM

if TYPE_CHECKING:
    from torch import Tensor, nn

    from workbench.algorithms.fedlora.branch import ParallelAdapted
    from workbench.core.models import ZooCNN

if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")

INPUT_DIM = 3 * IMAGE_SIZE * IMAGE_SIZE  # the branch reads the flattened image
BRANCH = "adapter"  # module name of the branch


def adapted(model: nn.Module) -> ParallelAdapted:
    """A model this placement built (`Branch.build`), as its type."""
    return cast("ParallelAdapted", model)


class Branch(Placement):
    """x ↦ (α/r)·B·A·vec(x) with A (r×3·32·32) and B (width×r), added where `output` says."""

    output: ClassVar[str]  # where ParallelAdapted adds the branch: representation or logits

    def width(self, num_classes: int) -> int:
        """The branch's output width."""
        raise NotImplementedError

    def sites(self, model: str) -> tuple[str, ...]:
        return (BRANCH,)

    def site_shapes(self, model: str, num_classes: int) -> dict[str, tuple[int, int]]:
        return {BRANCH: (INPUT_DIM, self.width(num_classes))}

    def build(self, model: nn.Module, seed: int) -> nn.Module:
        from workbench.algorithms.fedlora.branch import LowRankBranch, ParallelAdapted

        p, gaussian, base = self.params, self.params.adapter_init == "gaussian", cast("ZooCNN", model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            width = self.width(base.head.out_features)
            branch = LowRankBranch(INPUT_DIM, width, p.rank, p.lora_alpha, p.use_rslora, gaussian)
        return ParallelAdapted(base, branch.to(base.head.weight.device), self.output)


class Parallel(Branch):
    """The branch added to the 500-d representation (B 500×r); measured there."""

    name = "parallel"
    about = "low-rank x→500 branch added to the representation"
    output = "representation"

    def width(self, num_classes: int) -> int:
        return REPRESENTATION_DIM

    def local_and_combined(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        built = adapted(model)
        z = built.base.features(x)  # B, 500
        return built.base.head(z), built.base.head(z + built.adapter(x))  # B, C each

    def site_outputs(self, model: nn.Module, x: Tensor) -> Outputs:
        built = adapted(model)
        z, delta = built.base.features(x), built.adapter(x)  # B, 500 each
        return built.base.head(z + delta), z, delta


class ParallelLogits(Branch):
    """The branch added to the logits (B C×r); measured there."""

    name = "parallel_logits"
    about = "x→C branch added to the logits"
    output = "logits"

    def width(self, num_classes: int) -> int:
        return num_classes

    def local_and_combined(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        built = adapted(model)
        local = built.base.head(built.base.features(x))  # B, C
        return local, local + built.adapter(x)

    def site_outputs(self, model: nn.Module, x: Tensor) -> Outputs:
        built = adapted(model)
        z = built.base.features(x)  # B, 500
        delta = built.adapter(x)  # B, C
        local = built.base.head(z)  # B, C
        return local + delta, local, delta
