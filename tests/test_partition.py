"""Tests for workbench.core.partition."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core.partition import (
    class_weights_dirichlet,
    class_weights_pathological,
    partition,
    split_by_weights,
)


def _labels(per_class: int, num_classes: int, seed: int) -> np.ndarray:
    """Return a shuffled balanced label vector."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


TRAIN = _labels(100, 10, 0)
TEST = _labels(20, 10, 1)


def _pathological(seed: int = 0, clients: int = 10, k: int = 2) -> list:
    return partition(TRAIN, TEST, clients, "pathological", k, 0.5, seed)


@pytest.mark.parametrize("scheme", ["pathological", "dirichlet"])
def test_disjoint_and_complete_over_held_classes(scheme: str) -> None:
    splits = partition(TRAIN, TEST, 5, scheme, 2, 1.0, seed=3)
    for which, labels in ((0, TRAIN), (1, TEST)):
        all_idx = np.concatenate([s[which] for s in splits])
        assert len(np.unique(all_idx)) == len(all_idx)  # disjoint
        held = np.unique(labels[all_idx])
        assert np.array_equal(np.sort(all_idx), np.flatnonzero(np.isin(labels, held)))
        assert all(np.array_equal(s[which], np.sort(s[which])) for s in splits)


def test_pathological_exact_k_same_classes_in_train_and_test() -> None:
    for tr, te in _pathological(k=3):
        train_classes, test_classes = set(TRAIN[tr]), set(TEST[te])
        assert len(train_classes) == 3
        assert train_classes == test_classes


def test_pathological_classes_used_evenly() -> None:
    w = class_weights_pathological(7, 10, 3, np.random.default_rng(0))
    uses = (w > 0).sum(axis=0)  # (classes,)
    assert uses.max() - uses.min() <= 1
    assert ((w > 0).sum(axis=1) == 3).all()
    held = w[w > 0]
    assert held.min() >= 0.4 and held.max() <= 0.6


def test_pathological_shares_within_uniform_bounds() -> None:
    splits = _pathological(clients=10, k=4)
    for labels, which in ((TRAIN, 0), (TEST, 1)):
        for c in range(10):
            counts = np.array([(labels[s[which]] == c).sum() for s in splits])
            m, n = (counts > 0).sum(), counts.sum()
            lo, hi = 0.4 / (0.4 + 0.6 * (m - 1)), 0.6 / (0.6 + 0.4 * (m - 1))
            held = counts[counts > 0]
            # Largest-remainder rounding can move a count by at most one sample.
            assert (held >= np.floor(lo * n)).all() and (held <= np.ceil(hi * n)).all()


def test_dirichlet_columns_sum_to_one() -> None:
    w = class_weights_dirichlet(6, 10, 0.3, np.random.default_rng(0))
    assert w.shape == (6, 10)
    assert np.allclose(w.sum(axis=0), 1.0)


def test_split_by_weights_drops_unheld_classes() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    weights = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    parts = split_by_weights(labels, weights, np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == [0, 1, 2, 3]
    assert np.array_equal(parts[1][labels[parts[1]] == 1], [2, 3])


@pytest.mark.parametrize("scheme", ["pathological", "dirichlet"])
def test_deterministic_in_seed(scheme: str) -> None:
    a, b, c = (partition(TRAIN, TEST, 5, scheme, 2, 0.5, s) for s in (7, 7, 8))
    assert all(np.array_equal(x[i], y[i]) for x, y in zip(a, b) for i in (0, 1))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_errors() -> None:
    with pytest.raises(ValueError, match="classes_per_client=11"):
        partition(TRAIN, TEST, 5, "pathological", 11, 0.5, 0)
    with pytest.raises(ValueError, match="classes_per_client=0"):
        partition(TRAIN, TEST, 5, "pathological", 0, 0.5, 0)
    with pytest.raises(ValueError, match="dirichlet_alpha=0"):
        partition(TRAIN, TEST, 5, "dirichlet", 2, 0.0, 0)
    with pytest.raises(ValueError, match="'iid'.*pathological, dirichlet"):
        partition(TRAIN, TEST, 5, "iid", 2, 0.5, 0)


def test_empty_client_is_an_error() -> None:
    train, test = _labels(2, 10, 0), _labels(2, 10, 1)  # 20 samples each
    with pytest.raises(ValueError, match=r"client \d+ .*'pathological'.*fewer clients"):
        partition(train, test, 50, "pathological", 2, 0.5, 0)
    with pytest.raises(ValueError, match=r"client \d+ .*'dirichlet'.*dirichlet_alpha"):
        partition(train, test, 50, "dirichlet", 2, 0.5, 0)
