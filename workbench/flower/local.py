"""Flower's simulation engine (Ray backend) on this machine, from Python.

`simulate(config, out_dir)` runs the same ServerApp and ClientApp a deployment runs, with one
virtual SuperNode per client, and returns the run like `workbench.loop.runner.run_experiment`.
(`flwr run workbench/flower/app` is the CLI route to the same apps; see docs/flower.md.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.config import ExperimentConfig
from workbench.flower.client_app import make_client_app
from workbench.flower.server_app import make_server_app
from workbench.flower.settings import FlowerSettings, to_run_config
from workbench.core.facts import TABLE_FILE
from workbench.core.results import read_run, summarize
from workbench.loop.runner import RunResult


def backend_config(cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Ray backend settings: CPU-only clients; quiet Ray logs."""
    if cpus_per_client <= 0:
        raise ValueError(f"cpus_per_client={cpus_per_client} must be > 0")
    return {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            "init_args": {"logging_level": "error", "log_to_driver": False}}


def simulate(config: ExperimentConfig, out_dir: str | Path, *, cpus_per_client: float = 1.0,
             timeout: float = 600.0, faults: Mapping[int, str] | None = None,
             state_dir: str | Path | None = None, verbose: bool = False) -> RunResult:
    """Run `config` on Flower's simulation engine; write and return its run directory.

    The virtual SuperNodes keep their clients' state under state_dir (default: a temporary
    folder removed afterwards); faults corrupts some clients' uploads (testing only).
    """
    from flwr.simulation import run_simulation

    run_dir = Path(out_dir).expanduser().resolve()
    settings = FlowerSettings(out_dir=str(run_dir), timeout=timeout, wait_nodes=timeout)
    run_config = to_run_config(config, settings)
    with tempfile.TemporaryDirectory(prefix="workbench-flower-nodes-") as scratch:
        nodes_dir = str(state_dir) if state_dir is not None else scratch
        run_simulation(server_app=make_server_app(run_config),
                       client_app=make_client_app(run_config, nodes_dir, faults),
                       num_supernodes=config.federation.num_clients,
                       backend_name="ray", backend_config=backend_config(cpus_per_client),
                       verbose_logging=verbose)
    if not (run_dir / TABLE_FILE).exists():
        raise RuntimeError(f"the Flower simulation ended without writing {run_dir}; see its log")
    _, table = read_run(run_dir)
    return RunResult(config=config, table=table, summary=summarize(table), run_dir=run_dir)
