"""Resumable checkpoints of a run: server state, client states, open costs and rows so far.

All randomness of a run is derived from (seed, round, client), so no RNG state is needed: a
run resumed after round t computes exactly what the uninterrupted run computes. Checkpoints
hold only tensors and plain containers and are loaded with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.algorithms import Algorithm, Client
from workbench.core.facts import CHECKPOINT_FILE
from workbench.core.results import Row

__all__ = ["CHECKPOINT_FILE", "client_state", "load", "load_client_state", "save"]



def client_state(client: Client) -> dict[str, Any]:
    """A client's state with modules replaced by their state dicts."""
    return {k: v.state_dict() if isinstance(v, nn.Module) else v for k, v in client.state.items()}


def load_client_state(client: Client, saved: dict[str, Any]) -> None:
    """Restore a client's state in place (modules keep their structure, weights are loaded);
    entries an algorithm adds after set-up (e.g. received prototypes) are restored as saved."""
    missing = set(client.state) - set(saved)
    if missing:
        raise ValueError(f"checkpoint lacks client {client.cid} state {sorted(missing)}")
    for key, value in saved.items():
        if isinstance(client.state.get(key), nn.Module):
            client.state[key].load_state_dict(value)
        else:
            client.state[key] = value


def save(path: Path, round_: int, config_flat: dict, algorithm: Algorithm, clients: list[Client],
         server: dict, ledger: Any, rows: list[Row]) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    payload = {"round": round_, "config": config_flat, "server": server,
               "algorithm": algorithm.state_dict(),
               "clients": {c.cid: client_state(c) for c in clients},
               "ledger": dataclasses.asdict(ledger), "rows": [dataclasses.asdict(r) for r in rows]}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path, config_flat: dict, algorithm: Algorithm, clients: list[Client],
         device: torch.device, materialize: Callable[[Client], None]) -> tuple[int, dict, dict, list[Row]]:
    """Restore clients and algorithm; return (round done, server state, ledger fields, rows).
    Clients saved with state are set up (`materialize`) before their weights are loaded."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload["config"] != config_flat:
        changed = sorted(k for k in set(payload["config"]) | set(config_flat)
                         if payload["config"].get(k) != config_flat.get(k))
        raise ValueError(f"{path} was written by a run with other parameters ({changed}); "
                         f"use another --out or remove the checkpoint")
    algorithm.load_state_dict(payload["algorithm"])
    for client in clients:
        saved = payload["clients"][client.cid]
        if saved:
            materialize(client)
            load_client_state(client, saved)
    rows = [Row(**r) for r in payload["rows"]]
    return payload["round"], payload["server"], payload["ledger"], rows
