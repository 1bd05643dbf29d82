"""Deliberately malformed uploads, for testing that the server refuses them.

`faulty({cid: kind})` is a ClientApp's `tamper` hook: those clients train as usual and then
send a corrupted upload.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Upload = dict[str, Tensor]


def _nan(upload: Upload) -> Upload:
    """The first floating tensor filled with NaN."""
    name = next(n for n, t in upload.items() if t.is_floating_point())
    return {**upload, name: torch.full_like(upload[name], float("nan"))}


def _shape(upload: Upload) -> Upload:
    """The first tensor with one extra row."""
    name, t = next(iter(upload.items()))
    return {**upload, name: torch.cat([t, t[:1]])}


def _keys(upload: Upload) -> Upload:
    """One tensor renamed, and an unexpected one added."""
    name, t = next(iter(upload.items()))
    rest = {n: v for n, v in upload.items() if n != name}
    return {**rest, name + ".renamed": t, "extra": torch.zeros(3)}


FAULTS: dict[str, Callable[[Upload], Upload]] = {"nan": _nan, "shape": _shape, "keys": _keys}


def corrupt(kind: str, upload: Upload) -> Upload:
    """The upload corrupted in the named way."""
    if kind not in FAULTS:
        raise ValueError(f"fault {kind!r} is unknown; allowed: {sorted(FAULTS)}")
    if not upload:
        return {"extra": torch.zeros(3)}  # nothing to corrupt: send something not expected
    return FAULTS[kind](dict(upload))


def faulty(faults: dict[int, str]) -> Callable[[int, Upload], Upload]:
    """A ClientApp `tamper` hook corrupting the uploads of the named clients."""
    return lambda cid, upload: corrupt(faults[cid], upload) if cid in faults else upload
