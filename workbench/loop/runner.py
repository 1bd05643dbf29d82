"""The in-process runner: one experiment's rounds, checkpoints and run directory.

`run_experiment` loads data and runs the loop; `run_loop` runs the rounds over prepared clients
(the benchmark harness reuses it). The round pieces themselves live in `workbench.loop.rounds`,
which Flower's apps share. Refused uploads are events of the run (`events.csv`, a `refused`
column, the summary's `refused`); a round whose every upload is refused stops the run with
RunStoppedError after writing every completed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.algorithms import REGISTRY, Algorithm, Client, Environment
from workbench.config import ExperimentConfig, stored_config
from workbench.core import files
from workbench.core.accounting import Ledger
from workbench.core.errors import UserError
from workbench.core.facts import SUMMARY_FILE, TABLE_FILE, TIMING_FILE
from workbench.core.results import COST_COLUMNS, Event, events_frame, to_frame
from workbench.core.run_files import (
    check_run_dir,
    config_differences,
    read_config,
    read_events,
    read_run,
    read_summary,
    write_run,
)
from workbench.core.summary import summarize
from workbench.loop import checkpoint, privacy, tracking
from workbench.loop.attacks import refusal_advice
from workbench.loop.devices import Devices, devices_for
from workbench.loop.rounds import (
    MakeLive,
    evaluate_all,
    evaluates,
    evaluation_panel,
    live_maker,
    prepare,
    run_round,
)
from workbench.loop.server_round import RoundRefusedError
from workbench.loop.store import SPILL_FOLDER, ClientStore

# progress(round, rounds, metrics) after each evaluated round; metrics: "accuracy" (the round's
# mean), "cum_train_flops", "cum_bytes_up", "cum_bytes_down" (all clients, so far) and "rows"
# (the round's Row records, from which core.diagnostics.brief draws its line)
Progress = Callable[[int, int, dict], None]


class StopRun(Exception):
    """Raised by a progress callback to end the run after this round, keeping every evaluated
    round: the run is written as stopped early, with this message as the summary's `stopped`
    (tune's pruner stops hopeless trials this way)."""


@dataclass
class RunResult:
    """A finished run: its config, its tidy table, its summary and where it was written."""

    config: ExperimentConfig
    table: pd.DataFrame
    summary: dict
    run_dir: Path | None = None


class RunStoppedError(UserError):
    """A run stopped before its last round; `result` holds every completed round."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def _finished(run_dir: Path, config: ExperimentConfig) -> RunResult | None:
    """The stored result when run_dir already holds a finished run of this exact config (one
    stored before a parameter was added has it at its default)."""
    if not (run_dir / TABLE_FILE).exists():
        return None
    flat = stored_config(read_config(run_dir))
    if flat != config.to_flat():
        raise UserError(
            f"output folder {run_dir} already holds results of other parameters "
            f"({'; '.join(config_differences(flat, config.to_flat()))}); choose "
            f"another output folder (nothing there was changed)"
        )
    _, table = read_run(run_dir)
    stopped = read_summary(run_dir).get("stopped") if (run_dir / SUMMARY_FILE).exists() else None
    summary = summarize(
        table, read_events(run_dir), stopped, config.federation.num_clients, config.privacy.delta
    )
    return RunResult(config=config, table=table, summary=summary, run_dir=run_dir)


def run_experiment(
    config: ExperimentConfig, out_dir: str | Path | None = None, progress: Progress | None = None
) -> RunResult:
    """Run one experiment end to end; with out_dir, write its run directory and checkpoints
    (resuming from the last checkpoint, or returning the stored result if it already finished)."""
    run_dir = Path(out_dir) if out_dir is not None else None
    tracking.check_available(config.run.track)  # a missing library is named before data loads
    privacy.check_available(config)
    if config.run.track != "none" and config.run.track_uri == tracking.AUTO:
        tracking.store_root(run_dir)  # refuses a tracked run with nowhere to write
    if run_dir is not None:
        if (done := _finished(run_dir, config)) is not None:  # other parameters are named first
            return done
        check_run_dir(run_dir)  # a damaged file is named before any data loads
    started = time.perf_counter()
    clients, env = prepare(config)
    result = run_loop(config, clients, env, run_dir, progress)
    if run_dir is not None:  # sweeps divide this by their wall time (their efficiency)
        seconds = round(time.perf_counter() - started, 3)
        files.write_json(run_dir / TIMING_FILE, {"experiment_s": seconds})
    return result


def run_loop(
    config: ExperimentConfig,
    clients: list[Client],
    env: Environment,
    run_dir: Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """The rounds of one experiment over prepared clients (resuming from a checkpoint in run_dir)."""
    algorithm = REGISTRY[config.run.algorithm](config, env)
    server, ledger = algorithm.initial_server_state(), Ledger()
    ckpt = run_dir / checkpoint.CHECKPOINT_FILE if run_dir is not None else None
    hot = config.federation.hot_clients
    store = (
        ClientStore(algorithm, hot, run_dir / SPILL_FOLDER if run_dir is not None else None) if hot else None
    )
    make_live = live_maker(algorithm, store)
    devices = devices_for(config.devices, config.run.seed, len(clients))
    try:
        return _rounds(
            config, clients, algorithm, server, ledger, ckpt, run_dir, progress, store, make_live, devices
        )
    finally:
        if store is not None:  # an unfinished run's checkpoint keeps the files it refers to
            store.close(checkpoint_kept=ckpt is not None and ckpt.exists())


def _rounds(
    config: ExperimentConfig,
    clients: list[Client],
    algorithm: Algorithm,
    server: dict,
    ledger: Ledger,
    ckpt: Path | None,
    run_dir: Path | None,
    progress: Progress | None,
    store: ClientStore | None,
    make_live: MakeLive,
    devices: Devices | None,
) -> RunResult:
    """run_loop's rounds, with client state in `store` when there is one (given live state by
    `make_live`) and the simulated devices when the config has them."""
    rows: list = []
    events: list[Event] = []
    start = 1
    if ckpt is not None and ckpt.exists():
        done_round, server, ledger_fields, rows, events = checkpoint.load(
            ckpt, config.to_flat(), algorithm, clients, algorithm.env.device, make_live, store
        )
        ledger, start = Ledger(**ledger_fields), done_round + 1
    if store is not None:
        store.tidy()  # files an interrupted run wrote after its last checkpoint are never read
    ledger.timed = devices is not None
    rounds = config.federation.rounds
    every_ckpt = config.run.checkpoint_every if run_dir is not None else 0
    for round_ in range(start, rounds + 1):
        try:
            server = run_round(algorithm, clients, server, round_, ledger, events, devices, make_live)
        except RoundRefusedError as error:
            _stop(config, run_dir, rows, events, error)
        if evaluates(config, round_):
            panel = evaluation_panel(config, round_)
            new_rows = evaluate_all(algorithm, clients, ledger, round_, make_live, panel)
            rows.extend(new_rows)
            try:
                _report(progress, round_, rounds, new_rows, rows)
            except StopRun as stop:
                return _finish(config, run_dir, rows, events, stopped=str(stop))
        if every_ckpt and round_ % every_ckpt == 0 and round_ < rounds:
            assert run_dir is not None and ckpt is not None  # every_ckpt is 0 without a run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save(
                ckpt, round_, config.to_flat(), algorithm, clients, server, ledger, rows, events, store
            )
    return _finish(config, run_dir, rows, events)


def _report(progress: Progress | None, round_: int, rounds: int, new_rows: list, rows: list) -> None:
    """Tell the progress callback this round's mean test and validation accuracy and the
    cumulative costs of all clients so far."""
    if progress is None:
        return
    values = {
        "accuracy": float(np.mean([r.accuracy for r in new_rows])),
        "val_accuracy": float(np.mean([r.val_accuracy for r in new_rows])),  # NaN without a split
        **{f"cum_{c}": sum(getattr(r, c) for r in rows) for c in COST_COLUMNS},
        "rows": new_rows,  # this round's records, for diagnostics (core.diagnostics.brief)
    }
    progress(round_, rounds, values)


def _finish(
    config: ExperimentConfig,
    run_dir: Path | None,
    rows: list,
    events: list[Event],
    stopped: str | None = None,
) -> RunResult:
    """The run's result, written to run_dir when there is one (the checkpoint is then removed)."""
    table = privacy.with_epsilon(to_frame(rows), config)
    if run_dir is not None:
        write_run(run_dir, config.to_flat(), table, events, stopped)
        (run_dir / checkpoint.CHECKPOINT_FILE).unlink(missing_ok=True)  # it has served its purpose
    summary = summarize(
        table, events_frame(events), stopped, config.federation.num_clients, config.privacy.delta
    )
    tracking.track_run(config.to_flat(), table, events_frame(events), summary, run_dir)
    return RunResult(config=config, table=table, summary=summary, run_dir=run_dir)


def _stop(
    config: ExperimentConfig, run_dir: Path | None, rows: list, events: list[Event], error: RoundRefusedError
) -> None:
    """Write every completed round, then raise RunStoppedError saying why and what to do."""
    result = _finish(config, run_dir, rows, events, stopped=str(error))
    evaluated = len({r.round for r in rows})
    kept = (
        f"its results so far ({evaluated} evaluated round(s)) and every refusal (events.csv) are in {run_dir}"
        if run_dir is not None
        else f"its results so far ({evaluated} evaluated round(s)) are in this error's result"
    )
    raise RunStoppedError(f"run stopped at {error}; {kept}. {refusal_advice(config)}", result) from None
