"""In-memory uint8 image datasets with on-the-fly batched normalisation and augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.core.errors import UserError
from workbench.core.facts import DATASET_CLASSES

NUM_CLASSES = DATASET_CLASSES  # classes per dataset (defined once in facts)

# Per-channel pixel statistics of the official CIFAR training sets on the [0, 1] scale.
_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CROP_PAD = 4
_SIDE = 32

RGB = tuple[float, float, float]  # per-channel statistics of a dataset's pixels


class DataUnavailableError(UserError, RuntimeError):
    """Raised when a dataset cannot be found, verified or downloaded."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset held in memory as uint8 N×3×32×32 images and int64 labels."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool


def _no_images() -> Tensor:
    """An empty image batch: a client without validation samples."""
    return torch.zeros(0, 3, _SIDE, _SIDE, dtype=torch.uint8)  # (0, 3, 32, 32)


def _no_labels() -> Tensor:
    """An empty label vector."""
    return torch.zeros(0, dtype=torch.int64)  # (0,)


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's train, test and validation tensors (uint8 images, int64 labels); the
    validation samples are held out of its training data (none when val_fraction is 0)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor = field(default_factory=_no_images)
    val_y: Tensor = field(default_factory=_no_labels)

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.train_y.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.test_y.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation samples (0: no validation split)."""
        return int(self.val_y.shape[0])


def load_dataset(name: str, data_dir: str | Path, download: bool, test_fraction: float, seed: int) -> Dataset:
    """Load a dataset by name; test_fraction and seed only matter for digits (no test set)."""
    if name == "digits":
        return _load_digits(test_fraction, seed)
    if name in _CIFAR_FOLDERS:
        return _load_cifar(name, Path(data_dir).expanduser().resolve(), download)
    raise ValueError(f"dataset {name!r} is unknown; allowed: {', '.join(NUM_CLASSES)}")


def _load_digits(test_fraction: float, seed: int) -> Dataset:
    """Load sklearn's bundled 8×8 digits, upscaled to 3×32×32 uint8 with a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} is invalid; it must be in (0, 1)")
    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32) * (255.0 / 16.0)  # (N, 8, 8)
    big = F.interpolate(
        small[:, None], size=(_SIDE, _SIDE), mode="bilinear", align_corners=False
    )  # (N, 1, 32, 32)
    grey = big.round().clamp(0, 255).to(torch.uint8)  # (N, 1, 32, 32)
    x = grey.expand(-1, 3, -1, -1).contiguous()  # (N, 3, 32, 32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)  # (N,)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=bunch.target, random_state=seed
    )
    train_idx, test_idx = torch.as_tensor(np.sort(train_idx)), torch.as_tensor(np.sort(test_idx))
    train_x = x[train_idx]  # (N_train, 3, 32, 32)
    pixels = train_x.float().div(255.0)  # (N_train, 3, 32, 32)
    mean = cast(RGB, tuple(float(v) for v in pixels.mean(dim=(0, 2, 3))))
    std = cast(RGB, tuple(float(v) for v in pixels.std(dim=(0, 2, 3))))
    return Dataset(
        name="digits",
        train_x=train_x,
        train_y=y[train_idx],
        test_x=x[test_idx],
        test_y=y[test_idx],
        num_classes=NUM_CLASSES["digits"],
        mean=mean,
        std=std,
        flip=False,
    )


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    """Load CIFAR-10/100 through torchvision, turning its failures into DataUnavailableError."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except Exception as err:  # not found, corrupted, or no network: all mean the same to the user
        raise DataUnavailableError(
            f"dataset {name!r} is unavailable in data_dir {root} ({type(err).__name__}: {err}). "
            f"Place the python-version archive extracted there "
            f"(e.g. {root / _CIFAR_FOLDERS[name]}), "
            f"or pass --data_dir pointing at an existing copy, or --download true when the network "
            f"allows."
        ) from err
    mean, std = _CIFAR_STATS[name]
    return Dataset(
        name=name,
        train_x=_hwc_to_chw(train.data),
        train_y=_targets(train.targets),
        test_x=_hwc_to_chw(test.data),
        test_y=_targets(test.targets),
        num_classes=NUM_CLASSES[name],
        mean=mean,
        std=std,
        flip=True,
    )


def _hwc_to_chw(data: np.ndarray) -> Tensor:
    """Convert torchvision's N×H×W×C uint8 array to a contiguous N×C×H×W tensor."""
    hwc = torch.from_numpy(np.ascontiguousarray(data))  # (N, 32, 32, 3)
    return hwc.permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)


def _targets(targets: list[int]) -> Tensor:
    """Convert a label list to an int64 tensor."""
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)  # (N,)


