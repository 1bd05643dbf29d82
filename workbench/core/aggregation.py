"""Server-side aggregation: pure functions over name → tensor payloads.

Every update is validated (keys, shapes, dtypes, finiteness) against a reference before any
arithmetic, so a bad update is refused with an error naming the client and the tensor, and the
caller's global state is never touched.

Besides the sample-weighted mean, three robust rules bound what a few poisoned (finite) updates
can do: `norm_bounded` clips each client's distance from a center (the previous global state)
before the weighted mean; `median` and `trimmed_mean` work coordinate by coordinate and give
every client one vote (a sample count is the first thing an attacker would inflate). Each has a
class-wise twin for methods that average per class. `AGGREGATORS` / `CLASSWISE_AGGREGATORS`
pick one by name; a `Rule` carries the name and its knobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

Payload = Mapping[str, Tensor]


def summed(tensors: Iterable[Tensor]) -> Tensor:
    """Python's sum of one or more tensors (0 + t₁ + t₂ …, in that order, as before)."""
    return cast(Tensor, sum(tensors))


class InvalidUpdateError(ValueError):
    """A client's update does not fit the expected payload."""

    def __init__(self, client: int, tensor: str | None, reason: str) -> None:
        where = f"client {client}" + (f", tensor {tensor!r}" if tensor else "")
        super().__init__(f"update refused ({where}): {reason}")
        self.client, self.tensor, self.reason = client, tensor, reason


