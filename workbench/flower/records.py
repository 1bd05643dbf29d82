"""Payloads ↔ Flower records, and bytes counted on the records Flower actually carries.

A workbench payload is a name → tensor dict; on the wire it is an `ArrayRecord` whose Arrays
hold each tensor as NumPy `.npy` bytes (a ~128-byte header, then the raw data). The tensor
bytes of a record are read from the Arrays themselves (numel × element size of what was
decoded), so they are what crossed the wire and equal `workbench.core.accounting.payload_bytes` of
the payload; the `.npy` headers are reported separately as framing overhead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import Tensor

from workbench.core.aggregation import InvalidUpdateError

Payload = Mapping[str, Tensor]


def to_record(payload: Payload) -> ArrayRecord:
    """A payload as an ArrayRecord (tensors moved to CPU; dtype and shape kept exactly)."""
    return ArrayRecord({name: Array(t.detach().cpu().numpy()) for name, t in payload.items()})


def from_record(record: ArrayRecord, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The payload an ArrayRecord carries, as tensors on the device."""
    return {name: torch.from_numpy(array.numpy()).to(device) for name, array in record.items()}


def record_bytes(record: ArrayRecord) -> tuple[int, int]:
    """(tensor bytes, serialized bytes) of a record: Σ numel × itemsize, and Σ .npy lengths."""
    tensor = sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in record.values())
    return tensor, sum(len(a.data) for a in record.values())


def decode_update(cid: int, record: ArrayRecord | None) -> dict[str, Tensor]:
    """A client's uploaded payload, or InvalidUpdateError naming what could not be read."""
    if record is None:
        raise InvalidUpdateError(cid, None, "the reply carries no 'arrays' record")
    try:
        return from_record(record)
    except (TypeError, ValueError) as error:  # not NumPy bytes, or an unsupported dtype
        raise InvalidUpdateError(cid, None, f"arrays could not be decoded: {error}") from None
