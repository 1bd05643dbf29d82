"""The model zoo as plain data (docs/architecture.md), no torch needed: the paper's CNN-1..CNN-5
(`ZOO`), small ResNets (`RESNETS`) and small ViTs (`VITS`), all on 3×32×32, and the named groups
a federation is chosen by (`GROUPS`).

Config validation reads it to check layer shapes before anything is built;
`workbench.core.models` builds the torch modules from the same tables, so the two cannot drift.
Every model ends the same way: a family-specific trunk, `fc2` (trunk width → 500, ReLU: the CNNs'
own second FC layer, the declared projection on the other families) and the 500→C `head`.
"""

from __future__ import annotations

from dataclasses import dataclass

REPRESENTATION_DIM = 500  # every model's features(x) is 500-d
IMAGE_SIZE = 32  # inputs are 3×32×32
KERNEL = 5


@dataclass(frozen=True)
class CNNSpec:
    """Channel and width choices of one zoo member (3→c1 conv, c1→c2 conv, fc1, fc2=500, head)."""

    conv1: int
    conv2: int
    fc1: int

    @property
    def flat_dim(self) -> int:
        """Width after conv2 + pool: valid 5×5 convs and 2×2 pools take 32 → 28 → 14 → 10 → 5."""
        side = ((IMAGE_SIZE - KERNEL + 1) // 2 - KERNEL + 1) // 2
        return self.conv2 * side * side


ZOO: dict[str, CNNSpec] = {
    "cnn1": CNNSpec(conv1=16, conv2=32, fc1=2000),
    "cnn2": CNNSpec(conv1=16, conv2=16, fc1=2000),
    "cnn3": CNNSpec(conv1=16, conv2=32, fc1=1000),
    "cnn4": CNNSpec(conv1=16, conv2=32, fc1=800),
    "cnn5": CNNSpec(conv1=16, conv2=32, fc1=500),
}


@dataclass(frozen=True)
class ResNetSpec:
    """A CIFAR-style ResNet of torchvision BasicBlocks: a 3×3 stem (3→width), three stages of
    `blocks` blocks at widths width, 2·width, 4·width (strides 1, 2, 2), global average pool."""

    width: int
    blocks: tuple[int, int, int]

    @property
    def trunk_dim(self) -> int:
        """Width of the pooled trunk output, which fc2 projects to the representation."""
        return 4 * self.width


@dataclass(frozen=True)
class ViTSpec:
    """A torchvision VisionTransformer with separate query/key/value Linear layers per block."""

    patch: int
    dim: int
    depth: int
    heads: int
    mlp: int

    @property
    def trunk_dim(self) -> int:
        """The class token's width, which fc2 projects to the representation."""
        return self.dim

    @property
    def tokens(self) -> int:
        """Patches plus the class token."""
        return (IMAGE_SIZE // self.patch) ** 2 + 1


RESNETS: dict[str, ResNetSpec] = {
    "resnet8_w8": ResNetSpec(width=8, blocks=(1, 1, 1)),
    "resnet8_w16": ResNetSpec(width=16, blocks=(1, 1, 1)),
    "resnet14_w16": ResNetSpec(width=16, blocks=(2, 2, 2)),
}
VITS: dict[str, ViTSpec] = {
    "vit48_l2_p4_h2": ViTSpec(patch=4, dim=48, depth=2, heads=2, mlp=96),
    "vit48_l2_p4_h4": ViTSpec(patch=4, dim=48, depth=2, heads=4, mlp=192),
    "vit48_l2_p8_h6": ViTSpec(patch=8, dim=48, depth=2, heads=6, mlp=96),
    "vit32_l1_p8_h2": ViTSpec(patch=8, dim=32, depth=1, heads=2, mlp=64),
    "vit64_l3_p4_h4": ViTSpec(patch=4, dim=64, depth=3, heads=4, mlp=128),
}
MODELS: dict[str, CNNSpec | ResNetSpec | ViTSpec] = {**ZOO, **RESNETS, **VITS}
FAMILIES = {**dict.fromkeys(ZOO, "cnn"), **dict.fromkeys(RESNETS, "resnet"), **dict.fromkeys(VITS, "vit")}
GROUPS: dict[str, tuple[str, ...]] = {
    "cnn": tuple(ZOO),  # the paper's five CNNs: today's default federation
    "resnet": tuple(RESNETS),
    "vit": ("vit48_l2_p4_h2", "vit48_l2_p4_h4", "vit48_l2_p8_h6"),  # one embedding width
    "mixed": ("cnn5", "resnet8_w16", "vit48_l2_p4_h4"),  # one of each family
}


def expand_models(names: tuple[str, ...]) -> tuple[str, ...]:
    """Group names replaced by their members, in order (`models=mixed` → its three models)."""
    return tuple(m for name in names for m in GROUPS.get(name, (name,)))


def linear_shapes(model: str, num_classes: int) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each Linear layer of a zoo model, by module name."""
    spec = MODELS[model]
    head = {"fc2": (spec.fc1 if isinstance(spec, CNNSpec) else spec.trunk_dim, REPRESENTATION_DIM)}
    head["head"] = (REPRESENTATION_DIM, num_classes)
    if isinstance(spec, CNNSpec):
        return {"fc1": (spec.flat_dim, spec.fc1), **head}
    if isinstance(spec, ResNetSpec):
        return head
    blocks = {}
    for i in range(spec.depth):
        block = f"vit.encoder.layers.encoder_layer_{i}"
        for p in ("query", "key", "value", "out_proj"):
            blocks[f"{block}.self_attention.{p}"] = (spec.dim, spec.dim)
        blocks[f"{block}.mlp.0"] = (spec.dim, spec.mlp)
        blocks[f"{block}.mlp.3"] = (spec.mlp, spec.dim)
    return {**blocks, **head}


def assign_models(zoo: tuple[str, ...], num_clients: int) -> list[str]:
    """Round-robin assignment: client k gets zoo[k % len(zoo)]."""
    return [zoo[k % len(zoo)] for k in range(num_clients)]