def validate_update(client: int, update: Payload, reference: Payload) -> None:
    """Raise InvalidUpdateError unless `update` matches `reference` in keys, shapes, dtypes, and is
    finite."""
    missing, extra = set(reference) - set(update), set(update) - set(reference)
    if missing or extra:
        raise InvalidUpdateError(
            client, None, f"keys differ: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
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


def aggregate_accepting(
    aggregate: Callable[[Mapping[int, Payload], Mapping[int, float]], dict],
    uploads: Mapping[int, Payload],
    weights: Mapping[int, float],
) -> tuple[dict, list[InvalidUpdateError]]:
    """`aggregate(uploads, weights)` over the uploads it accepts: a client it refuses
    (InvalidUpdateError naming one of them) is dropped and it reruns; (result, the refusals)."""
    uploads, weights = dict(uploads), dict(weights)
    refused: list[InvalidUpdateError] = []
    while True:
        try:
            return aggregate(uploads, weights), refused
        except InvalidUpdateError as error:
            if error.client not in uploads:
                raise
            refused.append(error)
            del uploads[error.client], weights[error.client]


def class_table(num_classes: int, width: int, values: str) -> dict[str, Tensor]:
    """The reference of a per-class upload: C × width float means and C int64 counts."""
    return {
        values: torch.zeros(num_classes, width, dtype=torch.float32),
        "counts": torch.zeros(num_classes, dtype=torch.int64),
    }


def checked_reference(
    updates: Mapping[int, Payload], weights: Mapping[int, float], reference: Payload | None = None
) -> Payload:
    """Validate the weights and every update; return the reference (default: the first update)."""
    if not updates:
        raise ValueError("no updates to aggregate")
    if set(weights) != set(updates):
        raise ValueError(f"weights given for clients {sorted(weights)}, updates from {sorted(updates)}")
    if any(not w > 0 for w in weights.values()):
        raise ValueError(f"aggregation weights must be positive, got {dict(weights)}")
    reference = reference if reference is not None else next(iter(updates.values()))
    for client, update in updates.items():
        validate_update(client, update, reference)
    return reference


def weighted_average(
    updates: Mapping[int, Payload], weights: Mapping[int, float], reference: Payload | None = None
) -> dict[str, Tensor]:
    """Σ w_k θ_k / Σ w_k per tensor name, after validating every update (first one is the reference)."""
    reference = checked_reference(updates, weights, reference)
    total = float(sum(weights.values()))
    return {
        name: summed(
            update[name].to(torch.float64) * (weights[c] / total) for c, update in updates.items()
        ).to(ref.dtype)
        for name, ref in reference.items()
    }


def _stacked(updates: Mapping[int, Payload], name: str) -> Tensor:
    """One tensor of every update stacked along a new first (client) axis, in float64."""
    return torch.stack([u[name].to(torch.float64) for u in updates.values()])  # K, ...


def _like(value: Tensor, ref: Tensor) -> Tensor:
    """A float64 result in the reference's dtype (integers rounded, not truncated)."""
    return (value if ref.is_floating_point() else value.round()).to(ref.dtype)


def clip_factor(distance: float, max_norm: float) -> float:
    """min(1, max_norm / ‖u‖): the scale that brings an update of norm `distance` within the bound."""
    return 1.0 if distance <= max_norm else max_norm / distance


def update_norm(update: Payload, center: Payload | None) -> float:
    """L2 norm of (update − center) over all its floating tensors taken as one vector."""
    total = 0.0
    for name, t in update.items():
        if t.is_floating_point():
            delta = t.to(torch.float64) - (center[name].to(torch.float64) if center is not None else 0.0)
            total += float((delta**2).sum())
    return math.sqrt(total)


def norm_bounded(
    updates: Mapping[int, Payload],
    weights: Mapping[int, float],
    reference: Payload | None = None,
    *,
    max_norm: float,
    center: Payload | None = None,
) -> dict[str, Tensor]:
    """Weighted mean after clipping each client's update u_k = θ_k − center to ‖u_k‖₂ ≤ max_norm.

    The norm is taken over all floating tensors of a payload as one vector. center is the state
    the clients started from (the previous global state); None means zeros, for
    payloads that are updates already. Non-floating tensors are averaged unclipped.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm={max_norm} must be > 0")
    reference = checked_reference(updates, weights, reference)
    if center is not None and any(
        center.get(n) is None or center[n].shape != t.shape
        for n, t in reference.items()
        if t.is_floating_point()
    ):
        raise ValueError(f"center {sorted(center)} does not match the updates {sorted(reference)}")
    clipped = {client: clip_update(update, center, max_norm) for client, update in updates.items()}
    return weighted_average(clipped, weights, reference)


def clip_update(update: Payload, center: Payload | None, max_norm: float) -> dict[str, Tensor]:
    """The update moved back towards center so that ‖update − center‖₂ ≤ max_norm (norm over
    all its floating tensors as one vector; center None: zeros); others unchanged."""
    factor = clip_factor(update_norm(update, center), max_norm)
    return {
        name: _moved(t, center[name] if center is not None else None, factor) for name, t in update.items()
    }


def _moved(t: Tensor, center: Tensor | None, factor: float) -> Tensor:
    """center + factor·(t − center) for a floating tensor, in its own dtype; others unchanged."""
    if not t.is_floating_point() or factor == 1.0:
        return t
    base = center.to(torch.float64) if center is not None else 0.0
    return (base + factor * (t.to(torch.float64) - base)).to(t.dtype)


def median(
    updates: Mapping[int, Payload], weights: Mapping[int, float], reference: Payload | None = None
) -> dict[str, Tensor]:
    """Coordinate-wise median over clients (the mean of the two middle values for an even
    count); one vote per client, so `weights` are validated but not used."""
    reference = checked_reference(updates, weights, reference)
    return {name: _like(_median(_stacked(updates, name)), ref) for name, ref in reference.items()}


def _median(stack: Tensor) -> Tensor:
    """Median along the first axis, averaging the two middle values when their count is even."""
    ordered, count = stack.sort(dim=0).values, stack.shape[0]
    return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2


def trim_count(clients: int, trim: float) -> int:
    """How many values trimmed_mean drops at each end: ⌊trim·K⌋."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim={trim} must be in [0, 0.5): the share dropped at each end")
    return int(math.floor(trim * clients))


