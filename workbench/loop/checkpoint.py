"""Resumable checkpoints of a run: server state, client states, open costs and rows so far.

All randomness of a run is derived from (seed, round, client), so no RNG state is needed: a
run resumed after round t computes exactly what the uninterrupted run computes. Checkpoints
hold only tensors and plain containers and are loaded with `weights_only=True`. A checkpoint
that cannot be read (cut short, bytes changed) is a DamagedFileError saying to delete it; one
written before a parameter was added is read with that parameter at its default.

With a client store (`federation.hot_clients`, workbench.loop.store) a client whose state is on
disk is not copied: the checkpoint's `spilled` maps it to its file's name and SHA-256 (the file
is never rewritten, and the store keeps it while the latest checkpoint refers to it), and a
resume checks every such file against its hash before the first round; live clients' state is
copied under `clients` as without a store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.algorithms import Algorithm, Client
from workbench.config import stored_config
from workbench.core import files
from workbench.core.errors import DamagedFileError, UserError
from workbench.core.facts import CHECKPOINT_FILE
from workbench.core.results import Event, Row
from workbench.core.run_files import config_differences, restart_remedy
from workbench.loop.client_state import client_state, load_client_state

if TYPE_CHECKING:
    from workbench.loop.store import ClientStore

KEYS = ("round", "config", "server", "algorithm", "clients", "ledger", "rows")

__all__ = ["CHECKPOINT_FILE", "client_state", "load", "load_client_state", "save"]


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
    store: ClientStore | None = None,
) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact); with
    a store, clients whose state is on disk are referred to (`spilled`), not copied, and the
    store is told once the checkpoint is in place (files no checkpoint needs can then go)."""
    spilled = {}
    if store is not None:
        spilled = {c.cid: ref for c in clients if (ref := store.reference(c)) is not None}
    payload = {
        "round": round_,
        "config": config_flat,
        "server": server,
        "algorithm": algorithm.state_dict(),
        "clients": {c.cid: client_state(c) for c in clients if c.cid not in spilled},
        "spilled": spilled,
        "ledger": dataclasses.asdict(ledger),
        "rows": [dataclasses.asdict(r) for r in rows],
        "events": [dataclasses.asdict(e) for e in events or []],
    }
    with files.replacing(path) as tmp, open(tmp, "wb") as handle:  # a handle: torch names no member after tmp
        torch.save(payload, handle)
    if store is not None:
        store.checkpointed(spilled)


def read(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint's payload; DamagedFileError when it cannot be read whole."""
    files.check_archive(path, restart_remedy(path))
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, pickle errors…
        problem = f"torch.load failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}"
        raise DamagedFileError(path, problem, restart_remedy(path)) from None
    missing = [k for k in KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise DamagedFileError(path, f"not a workbench checkpoint: it lacks {missing}", restart_remedy(path))
    return payload


def load(
    path: Path,
    config_flat: dict,
    algorithm: Algorithm,
    clients: list[Client],
    device: torch.device,
    materialize: Callable[[Client], None],
    store: ClientStore | None = None,
) -> tuple[int, dict, dict, list[Row], list[Event]]:
    """Restore clients and algorithm; return (round done, server state, ledger fields, rows,
    events). Clients saved with state are set up (`materialize`) before their weights are
    loaded; the store, first, refers again to the files of the clients on disk, each checked
    against its hash (DamagedFileError naming a missing or changed one, before any round)."""
    payload = read(path, device)
    stored = stored_config(payload["config"])  # parameters added since: at their defaults
    if stored != config_flat:
        changed = "; ".join(config_differences(stored, config_flat))
        raise UserError(
            f"checkpoint {path} was written by a run with other parameters "
            f"({changed}); use another output folder or remove the checkpoint"
        )
    spilled = payload.get("spilled", {})  # none in older checkpoints
    if spilled:
        remedy = f"the checkpoint {path} refers to it: {restart_remedy(path)}"
        if store is None:
            raise DamagedFileError(
                path, "it refers to client files but this run keeps none", restart_remedy(path)
            )
        store.restore(spilled, remedy)
    algorithm.load_state_dict(payload["algorithm"])
    for client in clients:
        saved = payload["clients"].get(client.cid) if client.cid not in spilled else None
        if saved:
            materialize(client)
            load_client_state(client, saved)
    rows = [Row(**r) for r in payload["rows"]]
    events = [Event(**e) for e in payload.get("events", [])]  # none in older checkpoints
    return payload["round"], payload["server"], payload["ledger"], rows, events
