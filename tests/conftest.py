"""Shared fixtures: tiny configurations that run in seconds on two cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)

TINY = dict(
    dataset="digits", num_clients=4, rounds=2, batch_size=32, eval_batch_size=256, seed=0, device="cpu"
)


@pytest.fixture
def tiny() -> dict:
    """Flat parameters of a tiny digits run (copy; tests may change it)."""
    return dict(TINY)
