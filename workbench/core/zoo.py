"""The model zoo as plain data: layer sizes of CNN-1..CNN-5 (docs/architecture.md), no torch needed.

Config validation reads it to check adapter targets and ranks before anything is built;
`workbench.core.models` builds the torch modules from the same table, so the two cannot drift.
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


def linear_shapes(model: str, num_classes: int) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each Linear layer of a zoo model, by module name."""
    spec = ZOO[model]
    return {
        "fc1": (spec.flat_dim, spec.fc1),
        "fc2": (spec.fc1, REPRESENTATION_DIM),
        "head": (REPRESENTATION_DIM, num_classes),
    }


def assign_models(zoo: tuple[str, ...], num_clients: int) -> list[str]:
    """Round-robin assignment: client k gets zoo[k % len(zoo)]."""
    return [zoo[k % len(zoo)] for k in range(num_clients)]
