"""Unattended grid sweeps: each grid point is one papermill execution of notebooks/fedlora.ipynb.

The spec and its points come from `workbench.lab.sweep.spec`. Each point lives in
`SWEEP/points/<id>/` with its executed notebook, its run directory and a `status.json`;
rerunning skips finished points and re-runs missing or failed ones (a killed point resumes from
its run's checkpoint; a damaged point restarts from scratch: `workbench.lab.sweep.folder`).
The sweep owns its folder while it runs, report included (`workbench.core.folder_lock`), and
replaces its files whole. Points run through `workbench.lab.sweep.dispatch`; the report is
built at the end (`workbench.lab.report.export`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core import files
from workbench.core.facts import SWEEP_FILE, TABLE_FILE
from workbench.core.folder_lock import owned
from workbench.core.run_files import read_run
from workbench.lab.report import provenance
from workbench.lab.report.provenance import efficiency_line
from workbench.lab.report.sweep_tables import REBUILD_RECORD
from workbench.lab.shipped import shipped
from workbench.lab.sweep.dispatch import run_points
from workbench.lab.sweep.executor_base import Execution
from workbench.lab.sweep.folder import ASIDE, POINTS, adopt, chosen, point_state, restart
from workbench.lab.sweep.spec import Point, expand, load_spec, swept_values

NOTEBOOK = shipped("notebooks/fedlora.ipynb")


def collect(sweep_dir: Path, points: list[Point], names: list[str]) -> pd.DataFrame:
    """Every finished point's table, with `point` and the swept parameters as columns."""
    frames = []
    for p in points:
        if point_state(sweep_dir, p)["state"] != "done":
            continue
        _, table = read_run(sweep_dir / POINTS / p.id / "run")
        table.insert(0, "point", p.id)
        for name in names:  # a name this point does not sweep stays empty, not a default
            value = p.swept.get(name)
            table[name] = ",".join(map(str, value)) if isinstance(value, list) else value
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_sweep(
    spec_source: str | Path | Mapping[str, Any],
    out: str | Path,
    workers: int = 1,
    timeout: int = 3600,
    report: bool = True,
    execution: Execution | None = None,
    restart_points: Iterable[str] = (),
) -> Path:
    """Run (or resume) a sweep; return the report's path (or the combined table's without report).

    `execution` picks the executor (default: `workers` local warm kernels); `restart_points`
    names points to run again from scratch. The sweep owns `out` while it runs
    (`workbench.core.folder_lock`): a second sweep on it is refused naming this one."""
    execution = execution or Execution(workers=workers)
    execution.check()
    spec = load_spec(spec_source)
    points = expand(spec)
    again = chosen(points, restart_points)
    with owned(out, "sweep") as sweep_dir:
        run_owned(sweep_dir, spec, points, timeout, execution, again)
        if not report:
            return sweep_dir / TABLE_FILE
        from workbench.lab.report.export import build_report
        from workbench.loop.tracking import track_report

        built = build_report(sweep_dir)
        track_report(sweep_dir, built, [p.flat for p in points])
        return built


def run_owned(
    sweep_dir: Path,
    spec: Mapping[str, Any],
    points: Sequence[Point],
    timeout: int,
    execution: Execution,
    again: Iterable[str] = (),
) -> dict[str, Any]:
    """The sweep in a folder this process owns: restart damaged points (and those in `again`),
    run the rest that are not done, write sweep.json and the combined table; return the record."""
    earlier, restarted = tidy(sweep_dir, points, again)
    started = time.time()
    before = {p.id: point_state(sweep_dir, p) for p in points}  # read once: what to run, what is measured
    todo = [p for p in points if before[p.id]["state"] != "done"]
    print(
        f"sweep: {len(points)} points, {len(points) - len(todo)} already done, {len(todo)} to run", flush=True
    )
    done = [(p, before[p.id]) for p in points if before[p.id]["state"] == "done"]
    measured = [(p.flat, state["seconds"]) for p, state in done if state.get("seconds") is not None]
    efficiency = (
        run_points(sweep_dir, [(p.id, p.flat) for p in todo], NOTEBOOK, timeout, execution, measured)
        if todo
        else earlier.get("efficiency")
    )
    states = [point_record(sweep_dir, p, restarted.get(p.id)) for p in points]
    record = {
        "parameters": spec["parameters"],
        "grid": swept_values(spec),
        "spec": spec,
        "points": states,
        "efficiency": efficiency,
        "provenance": provenance.record(earlier.get("provenance"), started, time.time(), len(todo)),
    }
    files.write_json(sweep_dir / SWEEP_FILE, record, indent=2)
    files.write_table(sweep_dir / TABLE_FILE, collect(sweep_dir, list(points), list(record["grid"])))
    for s in states:
        if s["state"] != "done":
            print(f"point {s['id']} {s['params']} failed: {s['error']}", flush=True)
    if efficiency is not None and todo:
        print(efficiency_line(efficiency), flush=True)
    return record


def tidy(
    sweep_dir: Path, points: Sequence[Point], again: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Before points run: the earlier sweep.json ({} for a new folder), point folders made before
    a parameter was added renamed to today's ids, damaged points (and `again`) set aside;
    returns (earlier record, {restarted point id: why})."""
    record_file = sweep_dir / SWEEP_FILE
    earlier = files.read_json(record_file, REBUILD_RECORD, keys=("points",)) if record_file.exists() else {}
    for note in adopt(sweep_dir, points, earlier):
        print(note, flush=True)
    return earlier, restart(sweep_dir, points, again)


def point_record(sweep_dir: Path, point: Point, restarted: str | None) -> dict[str, Any]:
    """A point as sweep.json lists it: id, swept values, state, resolved parameters, and why it
    was restarted from scratch in this run (if it was)."""
    record = {"id": point.id, "params": point.swept, **point_state(sweep_dir, point), "resolved": point.flat}
    return record | ({"restarted": restarted} if restarted else {})


def export_points(sweep_dir: str | Path) -> list[Path]:
    """Export every executed point notebook of a sweep to HTML beside it (code shown)."""
    from workbench.lab.report.export import notebook_to_html

    shared = Path(sweep_dir) / POINTS / "plotly.min.js"  # one copy, not 5 MB per page
    return [
        notebook_to_html(nb, nb.with_suffix(".html"), hide_code=False, shared_plotlyjs=shared)
        for nb in sorted(Path(sweep_dir).glob(f"{POINTS}/*/fedlora.ipynb"))
        if not nb.parent.name.endswith(ASIDE)  # set aside, not part of the sweep
    ]