@dataclass(frozen=True, eq=False)
class SharedClientData:
    """One client's train, test and validation splits as indices into arrays every client
    shares (no per-client copies): the same interface as ClientData, each split gathered when
    it is read (a batch generator reads it once per epoch)."""

    images: Tensor  # the dataset's training images, shared: (N_train, 3, 32, 32) uint8
    labels: Tensor  # (N_train,) int64
    test_images: Tensor  # (N_test, 3, 32, 32) uint8
    test_labels: Tensor  # (N_test,) int64
    train_idx: Tensor  # (n_train,) int64 into images
    test_idx: Tensor  # (n_test,) int64 into test_images
    val_idx: Tensor = field(default_factory=_no_labels)  # (n_val,) into images, not in train_idx

    @property
    def train_x(self) -> Tensor:
        return self.images[self.train_idx]  # (n_train, 3, 32, 32)

    @property
    def train_y(self) -> Tensor:
        return self.labels[self.train_idx]

    @property
    def test_x(self) -> Tensor:
        return self.test_images[self.test_idx]  # (n_test, 3, 32, 32)

    @property
    def test_y(self) -> Tensor:
        return self.test_labels[self.test_idx]

    @property
    def val_x(self) -> Tensor:
        return self.images[self.val_idx]  # (n_val, 3, 32, 32)

    @property
    def val_y(self) -> Tensor:
        return self.labels[self.val_idx]

    @property
    def num_train(self) -> int:
        return int(self.train_idx.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_idx.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_idx.shape[0])


def client_datasets(
    ds: Dataset,
    splits: list[tuple[np.ndarray, np.ndarray]],
    validation: list[np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> list[SharedClientData]:
    """Each client's (train_indices, test_indices), and its validation indices (into the
    training set, disjoint from its train indices) when given, as indices into the dataset's
    arrays, moved to the device once for all clients."""
    images, labels, test_images, test_labels = (
        t.to(device) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    )

    def indices(values: np.ndarray | list) -> Tensor:
        return torch.as_tensor(np.asarray(values), dtype=torch.int64).to(device)

    return [
        SharedClientData(
            images,
            labels,
            test_images,
            test_labels,
            indices(tr),
            indices(te),
            indices(validation[k] if validation else []),
        )
        for k, (tr, te) in enumerate(splits)
    ]


class Normalizer:
    """Move uint8 images to a device and normalise them with per-channel mean/std."""

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device | str = "cpu",
    ) -> None:
        """Store the statistics as broadcastable tensors on the device."""
        if any(s <= 0 for s in std):
            raise ValueError(f"std={std} is invalid; every channel's std must be > 0")
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def for_dataset(cls, ds: Dataset, device: torch.device | str = "cpu") -> Normalizer:
        """Build a normalizer from a dataset's statistics."""
        return cls(ds.mean, ds.std, device)

    def __call__(self, x: Tensor) -> Tensor:
        """Return float32 (x / 255 - mean) / std on the device."""
        x = x.to(self.device, non_blocking=True).to(torch.float32)  # (B, 3, H, W)
        return (x / 255.0 - self.mean) / self.std  # (B, 3, H, W)


def augment_batch(x: Tensor, generator: torch.Generator, flip: bool) -> Tensor:
    """Randomly crop from a 4-pixel zero-padded batch and optionally flip it, vectorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (_CROP_PAD,) * 4)  # (B, C, H+8, W+8)
    # Offsets are drawn on the CPU generator so results do not depend on the device.
    dy = torch.randint(0, 2 * _CROP_PAD + 1, (b,), generator=generator).to(x.device)  # (B,)
    dx = torch.randint(0, 2 * _CROP_PAD + 1, (b,), generator=generator).to(x.device)  # (B,)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # (B,)
        # Reversing the column grid flips the crop without a second gather.
        cols = torch.where(mask[:, None], cols.flip(1), cols)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]  # (B, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def train_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
    normalize: Normalizer,
    augment: bool,
    flip: bool,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield one shuffled epoch of normalised, optionally augmented batches, last one partial."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; it must be >= 1")
    order = torch.randperm(len(y), generator=generator).to(x.device)  # (N,)
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]  # (B,)
        # Augment on uint8 after the move so padding is true black and the copy is small.
        xb = x[idx].to(normalize.device, non_blocking=True)  # (B, 3, 32, 32) uint8
        if augment:
            xb = augment_batch(xb, generator, flip)  # (B, 3, 32, 32)
        yield normalize(xb), y[idx.to(y.device)].to(normalize.device)


def eval_batches(
    x: Tensor, y: Tensor, batch_size: int, normalize: Normalizer
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield normalised batches in order, without augmentation."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; it must be >= 1")
    for start in range(0, len(y), batch_size):
        stop = start + batch_size
        yield normalize(x[start:stop]), y[start:stop].to(normalize.device)
