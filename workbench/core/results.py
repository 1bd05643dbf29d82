"""Tidy results: one row per client per evaluated round, written to and read from a run directory.

A run directory holds `config.json` (the resolved flat config), `results.csv` (the table),
`events.csv` (refused uploads: one row each, with what became of the client) and
`summary.json`. Costs in a row cover every round since the client's previous evaluated row, so
their column sums are the run's totals whatever `eval_every` is; so does its `refused` count.
A run that stopped early (every update of a round refused) keeps its completed rounds and says
why in the summary's `stopped`. Beside accuracy and costs a row records how the client trained
and what its method measured (`workbench.core.diagnostics`: optimizer steps per phase, the
update's norm, FedLoRA's adapter contribution), and the summary lists the warnings those
diagnostics raise. Files are replaced whole (write then rename) and a damaged one is named
when read (`workbench.core.files`). This module never imports torch.

Columns of results.csv, one row per client per evaluated round:
- round, client, model, algorithm; participated (sampled in a round this row covers);
- accuracy, loss: the client's deployed model on its local test split;
- val_accuracy, val_loss, num_val: the same on its validation split, held out of its training
  data (`val_fraction`; NaN, NaN, 0 without one, and in tables written before it existed);
- train_loss: mean training loss of its last local phase;
- train_flops, bytes_up, bytes_down (and cum_*): costs since its previous row;
- num_train, num_test; refused: its uploads refused since its previous row;
- local_rounds: rounds it was sampled in since its previous row; local_steps: optimizer steps
  of all its phases since then, and steps_<phase> the same per training phase (FedLoRA:
  steps_model, steps_adapter; 0 where it did not train);
- update_norm: L2 norm of the update its latest upload carried (upload − download where the
  upload mirrors the download, else the upload), empty when it sent nothing;
- a method's own diagnostics, measured on the evaluation pass (FedLoRA: adapter_contribution,
  adapter_weight_norm); a column a method does not report is absent from its table and empty
  where tables of several methods are combined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from workbench.core import files
from workbench.core.diagnostics import DIAGNOSTICS, STEPS_PREFIX, format_warnings, run_warnings
from workbench.core.errors import DamagedFileError, UserError
from workbench.core.facts import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EPSILON,
    EVENTS_FILE,
    REFERENCE_METHOD,
    SUMMARY_FILE,
    TABLE_FILE,
)

COST_COLUMNS = ("train_flops", "bytes_up", "bytes_down")
NO_VALIDATION = math.nan  # a validation column of a client (or run) without a validation split


class Evaluation(NamedTuple):
    """A client's deployed model on its local test split (with the diagnostics its method
    measured in the same pass) and on its validation split."""

    accuracy: float
    loss: float
    diagnostics: Mapping[str, float]
    val_accuracy: float = NO_VALIDATION
    val_loss: float = NO_VALIDATION


@dataclass(frozen=True)
class Row:
    """One client at one evaluated round."""

    round: int
    client: int
    model: str
    algorithm: str
    participated: bool
    accuracy: float
    loss: float
    train_loss: float
    train_flops: int
    bytes_up: int
    bytes_down: int
    num_train: int
    num_test: int
    refused: int = 0  # this client's uploads the server refused since its previous row
    local_rounds: int = 0  # rounds the client was sampled in since its previous row
    local_steps: int = 0  # optimizer steps of all its phases since its previous row
    update_norm: float = math.nan  # L2 norm of the update its latest upload carried
    # validation: samples held out of the client's training data (NaN, 0: no validation split;
    # also every row of tables written before validation existed)
    val_accuracy: float = NO_VALIDATION
    val_loss: float = NO_VALIDATION
    num_val: int = 0
    phase_steps: Mapping[str, int] = field(default_factory=dict)  # → steps_<phase> columns
    diagnostics: Mapping[str, float] = field(default_factory=dict)  # → one column each
    # with the simulated clock on (workbench.loop.devices): sim_seconds, sim_time, missed
    timing: Mapping[str, float] = field(default_factory=dict)  # → one column each


NESTED = ("phase_steps", "diagnostics", "timing")  # Row fields that become columns of their own
ROW_COLUMNS = tuple(f.name for f in fields(Row) if f.name not in NESTED)


@dataclass(frozen=True)
class Event:
    """Something that happened to one client in one round besides training (a refusal)."""

    round: int
    client: int
    event: str  # "refused", "dropped" (out of the round) or "late" (past the round's deadline)
    tensor: str  # the offending tensor, "" when the whole upload was at fault
    reason: str
    action: str  # what became of the client's own state


def events_frame(events: list[Event]) -> pd.DataFrame:
    """Events → DataFrame with the Event columns (also when there are none)."""
    return pd.DataFrame([asdict(e) for e in events], columns=list(Event.__dataclass_fields__))


def _record(row: Row) -> dict[str, Any]:
    """A row as flat columns: steps_<phase> per phase and one column per diagnostic."""
    undeclared = sorted(set(row.diagnostics) - set(DIAGNOSTICS))
    if undeclared:
        raise ValueError(
            f"diagnostics {undeclared} are not declared in workbench.core.diagnostics.DIAGNOSTICS "
            f"(declared: {sorted(DIAGNOSTICS)})"
        )
    record = {name: getattr(row, name) for name in ROW_COLUMNS}
    record.update({f"{STEPS_PREFIX}{phase}": count for phase, count in row.phase_steps.items()})
    record.update(row.diagnostics)
    record.update(row.timing)
    return record


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """Rows → DataFrame with per-client cumulative cost columns (cum_train_flops, …); a phase's
    steps are 0 in rows where the client did not train, a diagnostic is NaN where unmeasured."""
    records = [_record(r) for r in rows]
    extra = list(dict.fromkeys(k for r in records for k in r if k not in ROW_COLUMNS))
    steps = sorted((c for c in extra if c.startswith(STEPS_PREFIX)), key=extra.index)
    frame = pd.DataFrame(records, columns=[*ROW_COLUMNS, *steps, *(c for c in extra if c not in steps)])
    frame[steps] = frame[steps].fillna(0).astype("int64")
    if not rows:  # a run stopped before its first evaluation: typed, empty columns
        counts = (*COST_COLUMNS, "round", "client", "refused", "local_rounds", "local_steps")
        frame = frame.astype({c: "int64" for c in counts})
    frame = frame.sort_values(["round", "client"], kind="stable").reset_index(drop=True)
    for column in COST_COLUMNS:
        frame[f"cum_{column}"] = frame.groupby("client")[column].cumsum()
    return frame


SIM_TIME = "sim_time"  # the simulated clock when a round closed (workbench.loop.devices)
# a row's timing columns, with the clock or dropout on: busy seconds and rounds dropped out of
# or late in since the client's previous row, and the clock
TIMING_COLUMNS = ("sim_seconds", SIM_TIME, "missed")


def mean_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated round: mean client accuracy, the cumulative costs of all clients and, with
    the simulated clock on, the clock when the round closed."""
    validation = {"val_accuracy": ("val_accuracy", "mean")} if has_validation(frame) else {}
    clock = {SIM_TIME: (SIM_TIME, "max")} if SIM_TIME in frame else {}
    per_round = (
        frame.groupby("round")
        .agg(
            accuracy=("accuracy", "mean"),
            **validation,
            **clock,
            train_flops=("train_flops", "sum"),
            bytes_up=("bytes_up", "sum"),
            bytes_down=("bytes_down", "sum"),
        )
        .reset_index()
    )
    for column in COST_COLUMNS:
        per_round[f"cum_{column}"] = per_round[column].cumsum()
    per_round["cum_bytes"] = per_round["cum_bytes_up"] + per_round["cum_bytes_down"]
    return per_round


