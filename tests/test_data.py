"""Tests for workbench.core.data."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from workbench.config import build_config
from workbench.core.data import (
    NUM_CLASSES,
    DataUnavailableError,
    Normalizer,
    client_datasets,
    eval_batches,
    load_dataset,
    train_batches,
)
from workbench.core.partition import partition
from workbench.core.zoo import expand_models
from workbench.loop.runner import run_experiment


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "unused", download=False, test_fraction=0.25, seed=0)


def test_digits_shapes_split_and_stratification(digits) -> None:
    assert digits.train_x.dtype == torch.uint8 and digits.train_x.shape[1:] == (3, 32, 32)
    assert digits.train_y.dtype == torch.int64
    assert digits.num_classes == NUM_CLASSES["digits"] == 10 and not digits.flip
    n_train, n_test = len(digits.train_y), len(digits.test_y)
    assert n_train + n_test == 1797 and abs(n_test - 0.25 * 1797) <= 1
    assert torch.equal(digits.train_x[:, 0], digits.train_x[:, 2])  # grey replicated
    assert digits.train_x.max() > 200  # scaled to 0..255, not 0..16
    train_share = torch.bincount(digits.train_y) / n_train
    test_share = torch.bincount(digits.test_y) / n_test
    assert (train_share - test_share).abs().max() < 0.01


def test_digits_deterministic_in_seed(digits) -> None:
    again = load_dataset("digits", "unused", download=False, test_fraction=0.25, seed=0)
    other = load_dataset("digits", "unused", download=False, test_fraction=0.25, seed=1)
    assert torch.equal(digits.test_x, again.test_x) and torch.equal(digits.test_y, again.test_y)
    assert not torch.equal(digits.test_x, other.test_x)
    assert digits.mean == again.mean and len(digits.mean) == 3


def test_unknown_dataset_and_bad_fraction() -> None:
    with pytest.raises(ValueError, match="'mnist'.*digits, cifar10, cifar100"):
        load_dataset("mnist", "x", download=False, test_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        load_dataset("digits", "x", download=False, test_fraction=1.5, seed=0)


def _write_pickle(path: Path, obj: dict) -> str:
    """Pickle obj the way CIFAR's python archive does and return the file's md5."""
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_cifar(
    root: Path, cls, label_key: str, names_key: str, num_classes: int, monkeypatch, rows: int = 3
):
    """Write a tiny CIFAR archive for cls (rows, rows + 1, ... samples per file), patch its md5s,
    return {file: (data, labels)}."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    contents, lists = {}, {}
    for which, entries in (("train_list", cls.train_list), ("test_list", cls.test_list)):
        patched = []
        for i, (filename, _) in enumerate(entries):
            data = rng.integers(0, 256, size=(rows + i, 3072), dtype=np.uint8)  # (n, 3*32*32)
            labels = rng.integers(0, num_classes, size=rows + i).tolist()
            # torchvision unpickles with encoding="latin1": keys must be str, as in the original.
            md5 = _write_pickle(folder / filename, {"data": data, label_key: labels})
            patched.append([filename, md5])
            contents[filename] = (data, labels)
        lists[which] = patched
    names = {names_key: [f"c{i}" for i in range(num_classes)]}
    meta_md5 = _write_pickle(folder / cls.meta["filename"], names)
    monkeypatch.setattr(cls, "train_list", lists["train_list"])
    monkeypatch.setattr(cls, "test_list", lists["test_list"])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return contents


@pytest.mark.parametrize(
    ("name", "cls", "label_key", "names_key"),
    [
        ("cifar10", torchvision.datasets.CIFAR10, "labels", "label_names"),
        ("cifar100", torchvision.datasets.CIFAR100, "fine_labels", "fine_label_names"),
    ],
)
def test_cifar_round_trip(tmp_path, monkeypatch, name, cls, label_key, names_key) -> None:
    contents = _fake_cifar(tmp_path, cls, label_key, names_key, NUM_CLASSES[name], monkeypatch)
    ds = load_dataset(name, tmp_path, download=False, test_fraction=0.9, seed=0)
    splits = ((ds.train_x, ds.train_y, cls.train_list), (ds.test_x, ds.test_y, cls.test_list))
    for x, y, entries in splits:
        data = np.concatenate([contents[f][0] for f, _ in entries])  # (N, 3072)
        labels = sum((contents[f][1] for f, _ in entries), [])
        assert x.dtype == torch.uint8 and x.shape == (len(data), 3, 32, 32)
        # CIFAR rows are channel-major (R plane, G plane, B plane), i.e. already CHW.
        assert np.array_equal(x.numpy(), data.reshape(-1, 3, 32, 32))
        assert y.dtype == torch.int64 and y.tolist() == labels
    assert ds.num_classes == NUM_CLASSES[name] and ds.flip and len(ds.mean) == 3


