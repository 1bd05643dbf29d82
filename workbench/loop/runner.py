"""The in-process runner: one experiment's rounds, checkpoints and run directory.

`run_experiment` loads data and runs the loop; `run_loop` runs the rounds over prepared clients
(the benchmark harness reuses it). The round pieces themselves live in `workbench.loop.rounds`,
which Flower's apps share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.algorithms import REGISTRY, Client, Environment
from workbench.core.accounting import Ledger
from workbench.config import ExperimentConfig
from workbench.core.results import TABLE_FILE, read_run, summarize, to_frame, write_run
from workbench.loop import checkpoint
from workbench.loop.rounds import evaluate_all, evaluates, make_clients, materialize, resolve_device, run_round

Progress = Callable[[int, int, dict], None]


@dataclass
class RunResult:
    """A finished run: its config, its tidy table, its summary and where it was written."""

    config: ExperimentConfig
    table: pd.DataFrame
    summary: dict
    run_dir: Path | None = None


def _finished(run_dir: Path, config: ExperimentConfig) -> RunResult | None:
    """The stored result when run_dir already holds a finished run of this exact config."""
    if not (run_dir / TABLE_FILE).exists():
        return None
    flat, table = read_run(run_dir)
    if flat != config.to_flat():
        raise ValueError(f"{run_dir} already holds results of other parameters; choose another "
                         f"output directory (nothing there was changed)")
    return RunResult(config=config, table=table, summary=summarize(table), run_dir=run_dir)


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None,
                   progress: Progress | None = None) -> RunResult:
    """Run one experiment end to end; with out_dir, write its run directory and checkpoints
    (resuming from the last checkpoint, or returning the stored result if it already finished)."""
    run_dir = Path(out_dir) if out_dir is not None else None
    if run_dir is not None and (done := _finished(run_dir, config)) is not None:
        return done
    device = resolve_device(config.run.device)
    clients, env = make_clients(config, device)
    return run_loop(config, clients, env, run_dir, progress)


def run_loop(config: ExperimentConfig, clients: list[Client], env: Environment,
             run_dir: Path | None = None, progress: Progress | None = None) -> RunResult:
    """The rounds of one experiment over prepared clients (resuming from a checkpoint in run_dir)."""
    algorithm = REGISTRY[config.run.algorithm](config, env)
    server, ledger, rows, start = algorithm.initial_server_state(), Ledger(), [], 1
    ckpt = run_dir / checkpoint.CHECKPOINT_FILE if run_dir is not None else None
    if ckpt is not None and ckpt.exists():
        done_round, server, ledger_fields, rows = checkpoint.load(
            ckpt, config.to_flat(), algorithm, clients, env.device, lambda c: materialize(algorithm, c))
        ledger, start = Ledger(**ledger_fields), done_round + 1
    rounds = config.federation.rounds
    every_ckpt = config.run.checkpoint_every if run_dir is not None else 0
    for round_ in range(start, rounds + 1):
        server = run_round(algorithm, clients, server, round_, ledger)
        if evaluates(config, round_):
            new_rows = evaluate_all(algorithm, clients, ledger, round_)
            rows.extend(new_rows)
            if progress is not None:
                progress(round_, rounds, {"accuracy": float(np.mean([r.accuracy for r in new_rows]))})
        if every_ckpt and round_ % every_ckpt == 0 and round_ < rounds:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save(ckpt, round_, config.to_flat(), algorithm, clients, server, ledger, rows)
    table = to_frame(rows)
    if run_dir is not None:
        write_run(run_dir, config.to_flat(), table)
        ckpt.unlink(missing_ok=True)  # the results are written; the checkpoint has served its purpose
    return RunResult(config=config, table=table, summary=summarize(table), run_dir=run_dir)
