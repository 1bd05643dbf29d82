"""Seeded label-skew partitions of a dataset among federated clients (pure numpy)."""

from __future__ import annotations

import numpy as np

from workbench.core.facts import PARTITIONS

SCHEMES = PARTITIONS


def class_weights_pathological(
    num_clients: int, num_classes: int, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Return (num_clients, num_classes) weights: k classes per client, each weight U(0.4, 0.6)."""
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients} is invalid; it must be >= 1")
    if not 1 <= k <= num_classes:
        raise ValueError(
            f"classes_per_client={k} is invalid for a dataset with {num_classes} classes; "
            f"it must be in [1, {num_classes}]"
        )
    order = rng.permutation(num_classes)
    weights = np.zeros((num_clients, num_classes))  # (clients, classes)
    for i in range(num_clients):
        # A cyclic walk gives k distinct classes per client and spreads classes evenly.
        held = order[(i * k + np.arange(k)) % num_classes]  # (k,)
        weights[i, held] = rng.uniform(0.4, 0.6, size=k)
    return weights


def class_weights_dirichlet(
    num_clients: int, num_classes: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Return (num_clients, num_classes) weights whose columns are Dirichlet(alpha) over clients."""
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients} is invalid; it must be >= 1")
    if not alpha > 0:
        raise ValueError(f"dirichlet_alpha={alpha} is invalid; it must be > 0")
    concentration = np.full(num_clients, float(alpha))  # (clients,)
    draws = rng.dirichlet(concentration, size=num_classes)  # (classes, clients)
    return draws.T  # (clients, classes)


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Return integer counts proportional to shares that sum exactly to total."""
    quotas = shares * total
    counts = np.floor(quotas).astype(np.int64)
    leftover = total - int(counts.sum())
    # Stable sort so ties go to the lower client index, keeping the result deterministic.
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def split_by_weights(labels: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Split sample indices among clients per class in proportion to weights[:, class]."""
    labels = np.asarray(labels)
    num_clients, num_classes = weights.shape
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}]; they must lie in [0, {num_classes - 1}]"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(num_classes):
        column = weights[:, c]  # (clients,)
        if column.sum() <= 0:
            continue  # no client holds this class: its samples are dropped
        idx = rng.permutation(np.flatnonzero(labels == c))  # (n_c,)
        counts = _largest_remainder(column / column.sum(), len(idx))
        for i, chunk in enumerate(np.split(idx, np.cumsum(counts)[:-1])):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def partition(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_clients: int,
    scheme: str,
    classes_per_client: int,
    dirichlet_alpha: float,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (train_indices, test_indices) per client from one seeded class-weight matrix."""
    rng = np.random.default_rng(seed)
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    if scheme == "pathological":
        weights = class_weights_pathological(num_clients, num_classes, classes_per_client, rng)
        hint = "use fewer clients or a larger classes_per_client"
    elif scheme == "dirichlet":
        weights = class_weights_dirichlet(num_clients, num_classes, dirichlet_alpha, rng)
        hint = "use fewer clients or a larger dirichlet_alpha"
    else:
        raise ValueError(f"partition scheme {scheme!r} is unknown; allowed: {', '.join(SCHEMES)}")
    # One weight matrix for both splits keeps each client's test label mix equal to its train mix.
    train_parts = split_by_weights(train_labels, weights, rng)
    test_parts = split_by_weights(test_labels, weights, rng)
    for i, (tr, te) in enumerate(zip(train_parts, test_parts)):
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(
                f"client {i} got {len(tr)} train and {len(te)} test samples under the "
                f"{scheme!r} partition of {len(train_labels)} train / {len(test_labels)} test "
                f"samples among {num_clients} clients; {hint}"
            )
    return list(zip(train_parts, test_parts))


def cap_train(
    splits: list[tuple[np.ndarray, np.ndarray]], train_labels: np.ndarray, cap: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Keep at most `cap` training samples per client, drawn class by class in proportion to the
    client's own label mix (largest remainders); test splits are unchanged. 0 keeps all."""
    if cap < 0:
        raise ValueError(f"max_train_samples={cap} is invalid; it must be >= 0 (0: no cap)")
    if cap == 0:
        return splits
    labels = np.asarray(train_labels)
    capped = []
    for train, test in splits:
        if len(train) <= cap:
            capped.append((train, test))
            continue
        classes, counts = np.unique(labels[train], return_counts=True)  # (k,), (k,)
        keep = _largest_remainder(counts / counts.sum(), cap)  # (k,)
        chosen = [rng.choice(train[labels[train] == c], size=n, replace=False) for c, n in zip(classes, keep)]
        capped.append((np.sort(np.concatenate(chosen)), test))
    return capped
