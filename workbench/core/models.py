"""The heterogeneous model zoo (docs/architecture.md), built from `workbench.core.zoo`: the CNNs,
ResNets of torchvision's BasicBlock and torchvision's VisionTransformer (no pretrained weights).

Every model exposes `trunk(x)` (its own width), `features(x) = relu(fc2(trunk(x))) -> (B, 500)`
and `head(z) -> (B, C)`; forward is head∘features.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.core.zoo import KERNEL, MODELS, REPRESENTATION_DIM, CNNSpec, ResNetSpec, ViTSpec


class ZooCNN(nn.Module):
    """Two valid 5×5 convs with ReLU and 2×2 max-pool, two FC layers to 500-d, a linear head."""

    def __init__(self, spec: CNNSpec, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, spec.conv1, KERNEL)
        self.conv2 = nn.Conv2d(spec.conv1, spec.conv2, KERNEL)
        self.fc1 = nn.Linear(spec.flat_dim, spec.fc1)
        self.fc2 = nn.Linear(spec.fc1, REPRESENTATION_DIM)
        self.head = nn.Linear(REPRESENTATION_DIM, num_classes)

    def trunk(self, x: Tensor) -> Tensor:
        """Everything before fc2: the model-specific fc1-wide hidden layer."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # B, c1, 14, 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # B, c2, 5, 5
        return F.relu(self.fc1(x.flatten(1)))  # B, fc1

    def features(self, x: Tensor) -> Tensor:
        """The 500-d representation of a batch of 3×32×32 images."""
        return F.relu(self.fc2(self.trunk(x)))  # B, 500

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # B, C


class ZooModel(Protocol):
    """What every zoo model offers the methods: the 500-d representation, the projection fc2
    into it, the private head reading it, and the logits."""

    fc2: nn.Linear
    head: nn.Linear

    def trunk(self, x: Tensor) -> Tensor: ...

    def features(self, x: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor) -> Tensor: ...


class Projected(nn.Module):
    """A trunk of another family, the declared projection fc2 (trunk width → 500) and the head."""

    def __init__(self, trunk_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc2 = nn.Linear(trunk_dim, REPRESENTATION_DIM)
        self.head = nn.Linear(REPRESENTATION_DIM, num_classes)

    def trunk(self, x: Tensor) -> Tensor:
        """The family's own layers before fc2 (each subclass defines them)."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """The 500-d representation of a batch of 3×32×32 images."""
        return F.relu(self.fc2(self.trunk(x)))  # B, 500

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # B, C


class ZooResNet(Projected):
    """A CIFAR-style ResNet of torchvision's BasicBlock (BatchNorm after every conv)."""

    def __init__(self, spec: ResNetSpec, num_classes: int) -> None:
        from torchvision.models.resnet import BasicBlock, conv1x1  # torchvision loads with the model

        w = spec.width
        stem = [nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        layers: list[nn.Module] = []
        inplanes = w
        for stage, (blocks, stride) in enumerate(zip(spec.blocks, (1, 2, 2))):
            planes = w * 2**stage
            for b in range(blocks):
                down = None
                if b == 0 and (stride != 1 or inplanes != planes):
                    down = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
                layers.append(BasicBlock(inplanes, planes, stride if b == 0 else 1, down))
                inplanes = planes
        super().__init__(spec.trunk_dim, num_classes)
        self.body = nn.Sequential(*stem, *layers)
        for m in self.body.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def trunk(self, x: Tensor) -> Tensor:
        """Stem, the three stages, global average pooling."""
        return self.body(x).mean(dim=(2, 3))  # B, 4·width


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value Linear layers (so LoRA can sit on
    query and value, PEFT's usual targets) through scaled_dot_product_attention; called as
    torchvision's encoder block calls nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False):
        b, n, d = query.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # B, h, n, d/h

        out = F.scaled_dot_product_attention(
            split(self.query(query)), split(self.key(key)), split(self.value(value))
        )  # B, h, n, d/h
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), None  # B, n, d


class ZooViT(Projected):
    """torchvision's VisionTransformer (its classifier removed) on 3×32×32, each block's
    attention replaced by `SelfAttention`; the class token is the trunk's output."""

    def __init__(self, spec: ViTSpec, num_classes: int) -> None:
        from torchvision.models.vision_transformer import VisionTransformer

        super().__init__(spec.trunk_dim, num_classes)
        self.vit = VisionTransformer(
            image_size=32,
            patch_size=spec.patch,
            num_layers=spec.depth,
            num_heads=spec.heads,
            hidden_dim=spec.dim,
            mlp_dim=spec.mlp,
            num_classes=num_classes,
        )
        self.vit.heads = nn.Identity()  # the class token goes to fc2 and the zoo's head
        for block in self.vit.encoder.layers:
            block.self_attention = SelfAttention(spec.dim, spec.heads)

    def trunk(self, x: Tensor) -> Tensor:
        """The class token after the encoder's final LayerNorm."""
        return self.vit(x)  # B, dim


def build_model(name: str, num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised zoo model; the seed fixes its weights without touching global RNG."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    spec = MODELS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(spec, CNNSpec):
            return ZooCNN(spec, num_classes)
        if isinstance(spec, ResNetSpec):
            return ZooResNet(spec, num_classes)
        return ZooViT(spec, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in model.parameters())