def trimmed_mean(
    updates: Mapping[int, Payload],
    weights: Mapping[int, float],
    reference: Payload | None = None,
    *,
    trim: float,
) -> dict[str, Tensor]:
    """Coordinate-wise mean after dropping the ⌊trim·K⌋ largest and smallest of the K clients'
    values; one vote per client, so `weights` are validated but not used."""
    drop = trim_count(len(updates), trim)
    reference = checked_reference(updates, weights, reference)
    return {name: _like(_trimmed(_stacked(updates, name), drop), ref) for name, ref in reference.items()}


def _trimmed(stack: Tensor, drop: int) -> Tensor:
    """Mean along the first axis of the values left after dropping `drop` at each end."""
    ordered = stack.sort(dim=0).values
    return ordered[drop : stack.shape[0] - drop].mean(0)


def class_means(values: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Client side of class-wise averaging: per-class mean of the rows of `values` (zeros where a
    class is absent) and per-class sample counts."""
    counts = torch.bincount(y, minlength=num_classes)  # C
    sums = torch.zeros(num_classes, values.shape[1], dtype=torch.float64, device=values.device)  # C, d
    sums.index_add_(0, y, values.to(torch.float64))
    return (sums / counts.clamp(min=1)[:, None]).to(torch.float32), counts.to(torch.int64)


def checked_classwise(updates: Mapping[int, Payload], counts: str = "counts") -> Payload:
    """Validate class-wise updates (alike, finite, counts ≥ 0); return the first as reference."""
    if not updates:
        raise ValueError("no updates to aggregate")
    reference = next(iter(updates.values()))
    for client, update in updates.items():
        validate_update(client, update, reference)
        if (update[counts] < 0).any():
            raise InvalidUpdateError(client, counts, "negative class counts")
    return reference


def classwise_average(
    updates: Mapping[int, Payload], values: str = "values", counts: str = "counts"
) -> dict[str, Tensor]:
    """Per-class mean over clients weighted by each client's per-class sample counts.

    Each update holds `values` (C, d): the client's per-class means, and `counts` (C,): how many
    samples each mean covers (0 where the client has no such class). Returns the global (C, d)
    means and (C,) total counts; a class no client holds gets zeros and count 0.
    """
    reference = checked_classwise(updates, counts)
    total = summed(u[counts].to(torch.float64) for u in updates.values())  # C
    weighted = summed(
        u[values].to(torch.float64) * u[counts].to(torch.float64)[:, None] for u in updates.values()
    )  # C, d
    means = weighted / total.clamp(min=1)[:, None]  # C, d
    return {values: means.to(reference[values].dtype), counts: total.to(reference[counts].dtype)}


def _per_class(
    updates: Mapping[int, Payload], values: str, counts: str, reduce: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """Reduce, class by class, the rows of the clients holding that class (count > 0)."""
    reference = checked_classwise(updates, counts)
    rows = _stacked(updates, values)  # K, C, d
    held = torch.stack([u[counts] for u in updates.values()])  # K, C
    out = torch.zeros(rows.shape[1:], dtype=torch.float64, device=rows.device)  # C, d
    for c in range(rows.shape[1]):
        holders = held[:, c] > 0  # K
        if holders.any():
            out[c] = reduce(rows[holders, c])  # (K_c, d) → d
    return {values: out.to(reference[values].dtype), counts: held.sum(0).to(reference[counts].dtype)}


def classwise_median(
    updates: Mapping[int, Payload], values: str = "values", counts: str = "counts"
) -> dict[str, Tensor]:
    """Per class, the coordinate-wise median of the rows of the clients holding it (one vote
    each, counts not used beyond who holds the class); total counts as in classwise_average."""
    return _per_class(updates, values, counts, _median)


def classwise_trimmed_mean(
    updates: Mapping[int, Payload], values: str = "values", counts: str = "counts", *, trim: float
) -> dict[str, Tensor]:
    """Per class, the coordinate-wise trimmed mean (⌊trim·K_c⌋ dropped at each end) of the rows
    of the K_c clients holding it; total counts as in classwise_average."""
    trim_count(1, trim)  # refuse a bad trim before any work
    return _per_class(updates, values, counts, lambda rows: _trimmed(rows, trim_count(rows.shape[0], trim)))


def classwise_norm_bounded(
    updates: Mapping[int, Payload],
    values: str = "values",
    counts: str = "counts",
    *,
    max_norm: float,
    center: Tensor | None = None,
) -> dict[str, Tensor]:
    """classwise_average after clipping each client's row c to ‖row − center[c]‖₂ ≤ max_norm.

    center (C, d) is the previous global per-class table (None: zeros, e.g. for logits).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm={max_norm} must be > 0")
    checked_classwise(updates, counts)
    clipped = {}
    for client, update in updates.items():
        rows = update[values].to(torch.float64)  # C, d
        base = center.to(torch.float64) if center is not None else torch.zeros_like(rows)
        distance = (rows - base).norm(dim=1, keepdim=True)  # C, 1
        factor = max_norm / distance.clamp(min=max_norm)  # C, 1: 1 within the bound
        clipped[client] = {**update, values: (base + factor * (rows - base)).to(update[values].dtype)}
    return classwise_average(clipped, values, counts)


@dataclass(frozen=True)
class Rule:
    """An aggregation rule by name and its knobs (a rule reads only its own knobs)."""

    name: str = "mean"
    max_norm: float = 1.0  # norm_bounded: the largest L2 distance a client may move the state
    trim: float = 0.2  # trimmed_mean: share of clients dropped at each end, per coordinate


AGGREGATORS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "mean": lambda rule, u, w, ref, center: weighted_average(u, w, ref),
    "norm_bounded": lambda rule, u, w, ref, center: norm_bounded(
        u, w, ref, max_norm=rule.max_norm, center=center
    ),
    "median": lambda rule, u, w, ref, center: median(u, w, ref),
    "trimmed_mean": lambda rule, u, w, ref, center: trimmed_mean(u, w, ref, trim=rule.trim),
}

