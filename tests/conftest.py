"""Shared fixtures: tiny configurations that run in seconds on two cores; the spawn guard that
keeps markers honest (docs/architecture.md §10)."""

from __future__ import annotations

import os

# Ray reads this once, when it is first imported, and without it binds the machine's interface
# address even for 127.0.0.1: every Ray server a test starts must stay on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import sys
from collections.abc import Generator, Iterator

import pytest
import torch
from spawn_guard import SpawnGuard

torch.set_num_threads(2)

TINY = dict(
    dataset="digits", num_clients=4, rounds=2, batch_size=32, eval_batch_size=256, seed=0, device="cpu"
)

GUARD = SpawnGuard()
sys.addaudithook(GUARD.audit)  # an audit hook cannot be removed: it only acts while a test runs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Point the spawn guard at the test that runs (setup, call and teardown)."""
    GUARD.item, GUARD.refused = item, []
    try:
        return (yield)
    finally:
        GUARD.item = None


@pytest.fixture(autouse=True)
def marked_for_what_it_starts() -> Iterator[None]:
    """Fail a test whose unmarked process start was refused, even where a library caught it."""
    yield
    if GUARD.refused:
        pytest.fail("\n".join(GUARD.refused), pytrace=False)


@pytest.fixture
def spawn_guard() -> SpawnGuard:
    """The session's spawn guard (its own tests check it refuses and lets through)."""
    return GUARD


@pytest.fixture
def tiny() -> dict:
    """Flat parameters of a tiny digits run (copy; tests may change it)."""
    return dict(TINY)
