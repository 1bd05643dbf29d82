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
from workbench.core.errors import UserError
from workbench.core.facts import CHECKPOINT_FILE
from workbench.core.results import Event, Row, config_differences

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


def save(
    path: Path,
    round_: int,
    config_flat: dict,
    algorithm: Algorithm,
    clients: list[Client],
    server: dict,
    ledger: Any,
    rows: list[Row],
    events: list[Event] | None = None,
) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    payload = {
        "round": round_,
        "config": config_flat,
        "server": server,
        "algorithm": algorithm.state_dict(),
        "clients": {c.cid: client_state(c) for c in clients},
        "ledger": dataclasses.asdict(ledger),
        "rows": [dataclasses.asdict(r) for r in rows],
        "events": [dataclasses.asdict(e) for e in events or []],
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(
    path: Path,
    config_flat: dict,
    algorithm: Algorithm,
    clients: list[Client],
    device: torch.device,
    materialize: Callable[[Client], None],
) -> tuple[int, dict, dict, list[Row], list[Event]]:
    """Restore clients and algorithm; return (round done, server state, ledger fields, rows,
    events). Clients saved with state are set up (`materialize`) before their weights are loaded."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload["config"] != config_flat:
        changed = "; ".join(config_differences(payload["config"], config_flat))
        raise UserError(
            f"checkpoint {path} was written by a run with other parameters "
            f"({changed}); use another output folder or remove the checkpoint"
        )
    algorithm.load_state_dict(payload["algorithm"])
    for client in clients:
        saved = payload["clients"][client.cid]
        if saved:
            materialize(client)
            load_client_state(client, saved)
    rows = [Row(**r) for r in payload["rows"]]
    events = [Event(**e) for e in payload.get("events", [])]  # none in older checkpoints
    return payload["round"], payload["server"], payload["ledger"], rows, events