def test_cifar_runs_a_mixed_family_federation(tmp_path, monkeypatch) -> None:
    """The CIFAR loader feeds every family: one round of a CNN, a ResNet and a ViT client."""
    cls = torchvision.datasets.CIFAR10
    _fake_cifar(tmp_path, cls, "labels", "label_names", 10, monkeypatch, rows=24)
    flat = {"dataset": "cifar10", "data_dir": str(tmp_path), "download": False, "models": "mixed"}
    flat |= {"num_clients": 3, "rounds": 1, "partition": "dirichlet", "device": "cpu"}
    result = run_experiment(build_config(flat | {"val_fraction": 0, "batch_size": 16}))
    table = result.table
    assert sorted(table["model"].unique()) == sorted(expand_models(("mixed",)))
    assert (table["train_flops"] > 0).all() and table["accuracy"].between(0, 1).all()


def test_cifar_missing_directory(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("cifar10", missing, download=False, test_fraction=0.2, seed=0)
    message = str(info.value)
    assert str(missing.resolve()) in message and "--data_dir" in message
    assert "cifar-10-batches-py" in message


def test_client_datasets(digits) -> None:
    splits = partition(digits.train_y.numpy(), digits.test_y.numpy(), 3, "pathological", 2, 0.5, 0)
    clients = client_datasets(digits, splits)
    for client, (tr, te) in zip(clients, splits):
        assert client.num_train == len(tr) and client.train_x.is_contiguous()
        assert torch.equal(client.test_y, digits.test_y[torch.as_tensor(te)])


def _images(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # (N, 3, 32, 32)
    return x, torch.arange(n)


NORM = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))


def _epoch(x, y, seed: int, augment: bool, flip: bool, batch_size: int = 4) -> list:
    g = torch.Generator().manual_seed(seed)
    return list(train_batches(x, y, batch_size, g, NORM, augment=augment, flip=flip))


def test_train_batches_cover_epoch_and_are_reproducible() -> None:
    x, y = _images(10)
    batches = _epoch(x, y, seed=1, augment=False, flip=False)
    assert [len(b[1]) for b in batches] == [4, 4, 2]  # last partial batch kept
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for xb, yb in batches:
        assert torch.allclose(xb, NORM(x[yb]))
    again = _epoch(x, y, seed=1, augment=True, flip=True)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, _epoch(x, y, 1, True, True)))


def _crops(image: torch.Tensor) -> torch.Tensor:
    """Return all 81 normalised crops of a 4-pixel zero-padded image."""
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))  # (3, 40, 40)
    crops = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    return NORM(torch.stack(crops))  # (81, 3, 32, 32)


def test_augment_crop_and_flip() -> None:
    x, y = _images(16)
    plain = _epoch(x, y, seed=2, augment=False, flip=False, batch_size=16)[0][0]
    cropped = _epoch(x, y, seed=2, augment=True, flip=False, batch_size=16)[0]
    flipped = _epoch(x, y, seed=2, augment=True, flip=True, batch_size=16)[0][0]
    assert cropped[0].shape == plain.shape and cropped[0].dtype == torch.float32
    assert not torch.equal(cropped[0], plain)
    n_flipped = 0
    for k, label in enumerate(cropped[1].tolist()):
        # flip=False: every sample is an unflipped crop of its padded original.
        crops = _crops(x[label])
        assert (crops - cropped[0][k]).abs().amax(dim=(1, 2, 3)).min() < 1e-5
        # Same seed, flip=True: same crop offsets, each sample either kept or mirrored.
        mirrored = torch.equal(flipped[k], cropped[0][k].flip(-1))
        assert mirrored or torch.equal(flipped[k], cropped[0][k])
        n_flipped += mirrored
    assert 0 < n_flipped < 16


def test_normalizer_and_eval_batches(digits) -> None:
    norm = Normalizer(digits.mean, digits.std, torch.device("cpu"))
    batches = list(eval_batches(digits.train_x, digits.train_y, 500, norm))
    assert torch.equal(torch.cat([b[1] for b in batches]), digits.train_y)
    z = torch.cat([b[0] for b in batches])  # (N, 3, 32, 32)
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
