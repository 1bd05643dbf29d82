"""Flower run config ↔ workbench config: one flat mapping carries both.

A Flower run config (`[tool.flwr.app.config]`, `flwr run --run-config`, or the dict a Python
caller passes) holds the workbench's flat parameters under their usual names plus a few
Flower-side keys with dashes (`out-dir`, `timeout`, `wait-nodes`). The workbench part goes through
`build_config`, so a bad value is refused with the same message as on the CLI. Flower's run
config accepts only bool/int/float/str, so list parameters travel comma-separated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.config import ConfigError, ExperimentConfig, build_config
from workbench.flower.messages import PARTITION_ID

OUT_DIR, TIMEOUT, WAIT_NODES = "out-dir", "timeout", "wait-nodes"


@dataclass(frozen=True)
class FlowerSettings:
    """Where the ServerApp writes, and how long it waits for replies and for nodes."""

    out_dir: str = ""  # the run directory the ServerApp writes: required, absolute
    timeout: float = 3600.0  # seconds to wait for the replies of one round trip
    wait_nodes: float = 120.0  # seconds to wait until every client's SuperNode is connected


SETTING_HELP = {
    OUT_DIR: "ABSOLUTE run directory the ServerApp writes (required)",
    TIMEOUT: "seconds to wait for the replies of one round trip",
    WAIT_NODES: "seconds to wait until every client's SuperNode is connected",
}
_DEFAULTS = FlowerSettings()
_FIELDS = {OUT_DIR: "out_dir", TIMEOUT: "timeout", WAIT_NODES: "wait_nodes"}


def _setting(key: str, value: Any) -> Any:
    """One Flower-side value, checked."""
    if key == OUT_DIR:
        if not isinstance(value, str):
            raise ConfigError(f"run config {key}={value!r}: expected a path string")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"run config {key}={value!r}: expected a number of seconds > 0")
    return float(value)


def split_run_config(run_config: Mapping[str, Any]) -> tuple[ExperimentConfig, FlowerSettings]:
    """Validate a run config: workbench parameters → ExperimentConfig, the rest → settings."""
    flat = {k: v for k, v in run_config.items() if k not in _FIELDS}
    chosen = {_FIELDS[k]: _setting(k, v) for k, v in run_config.items() if k in _FIELDS}
    return build_config(flat), FlowerSettings(**{**vars(_DEFAULTS), **chosen})


def to_run_config(config: ExperimentConfig, settings: FlowerSettings = _DEFAULTS) -> dict[str, Any]:
    """A Flower run config (bool/int/float/str values only) that rebuilds config and settings."""
    flat = {k: ",".join(v) if isinstance(v, list) else v for k, v in config.to_flat().items()}
    return {**flat, OUT_DIR: settings.out_dir, TIMEOUT: settings.timeout, WAIT_NODES: settings.wait_nodes}


def partition_id(node_config: Mapping[str, Any], num_clients: int) -> int:
    """The client id a SuperNode serves: its `partition-id`, checked against the run."""
    if PARTITION_ID not in node_config:
        raise ConfigError(
            f"node config {dict(node_config)} lacks partition-id; start the "
            f"SuperNode with --node-config "
            f"'partition-id=K num-partitions={num_clients}'"
        )
    raw = node_config[PARTITION_ID]
    try:
        cid = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"node config partition-id={raw!r}: expected an integer") from None
    if not 0 <= cid < num_clients:
        raise ConfigError(
            f"node config partition-id={cid} is out of range: the run has "
            f"num_clients={num_clients}, so it must be in 0..{num_clients - 1}"
        )
    declared = node_config.get("num-partitions")
    if declared is not None and int(declared) != num_clients:
        raise ConfigError(
            f"node config num-partitions={declared} differs from the run's num_clients={num_clients}"
        )
    return cid


def app_config_lines() -> list[str]:
    """The `[tool.flwr.app.config]` entries of the app's pyproject: every flat parameter at its
    default, with its help (the committed file is checked equal to this)."""
    from workbench.config import build_config, parameter_table

    lines, table = [], parameter_table()
    for key, value in to_run_config(build_config({})).items():
        literal = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else (f'"{value}"' if isinstance(value, str) else repr(value))
        )
        help_ = table[key][1].metadata["help"] if key in table else SETTING_HELP[key]
        lines.append(f"{key} = {literal}  # {help_}")
    return lines