def has_validation(frame: pd.DataFrame) -> bool:
    """Whether a results table holds validation accuracy (its run had a validation split)."""
    return "val_accuracy" in frame and bool(frame["val_accuracy"].notna().any())


def _validation_summary(per_round: pd.DataFrame) -> dict[str, Any]:
    """Final and best mean validation accuracy (None without a validation split)."""
    if "val_accuracy" not in per_round or per_round.empty:
        return {"final_val_accuracy": None, "best_val_accuracy": None, "best_val_round": None}
    best = per_round.loc[per_round["val_accuracy"].idxmax()]
    return {
        "final_val_accuracy": float(per_round["val_accuracy"].iloc[-1]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_round": int(best["round"]),
    }


def summarize(
    frame: pd.DataFrame,
    events: pd.DataFrame | None = None,
    stopped: str | None = None,
    num_clients: int | None = None,
    dp_delta: float | None = None,
) -> dict[str, Any]:
    """Headline numbers: final and best (over evaluated rounds) mean accuracy, total costs,
    refused uploads, why the run stopped early (None: it ran every round), the warnings its
    diagnostics raise (`workbench.core.diagnostics`), and how many of the federation's clients
    (`num_clients`; without it, those the table holds) the final accuracy is over; a DP run's ε
    with the δ (`dp_delta`) it is spent at."""
    per_round = mean_accuracy(frame)
    accuracy = None
    if not per_round.empty:  # a run stopped in its first rounds has no evaluated round
        best = per_round.loc[per_round["accuracy"].idxmax()]
        accuracy = {
            "final_accuracy": float(per_round["accuracy"].iloc[-1]),
            "best_accuracy": float(best["accuracy"]),
            "best_round": int(best["round"]),
            "rounds": int(per_round["round"].max()),
        }
    return {
        **(accuracy or {"final_accuracy": None, "best_accuracy": None, "best_round": None, "rounds": 0}),
        **_validation_summary(per_round),
        "total_train_flops": int(frame["train_flops"].sum()),
        "total_bytes_up": int(frame["bytes_up"].sum()),
        "total_bytes_down": int(frame["bytes_down"].sum()),
        "total_bytes": int(frame["bytes_up"].sum() + frame["bytes_down"].sum()),
        "refused": _refusals(events) if events is not None else _settled_refusals(frame),
        "stopped": stopped,
        "warnings": run_warnings(frame),
        **_clock_summary(frame, events),
        **(
            {EPSILON: float(frame[EPSILON].iloc[-1]), "dp_delta": dp_delta}
            if EPSILON in frame and len(frame)
            else {}
        ),
        **_panel_summary(frame),
        **_final_clients(frame, num_clients),
    }


def _clock_summary(frame: pd.DataFrame, events: pd.DataFrame | None) -> dict[str, Any]:
    """With the simulated clock on: its reading at the last round and the client-rounds that
    dropped out or were late; nothing otherwise (a run without it summarizes as before)."""
    if SIM_TIME not in frame:
        return {}
    counts = events["event"].value_counts() if events is not None and len(events) else {}
    return {
        "sim_time": float(frame[SIM_TIME].max()) if len(frame) else 0.0,
        "dropped": int(counts.get("dropped", 0)),
        "late": int(counts.get("late", 0)),
    }


def _refusals(events: pd.DataFrame) -> int:
    """Refused uploads among a run's events (not the dropped or late clients)."""
    return int((events["event"] == "refused").sum()) if len(events) else 0


def _panel_summary(frame: pd.DataFrame) -> dict[str, int]:
    """With `eval_clients` below the federation's size, rounds before the last evaluate a panel:
    how many clients those rounds and the last evaluated (nothing when every round evaluated
    the same clients, as in every run of up to `eval_clients` clients)."""
    counts = frame.groupby("round").size() if len(frame) else pd.Series(dtype=int)
    if counts.nunique() < 2:
        return {}
    return {"panel_clients": int(counts.iloc[:-1].min()), "final_clients": int(counts.iloc[-1])}


def _final_clients(frame: pd.DataFrame, num_clients: int | None) -> dict[str, int]:
    """The distinct clients the last evaluated round covered (`final_round_clients`) and the
    federation's (`federation_clients`): fewer when a run evaluating a panel (`eval_clients`)
    stopped before its last round, whose final accuracy is then the panel's."""
    if not len(frame):
        return {"final_round_clients": 0, "federation_clients": num_clients or 0}
    last = frame.loc[frame["round"] == frame["round"].max(), "client"].nunique()
    total = num_clients if num_clients is not None else frame["client"].nunique()
    return {"final_round_clients": int(last), "federation_clients": int(total)}


def _settled_refusals(frame: pd.DataFrame) -> int:
    """Refusals counted in a table's rows (0 for tables written before the column existed)."""
    return int(frame["refused"].sum()) if "refused" in frame else 0


def write_run(
    run_dir: Path,
    config_flat: dict[str, Any],
    frame: pd.DataFrame,
    events: list[Event] | None = None,
    stopped: str | None = None,
) -> dict[str, Any]:
    """Write config, table, events and summary into run_dir; return the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    table = events_frame(events or [])
    summary = summarize(frame, table, stopped, config_flat.get("num_clients"), config_flat.get("dp_delta"))
    files.write_json(run_dir / CONFIG_FILE, config_flat, indent=2, sort_keys=True)
    files.write_table(run_dir / EVENTS_FILE, table)
    files.write_json(run_dir / SUMMARY_FILE, summary, indent=2)
    files.write_table(run_dir / TABLE_FILE, frame)  # last: a run directory with a table is complete
    return summary


# columns of every row in every version of the table: a row cut short lacks some of them
COMPLETE_COLUMNS = (
    "round",
    "client",
    "model",
    "algorithm",
    "participated",
    "num_train",
    "num_test",
    *COST_COLUMNS,
)
CUMULATIVE = tuple(
    f"cum_{c}" for c in COST_COLUMNS
)  # written by to_frame; tables made elsewhere may lack them
EVENT_COMPLETE = ("round", "client", "event", "action")  # `tensor` may be empty


def rerun_remedy(run_dir: Path) -> str:
    """What to do about a damaged file of a run directory."""
    return f"remove the run folder {run_dir} (or give another --out) and run it again"


def restart_remedy(path: Path) -> str:
    """What to do about a damaged checkpoint."""
    return f"delete it to restart this run from round 0 (rm {path}), or give another --out"


def read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The flat config and the results table of a finished run directory (DamagedFileError
    names a file that cannot be read)."""
    return read_config(run_dir), read_table(run_dir)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The flat config of a run directory, as it was stored."""
    return files.read_json(Path(run_dir) / CONFIG_FILE, rerun_remedy(Path(run_dir)), keys=("algorithm",))


def read_table(run_dir: Path) -> pd.DataFrame:
    """The results table of a run directory, checked whole: no row cut short, costs that are
    numbers and add up to their cumulative columns and the summary's totals (a table cut at a
    line's end)."""
    path, remedy = Path(run_dir) / TABLE_FILE, rerun_remedy(Path(run_dir))
    frame = files.read_table(path, remedy, COMPLETE_COLUMNS, CUMULATIVE)
    summary = read_summary(run_dir) if (Path(run_dir) / SUMMARY_FILE).exists() else {}
    costs = [*COST_COLUMNS, *(c for c in CUMULATIVE if c in frame.columns)]
    values = frame[costs].apply(pd.to_numeric, errors="coerce")
    if values.isna().any(axis=None):
        row = int(values.index[values.isna().any(axis=1)][0]) + 2
        raise DamagedFileError(path, f"row {row} holds a cost that is not a number", remedy)
    values = values.astype("int64")  # costs are whole counts (also an empty table's)
    for column in COST_COLUMNS:
        running = values.groupby(frame["client"])[column].cumsum()
        if f"cum_{column}" in values and not (running == values[f"cum_{column}"]).all():
            raise DamagedFileError(path, f"cum_{column} does not add up: cut short?", remedy)
        if summary.get(f"total_{column}", values[column].sum()) != values[column].sum():
            problem = f"{column} does not add up to {SUMMARY_FILE}'s total: cut short?"
            raise DamagedFileError(path, problem, remedy)
    return frame


def check_checkpoint(run_dir: Path) -> None:
    """DamagedFileError when run_dir's checkpoint is not a whole archive (checked without torch)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if path.exists():
        files.check_archive(path, restart_remedy(path))


def check_run_dir(run_dir: Path) -> None:
    """DamagedFileError naming the first file of run_dir that cannot be read, and what to do;
    the checkpoint is checked as an archive, without torch."""
    run_dir = Path(run_dir)
    checks = (
        (CONFIG_FILE, read_config),
        (SUMMARY_FILE, read_summary),
        (TABLE_FILE, read_table),
        (EVENTS_FILE, read_events),
        (CHECKPOINT_FILE, check_checkpoint),
    )
    for name, check in checks:
        if (run_dir / name).exists():
            check(run_dir)


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`name: stored → wanted` for every flat parameter whose values differ."""
    return [
        f"{name}: {stored.get(name, '(absent)')!r} there, {wanted.get(name, '(absent)')!r} here"
        for name in sorted(set(stored) | set(wanted))
        if stored.get(name) != wanted.get(name)
    ]


def read_events(run_dir: Path) -> pd.DataFrame:
    """The events of a run directory (none for runs written before events were recorded)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return events_frame([])
    return files.read_table(path, rerun_remedy(Path(run_dir)), EVENT_COMPLETE, keep_default_na=False)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary.json of a run directory."""
    run_dir = Path(run_dir)
    return files.read_json(run_dir / SUMMARY_FILE, rerun_remedy(run_dir), keys=("final_accuracy",))


def format_summary(summary: dict[str, Any], warnings: bool = True) -> str:
    """A short human-readable summary of one run, its warnings last (unless `warnings` is False)."""
    lines = []
    if summary.get("stopped"):
        lines.append(f"stopped early: {summary['stopped']}")
    if summary["final_accuracy"] is not None:
        covered, total = summary.get("final_round_clients", 0), summary.get("federation_clients", 0)
        over = f" over a panel of {covered:,} of {total:,} clients" if covered < total else ""
        lines.append(
            f"mean accuracy: final {summary['final_accuracy']:.4f}{over}, best "
            f"{summary['best_accuracy']:.4f} (round {summary['best_round']} of "
            f"{summary['rounds']})"
        )
    if summary.get("final_val_accuracy") is not None:
        lines.append(
            f"mean validation accuracy: final {summary['final_val_accuracy']:.4f}, best "
            f"{summary['best_val_accuracy']:.4f} (round {summary['best_val_round']})"
        )
    if summary.get("panel_clients"):
        lines.append(
            f"evaluated: a seeded panel of {summary['panel_clients']:,} clients in rounds before "
            f"the last, all {summary['final_clients']:,} in the last (the final accuracy's)"
        )
    lines += [
        f"training FLOPs: {summary['total_train_flops']:.4g}",
        f"bytes: up {summary['total_bytes_up']:,}, down {summary['total_bytes_down']:,}",
    ]
    if summary.get(EPSILON) is not None:
        delta = summary.get("dp_delta")
        at = f"δ {delta:g}" if delta is not None else "dp_delta"
        lines.append(f"client-level DP: ε {summary[EPSILON]:.4g} spent at {at} (column {EPSILON})")
    if summary.get("refused"):
        lines.append(f"refused uploads: {summary['refused']} (see events.csv)")
    if summary.get("sim_time") is not None:
        lines.append(
            f"simulated time: {summary['sim_time']:.4g} s; dropped out {summary['dropped']}, "
            f"late {summary['late']} (client-rounds, see events.csv)"
        )
    if warnings:
        lines += format_warnings(summary.get("warnings") or [])
    return "\n".join(lines)


def cost_to_target(
    runs: dict[str, pd.DataFrame], target: float, reference: str = REFERENCE_METHOD
) -> pd.DataFrame:
    """Rounds, cumulative FLOPs and bytes each run needed to first reach a target mean accuracy.

    `runs` maps a label (usually the algorithm) to its results table. Costs are summed over all
    clients up to and including the first evaluated round whose mean accuracy ≥ target; runs
    that never reach it are marked `reached=False` with empty costs. Ratios are to `reference`.
    """
    if not 0 < target <= 1:
        raise UserError(f"target={target} must be a mean accuracy in (0, 1]")
    columns = ("round", "cum_train_flops", "cum_bytes_up", "cum_bytes_down", "cum_bytes")
    rows = []
    for label, frame in runs.items():
        per_round = mean_accuracy(frame)
        hit = per_round[per_round["accuracy"] >= target]
        timed = (SIM_TIME,) if SIM_TIME in per_round else ()  # time to target on the clock
        rows.append(
            {
                "run": label,
                "target": target,
                "reached": not hit.empty,
                **{c: float(hit.iloc[0][c]) if not hit.empty else float("nan") for c in (*columns, *timed)},
            }
        )
    table = pd.DataFrame(rows)
    ref = table[(table["run"] == reference) & table["reached"]]
    if not ref.empty:
        for column, name in (("cum_train_flops", "flops"), ("cum_bytes", "bytes"), ("round", "rounds")):
            table[f"{name}_vs_{reference}"] = table[column] / ref.iloc[0][column]
    return table
