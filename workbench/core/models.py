"""The heterogeneous model zoo CNN-1..CNN-5 (docs/architecture.md), built from `workbench.core.zoo`.

Every model exposes `features(x) -> (B, 500)` and `head(z) -> (B, C)`; forward is head∘features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.core.zoo import KERNEL, REPRESENTATION_DIM, ZOO, CNNSpec


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


def build_model(name: str, num_classes: int, seed: int) -> ZooCNN:
    """A freshly initialised zoo model; the seed fixes its weights without touching global RNG."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ZOO)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ZooCNN(ZOO[name], num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in model.parameters())