CLASSWISE_AGGREGATORS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "mean": lambda rule, u, v, n, center: classwise_average(u, v, n),
    "norm_bounded": lambda rule, u, v, n, center: classwise_norm_bounded(
        u, v, n, max_norm=rule.max_norm, center=center
    ),
    "median": lambda rule, u, v, n, center: classwise_median(u, v, n),
    "trimmed_mean": lambda rule, u, v, n, center: classwise_trimmed_mean(u, v, n, trim=rule.trim),
}


def _pick(
    table: Mapping[str, Callable[..., dict[str, Tensor]]], rule: Rule
) -> Callable[..., dict[str, Tensor]]:
    """The rule's function from a dispatch table, or an error listing the names allowed."""
    if rule.name not in table:
        raise ValueError(f"aggregator={rule.name!r} is unknown; choose from {sorted(table)}")
    return table[rule.name]


def aggregate_by(
    rule: Rule,
    updates: Mapping[int, Payload],
    weights: Mapping[int, float],
    reference: Payload | None = None,
    center: Payload | None = None,
) -> dict[str, Tensor]:
    """The named rule over whole payloads; center is what norm_bounded measures distances from."""
    return _pick(AGGREGATORS, rule)(rule, updates, weights, reference, center)


def aggregate_classwise_by(
    rule: Rule,
    updates: Mapping[int, Payload],
    values: str = "values",
    counts: str = "counts",
    center: Tensor | None = None,
) -> dict[str, Tensor]:
    """The named rule's class-wise variant over per-class tables."""
    return _pick(CLASSWISE_AGGREGATORS, rule)(rule, updates, values, counts, center)
