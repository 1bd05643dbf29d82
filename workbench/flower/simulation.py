"""Flower's simulation engine (Ray backend) on this machine, from Python.

`simulate(config, out_dir)` runs the same ServerApp and ClientApp a deployment runs, with one
virtual SuperNode per client, and returns the run like `workbench.loop.runner.run_experiment`.
(`flwr run workbench/flower/app` is the CLI route to the same apps; see docs/flower.md.)

Before Ray starts, `simulate` checks what the in-process runner checks before its first round
(`workbench.loop.rounds.prepare`: the device, the dataset, a partition that leaves no client
empty; the parameters and the adapter's homogeneity are checked by `build_config`), so such a
mistake is the in-process message at once, not a ClientApp failure once Ray runs.
Ray is started here, not by Flower (Flower reuses a running Ray): on loopback only, with
start-up budgets for a busy machine, and retried when a start times out, so a slow start is a
wait and a failed one is one clear error, never a hang or a half-started cluster.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import ExperimentConfig
from workbench.core.facts import TABLE_FILE
from workbench.core.run_files import read_run, read_summary
from workbench.flower.settings import FlowerSettings, to_run_config
from workbench.loop.attacks import refusal_advice
from workbench.loop.rounds import prepare
from workbench.loop.runner import RunResult, RunStoppedError

if TYPE_CHECKING:
    from workbench.flower.client_app import Tamper

RAY_START_BUDGET_S = 300.0  # all start attempts together; one attempt is ≈ 30 s at most in Ray
RAY_ENV = {
    # Ray rewrites 127.0.0.1 to the machine's interface address unless this is 0
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # raylet registration and GCS requests: Ray's defaults (10–60 s) are short on a loaded machine
    "RAY_raylet_start_wait_time_s": "120",
    "RAY_gcs_server_request_timeout_seconds": "120",
}


def backend_config(cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Ray backend settings: CPU-only clients; quiet Ray logs."""
    if cpus_per_client <= 0:
        raise ValueError(f"cpus_per_client={cpus_per_client} must be > 0")
    return {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": {"logging_level": "error", "log_to_driver": False},
    }


@contextmanager
def ray_environment() -> Iterator[None]:
    """RAY_ENV and the driver's import path set for Ray's processes (they inherit the
    environment at start), the caller's values restored.

    Actors must import this package like the driver. Flower's Ray backend would pass the path
    as a job runtime_env; then no worker Ray started in advance matches, and every actor waits
    for a new worker process (8 s more for two actors on 2 cores). Inherited, it needs none."""
    path = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    variables = {**RAY_ENV, "PYTHONPATH": path}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _descendants() -> set[int]:
    """PIDs of every process this one started, directly or not."""
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def _stop(pids: set[int]) -> None:
    """End the given processes (what a failed Ray start left behind), waiting a little."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
            procs[-1].kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def start_ray(init_args: Mapping[str, Any], budget_s: float = RAY_START_BUDGET_S) -> None:
    """ray.init (unless Ray runs already), retried until budget_s; RuntimeError if it never starts.

    A failed attempt's processes are stopped by PID before the next one.
    """
    import ray

    if ray.is_initialized():
        return
    deadline, attempts, last = time.monotonic() + budget_s, 0, None
    while attempts == 0 or time.monotonic() < deadline:
        attempts += 1
        before = _descendants()
        try:
            ray.init(include_dashboard=False, **init_args)
            return
        except (TypeError, ValueError):  # a wrong argument: retrying cannot help
            raise
        except Exception as error:  # Ray raises a bare Exception when a node start times out
            last = error
            ray.shutdown()
            _stop(_descendants() - before)
    raise RuntimeError(
        f"Ray did not start on this machine: {attempts} attempt(s) within {budget_s:.0f} s, the "
        f"last failing with {type(last).__name__}: {last}. The machine is probably overloaded; "
        f"retry when it is quieter, or give start_ray a larger budget_s."
    )


def simulate(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    cpus_per_client: float = 1.0,
    timeout: float = 600.0,
    tamper: Tamper | None = None,
    state_dir: str | Path | None = None,
    verbose: bool = False,
    ray_budget_s: float = RAY_START_BUDGET_S,
) -> RunResult:
    """Run `config` on Flower's simulation engine; write and return its run directory.

    The virtual SuperNodes keep their clients' state under state_dir (default: a temporary
    folder removed afterwards); tamper(cid, upload) replaces what a client sends (tests).
    """
    run_dir = Path(out_dir).expanduser().resolve()
    settings = FlowerSettings(out_dir=str(run_dir), timeout=timeout, wait_nodes=timeout)
    run_config = to_run_config(config, settings)
    backend = backend_config(cpus_per_client)
    prepare(config)  # refused here, as in-process, before Flower is imported and Ray starts
    import ray
    from flwr.simulation import run_simulation

    from workbench.flower.client_app import make_client_app
    from workbench.flower.server_app import make_server_app

    with tempfile.TemporaryDirectory(prefix="workbench-flower-nodes-") as scratch, ray_environment():
        nodes_dir = str(state_dir) if state_dir is not None else scratch
        start_ray(backend["init_args"], ray_budget_s)
        try:
            run_simulation(
                server_app=make_server_app(run_config),
                client_app=make_client_app(run_config, nodes_dir, tamper),
                num_supernodes=config.federation.num_clients,
                backend_name="ray",
                backend_config=backend,
                verbose_logging=verbose,
            )
        finally:
            ray.shutdown()  # Flower shuts Ray down when it ends normally; this covers the rest
    return _result(config, run_dir)


def _result(config: ExperimentConfig, run_dir: Path) -> RunResult:
    """The run directory the ServerApp wrote, as a RunResult (RunStoppedError if it stopped)."""
    if not (run_dir / TABLE_FILE).exists():
        raise RuntimeError(f"the Flower simulation ended without writing {run_dir}; see its log")
    _, table = read_run(run_dir)
    result = RunResult(config=config, table=table, summary=read_summary(run_dir), run_dir=run_dir)
    if result.summary.get("stopped"):
        raise RunStoppedError(
            f"run stopped at {result.summary['stopped']}; the evaluated rounds "
            f"before it are in {run_dir}, every refusal in events.csv. {refusal_advice(config)}",
            result,
        )
    return result
