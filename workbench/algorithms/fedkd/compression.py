"""Energy-threshold SVD compression of parameter updates (FedKD's dynamic gradient approximation).

Wu et al., "Communication-efficient federated learning via knowledge distillation", Nature
Communications 13, 2032 (2022), arXiv:2108.13323. A tensor with ≥ 2 dims is viewed as a matrix
(conv weights as out × in·k·k) and sent as the factors of its truncated SVD: U_k (m×k), σ_k (k)
and V_k (k×n), with k the smallest rank whose singular values keep a share `energy` of
Σ σ_i². Squared singular values are the energy, as in the paper's threshold and the authors'
code (np.square(sigma)): Σ_{i≤k} σ_i² / Σ σ_i² is the share of the squared Frobenius norm the
rank-k approximation keeps, so the relative squared reconstruction error is exactly 1 − that
share (Eckart–Young). Where the factors would not be smaller than the dense matrix, and for
1-D tensors (biases), the tensor is sent dense.

Payload keys: "<param>.U", "<param>.S", "<param>.V" for factors, "<param>" for a dense tensor,
so bytes are counted from exactly what is sent. Everything is float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor

Payload = Mapping[str, Tensor]
DENSE, FACTORS = "", (".U", ".S", ".V")


def energy_schedule(round_: int, rounds: int, start: float, end: float) -> float:
    """FedKD's threshold T(t) = T_start + (T_end − T_start)·t/R for round t = 1..R."""
    if not 1 <= round_ <= rounds:
        raise ValueError(f"round {round_} is out of range: must be in 1..{rounds}")
    return start + (end - start) * round_ / rounds


def rank_for_energy(singular_values: Tensor, energy: float) -> int:
    """Smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ energy (σ descending); 0 for an all-zero spectrum."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy {energy!r} is out of range: must be in (0, 1]")
    squares = singular_values.detach().to(torch.float64).square()  # k
    total = squares.sum()
    if total == 0:
        return 0
    kept = squares.cumsum(0) / total  # k, non-decreasing
    return min(int((kept < energy).sum()) + 1, squares.numel())


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(m, n) of the matrix view of a ≥ 2-D tensor: first dim × all others."""
    return shape[0], math.prod(shape[1:])


def svd_compress(tensor: Tensor, energy: float) -> dict[str, Tensor]:
    """Suffix-keyed parts: {".U", ".S", ".V"} factors, or {"": tensor} where dense is not larger."""
    t = tensor.detach().to(torch.float32)
    if t.dim() < 2:
        return {DENSE: t.clone()}
    m, n = matrix_shape(t.shape)
    u, s, vh = torch.linalg.svd(t.reshape(m, n), full_matrices=False)  # m×r, r, r×n
    k = rank_for_energy(s, energy)
    if k * (m + n + 1) >= m * n:  # factors would not save anything: dense is exact at no extra cost
        return {DENSE: t.clone()}
    return {".U": u[:, :k].contiguous(), ".S": s[:k].clone(), ".V": vh[:k].clone()}


def svd_decompress(parts: Payload, shape: Sequence[int]) -> Tensor:
    """The tensor of `shape` that svd_compress's parts describe (U·diag(σ)·V, or the dense part)."""
    shape = torch.Size(shape)
    odd = {k: t.dtype for k, t in parts.items() if t.dtype != torch.float32}
    if odd:
        raise ValueError(f"parts must be float32, got {odd}")
    if set(parts) == {DENSE}:
        if parts[DENSE].shape != shape:
            raise ValueError(f"dense part of shape {tuple(parts[DENSE].shape)}, expected {tuple(shape)}")
        return parts[DENSE]
    if set(parts) != set(FACTORS) or len(shape) < 2:
        raise ValueError(
            f"parts {sorted(parts)} for shape {tuple(shape)}: expected {[DENSE]} or, "
            f"for ≥ 2 dims, {list(FACTORS)}"
        )
    u, s, v = (parts[suffix] for suffix in FACTORS)
    m, n = matrix_shape(shape)
    k = s.numel()
    if s.shape != (k,) or u.shape != (m, k) or v.shape != (k, n):
        raise ValueError(
            f"factor shapes U {tuple(u.shape)}, S {tuple(s.shape)}, "
            f"V {tuple(v.shape)} do not fit {(m, n)}: "
            f"expected ({m}, k), (k,), (k, {n})"
        )
    return ((u * s) @ v).reshape(shape)  # (m×k · diag k) @ k×n → m×n


def compress_state(state: Payload, energy: float) -> dict[str, Tensor]:
    """Payload of every tensor of `state` compressed at `energy` ("<name>.U" … or "<name>")."""
    return {
        name + suffix: part
        for name, tensor in state.items()
        for suffix, part in svd_compress(tensor, energy).items()
    }


def parts_of(payload: Payload, name: str) -> dict[str, Tensor]:
    """The suffix-keyed parts a payload holds for one tensor name."""
    return {s: payload[name + s] for s in (DENSE, *FACTORS) if name + s in payload}


class TensorPayloadError(ValueError):
    """A compressed payload that does not rebuild the named tensor (`tensor`)."""

    def __init__(self, tensor: str, message: str) -> None:
        super().__init__(message)
        self.tensor = tensor


def decompress_state(payload: Payload, shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """The tensors a payload describes, one per name in `shapes`; missing or stray keys: errors."""
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for name, shape in shapes.items():
        parts = parts_of(payload, name)
        if not parts:
            raise TensorPayloadError(name, f"payload holds nothing for tensor {name!r}")
        try:
            state[name] = svd_decompress(parts, shape)
        except ValueError as error:
            raise TensorPayloadError(name, f"tensor {name!r}: {error}") from None
        used.update(name + s for s in parts)
    stray = sorted(set(payload) - used)
    if stray:
        raise ValueError(f"payload holds keys {stray} that match no tensor of {sorted(shapes)}")
    return state


def merge_payloads(payloads: Sequence[Payload], shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """One payload whose decompression is the exact sum of several payloads' decompressions.

    Factors concatenate along the rank (Σ U_i diag σ_i V_i = [U_1 …] diag[σ_1 …] [V_1; …]), so
    nothing is lost; a tensor goes dense where any part is dense or the stacked factors would
    not be smaller than the dense matrix.
    """
    if len(payloads) <= 1:  # nothing to sum: an empty list means nothing to send
        return dict(payloads[0]) if payloads else {}
    merged: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        parts = [parts_of(p, name) for p in payloads]
        if len(shape) >= 2 and all(DENSE not in q for q in parts):
            stacked = {
                ".U": torch.cat([q[".U"] for q in parts], 1),  # m × Σk
                ".S": torch.cat([q[".S"] for q in parts], 0),  # Σk
                ".V": torch.cat([q[".V"] for q in parts], 0),
            }  # Σk × n
            m, n = matrix_shape(shape)
            if stacked[".S"].numel() * (m + n + 1) < m * n:
                merged.update({name + s: t for s, t in stacked.items()})
                continue
        merged[name] = cast(Tensor, sum(svd_decompress(q, shape) for q in parts))
    return merged
