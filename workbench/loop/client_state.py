"""A client's state as files hold it: its modules as state dicts, everything else as it is.
Checkpoints (`workbench.loop.checkpoint`), the hot-client store (`workbench.loop.store`) and
Flower's nodes (`workbench.flower.node`) all save and restore clients through these two."""

from __future__ import annotations

from typing import Any

from torch import nn

from workbench.algorithms import Client


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
