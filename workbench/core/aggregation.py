"""Server-side aggregation: pure functions over name → tensor payloads.

Every update is validated (keys, shapes, dtypes, finiteness) against a reference before any
arithmetic, so a bad update is refused with an error naming the client and the tensor, and the
caller's global state is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Payload = Mapping[str, Tensor]


class InvalidUpdateError(ValueError):
    """A client's update does not fit the expected payload."""

    def __init__(self, client: int, tensor: str | None, reason: str) -> None:
        where = f"client {client}" + (f", tensor {tensor!r}" if tensor else "")
        super().__init__(f"update refused ({where}): {reason}")
        self.client, self.tensor, self.reason = client, tensor, reason


def validate_update(client: int, update: Payload, reference: Payload) -> None:
    """Raise InvalidUpdateError unless `update` matches `reference` in keys, shapes and dtypes and is finite."""
    missing, extra = set(reference) - set(update), set(update) - set(reference)
    if missing or extra:
        raise InvalidUpdateError(client, None, f"keys differ: missing {sorted(missing)}, "
                                               f"unexpected {sorted(extra)}")
    for name, ref in reference.items():
        t = update[name]
        if not isinstance(t, Tensor):
            raise InvalidUpdateError(client, name, f"not a tensor but {type(t).__name__}")
        if t.shape != ref.shape:
            raise InvalidUpdateError(client, name, f"shape {tuple(t.shape)} != {tuple(ref.shape)}")
        if t.dtype != ref.dtype:
            raise InvalidUpdateError(client, name, f"dtype {t.dtype} != {ref.dtype}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InvalidUpdateError(client, name, "contains NaN or infinity")


def class_table(num_classes: int, width: int, values: str) -> dict[str, Tensor]:
    """The reference of a per-class upload: C × width float means and C int64 counts."""
    return {values: torch.zeros(num_classes, width, dtype=torch.float32),
            "counts": torch.zeros(num_classes, dtype=torch.int64)}


def weighted_average(updates: Mapping[int, Payload], weights: Mapping[int, float],
                     reference: Payload | None = None) -> dict[str, Tensor]:
    """Σ w_k θ_k / Σ w_k per tensor name, after validating every update (first one is the reference)."""
    if not updates:
        raise ValueError("no updates to aggregate")
    if set(weights) != set(updates):
        raise ValueError(f"weights given for clients {sorted(weights)}, updates from {sorted(updates)}")
    if any(w <= 0 for w in weights.values()):
        raise ValueError(f"aggregation weights must be positive, got {dict(weights)}")
    reference = reference if reference is not None else next(iter(updates.values()))
    for client, update in updates.items():
        validate_update(client, update, reference)
    total = float(sum(weights.values()))
    return {name: sum(update[name].to(torch.float64) * (weights[c] / total)
                      for c, update in updates.items()).to(ref.dtype)
            for name, ref in reference.items()}


def class_means(values: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Client side of class-wise averaging: per-class mean of the rows of `values` (zeros where a
    class is absent) and per-class sample counts."""
    counts = torch.bincount(y, minlength=num_classes)  # C
    sums = torch.zeros(num_classes, values.shape[1], dtype=torch.float64, device=values.device)  # C, d
    sums.index_add_(0, y, values.to(torch.float64))
    return (sums / counts.clamp(min=1)[:, None]).to(torch.float32), counts.to(torch.int64)


def classwise_average(updates: Mapping[int, Payload], values: str = "values",
                      counts: str = "counts") -> dict[str, Tensor]:
    """Per-class mean over clients weighted by each client's per-class sample counts.

    Each update holds `values` (C, d): the client's per-class means, and `counts` (C,): how many
    samples each mean covers (0 where the client has no such class). Returns the global (C, d)
    means and (C,) total counts; a class no client holds gets zeros and count 0.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    reference = next(iter(updates.values()))
    for client, update in updates.items():
        validate_update(client, update, reference)
        if (update[counts] < 0).any():
            raise InvalidUpdateError(client, counts, "negative class counts")
    total = sum(u[counts].to(torch.float64) for u in updates.values())  # C
    weighted = sum(u[values].to(torch.float64) * u[counts].to(torch.float64)[:, None]
                   for u in updates.values())  # C, d
    means = weighted / total.clamp(min=1)[:, None]  # C, d
    return {values: means.to(reference[values].dtype), counts: total.to(reference[counts].dtype)}
