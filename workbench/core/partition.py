"""Seeded label-skew partitions of a dataset among federated clients (pure numpy)."""

from __future__ import annotations

import numpy as np

from workbench.core.facts import PARTITIONS, Seed

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


def validation_count(num_train: int, fraction: float) -> int:
    """Samples a client with num_train training samples holds out: round(fraction·n), at least
    one when fraction > 0 (so every client can be selected on), none when fraction is 0."""
    return 0 if fraction == 0 else max(1, int(round(fraction * num_train)))


def hold_out(
    train_idx: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's training indices into (train, validation), stratified by label: each
    class gives its share of the held-out count (largest remainder), drawn at random."""
    train_idx = np.asarray(train_idx)
    count = validation_count(len(train_idx), fraction)
    if count == 0:
        return train_idx, np.zeros(0, np.int64)
    classes, inverse = np.unique(np.asarray(labels)[train_idx], return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))  # (classes,)
    per_class = _largest_remainder(sizes / sizes.sum(), count)  # (classes,), each <= its size
    held = [rng.choice(np.flatnonzero(inverse == c), size=k, replace=False) for c, k in enumerate(per_class)]
    val_pos = np.concatenate(held) if held else np.zeros(0, np.int64)
    keep = np.ones(len(train_idx), bool)
    keep[val_pos] = False
    return np.sort(train_idx[keep]), np.sort(train_idx[val_pos])


def validation_splits(
    train_parts: list[np.ndarray], train_labels: np.ndarray, fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) indices per client, from a generator of its own purpose so the
    partition itself does not change with the fraction; a client left without a training
    sample is refused naming it."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction={fraction} is invalid; it must be in [0, 1)")
    rng = np.random.default_rng([seed, Seed.VALIDATION])
    out = []
    for i, part in enumerate(train_parts):
        train, val = hold_out(part, train_labels, fraction, rng)
        if len(train) == 0:
            raise ValueError(
                f"client {i} holds {len(part)} training sample(s), too few to hold out a validation "
                f"sample (val_fraction={fraction}) and keep one to train on; use a smaller "
                f"val_fraction, 0 for no validation, or fewer clients"
            )
        out.append((train, val))
    return out
