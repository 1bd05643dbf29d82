"""A run directory on disk: config.json, results.csv, events.csv and summary.json written whole
(`workbench.core.files`) and read back with a damaged file named and the way to mend it; the
checks that a folder holds a run of these parameters. Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core import files
from workbench.core.errors import DamagedFileError
from workbench.core.facts import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVENTS_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
)
from workbench.core.results import COST_COLUMNS, Event, events_frame
from workbench.core.summary import summarize


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
