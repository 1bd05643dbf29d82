"""Small builders shared by tests: an algorithm on synthetic client data, no dataset loading."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from workbench.algorithms import REGISTRY, Client, Environment
from workbench.config import build_config
from workbench.core.data import ClientData

if TYPE_CHECKING:
    from workbench.algorithms.fedlora.placements import Placement

# the smallest sweep that still trains: digits, 2 clients, 2 rounds (the sweep tests' fixed values)
SWEEP_TINY = {
    "dataset": "digits",
    "num_clients": 2,
    "rounds": 2,
    "batch_size": 64,
    "device": "cpu",
    "eval_batch_size": 256,
}


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll `predicate` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


class Killed(Exception):
    """What `kill_after` raises: a run killed as a round ends (before that round's checkpoint)."""


def kill_after(round_to_die: int) -> Callable[..., None]:
    """A progress callback that kills the run as round `round_to_die` ends."""

    def progress(round_: int, rounds: int, metrics: object) -> None:
        if round_ == round_to_die:
            raise Killed

    return progress


def table_row(**values: object) -> dict:
    """One results.csv row of a synthetic sweep table: fixed costs and counts, then `values`."""
    fixed = {"client": 0, "model": "cnn1", "participated": True, "loss": 1.0, "train_loss": 1.0}
    costs = {"train_flops": 100, "bytes_up": 10, "bytes_down": 10, "num_train": 5, "num_test": 5}
    return {**fixed, **costs, **values}


def tiny_spec(grid: dict) -> dict:
    """A sweep spec over SWEEP_TINY with this grid."""
    return {"parameters": dict(SWEEP_TINY), "grid": grid}


def synthetic_client(cid: int, model_name: str, n: int = 40, classes: int = 10, seed: int = 0) -> Client:
    """A client with random uint8 images and labels."""
    g = torch.Generator().manual_seed(seed + cid)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Client(cid=cid, model_name=model_name, data=ClientData(x, y, x[: n // 2], y[: n // 2]))


def make_algorithm(cls=None, **flat):
    """An algorithm instance with set-up clients (one per model in `models`); `cls` overrides
    the registry lookup (for an algorithm not registered yet)."""
    config = build_config({"device": "cpu", "augment": False, "batch_size": 16, **flat})
    env = Environment.without_data(config.num_classes, torch.device("cpu"))
    algorithm = (cls or REGISTRY[config.run.algorithm])(config, env)
    clients = [synthetic_client(k, m) for k, m in enumerate(config.client_models())]
    for c in clients:
        algorithm.setup_client(c)
    return algorithm, clients


def placed(placement: str = "head", rank: int = 4, **knobs: object) -> Placement:
    """A FedLoRA placement bound to the parameters given here (the others at their defaults)."""
    from workbench.algorithms.fedlora.params import FedLoRAParams
    from workbench.algorithms.fedlora.placements import placement_for

    return placement_for(FedLoRAParams(adapter_placement=placement, rank=rank, **knobs))
