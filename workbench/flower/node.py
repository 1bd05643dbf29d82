"""A SuperNode's side: its client, rebuilt from config and partition, with node-local state.

Each ClientApp call rebuilds the client from what every process can reproduce (the dataset,
the seeded partition, the seeded set-up of `Algorithm.setup_client`) and then restores the
state it left on this node's disk after its last participation, in the checkpoint format of
`workbench.loop.checkpoint`. The private model therefore stays on the node: it is written to and read
from local storage, never put into a message.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.algorithms import REGISTRY, Algorithm, Client, Environment
from workbench.config import ExperimentConfig, build_config
from workbench.core import files
from workbench.core.data import ClientData, SharedClientData
from workbench.loop.client_state import client_state, load_client_state
from workbench.loop.rounds import make_clients, resolve_device

STATE_ROOT_ENV = "WORKBENCH_FLOWER_STATE"  # where nodes keep client state when not configured


@dataclass
class NodeClient:
    """A ready client on this node: the algorithm instance and the client it drives."""

    algorithm: Algorithm
    client: Client
    state_file: Path


@functools.lru_cache(maxsize=2)
def _partitioned(flat_json: str) -> tuple[list[tuple[str, ClientData | SharedClientData]], Environment]:
    """Every client's (model name, data), loaded and partitioned once per process and run: a
    simulation worker serves many clients of one run."""
    config = build_config(json.loads(flat_json))
    clients, env = make_clients(config, resolve_device(config.run.device))
    return [(c.model_name, c.data) for c in clients], env


def client_data(config: ExperimentConfig, cid: int) -> tuple[str, ClientData | SharedClientData, Environment]:
    """(model name, data, environment) of one client: the whole dataset is partitioned exactly
    as in-process, and this client's part is served."""
    clients, env = _partitioned(json.dumps(config.to_flat(), sort_keys=True))
    model_name, data = clients[cid]
    return model_name, data, env


def state_root(node_config_dir: str | None, run_id: int) -> Path:
    """The node-local folder of one run's client state."""
    default = Path(tempfile.gettempdir()) / "workbench-flower-state"
    base = node_config_dir or os.environ.get(STATE_ROOT_ENV) or default
    return Path(base).expanduser() / f"run-{run_id}"


def open_client(config: ExperimentConfig, cid: int, root: Path) -> NodeClient:
    """The client `cid` as the in-process loop would hold it: set up, then its saved state."""
    model_name, data, env = client_data(config, cid)
    algorithm = REGISTRY[config.run.algorithm](config, env)
    client = Client(cid=cid, model_name=model_name, data=data)
    algorithm.setup_client(client)
    state_file = root / f"client-{cid}.pt"
    if state_file.exists():
        saved = torch.load(state_file, map_location=env.device, weights_only=True)
        load_client_state(client, saved)
    return NodeClient(algorithm=algorithm, client=client, state_file=state_file)


def save_client(node: NodeClient) -> None:
    """Persist the client's state on this node, atomically (a crash keeps the previous one)."""
    with files.replacing(node.state_file) as tmp, open(tmp, "wb") as handle:
        torch.save(client_state(node.client), handle)
