"""Unattended grid sweeps: each grid point is one papermill execution of notebooks/fedlora.ipynb.

The spec and its points come from `workbench.lab.sweep.spec`. Each point lives in
`SWEEP/points/<id>/` with its executed notebook, its run directory and a `status.json`;
rerunning skips finished points and re-runs missing or failed ones (a killed point resumes from
its run's checkpoint). Points run through `workbench.lab.sweep.executors`; the report is built
at the end (`workbench.lab.report.export`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.facts import SWEEP_FILE, TABLE_FILE
from workbench.core.results import read_run
from workbench.lab.report import provenance
from workbench.lab.report.provenance import efficiency_line
from workbench.lab.sweep.execution import Execution
from workbench.lab.sweep.executors import run_points
from workbench.lab.sweep.spec import Point, expand, load_spec, swept_values

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "fedlora.ipynb"


def point_state(sweep_dir: Path, point: Point) -> dict[str, Any]:
    """The point's recorded status ({"state": "missing"} when it never finished or its results
    are gone)."""
    folder = sweep_dir / "points" / point.id
    status = folder / "status.json"
    if not status.exists():
        return {"state": "missing", "error": None}
    recorded = json.loads(status.read_text())
    if recorded["state"] == "done" and not (folder / "run" / TABLE_FILE).exists():
        return {"state": "missing", "error": None}
    return recorded


def collect(sweep_dir: Path, points: list[Point], names: list[str]) -> pd.DataFrame:
    """Every finished point's table, with `point` and the swept parameters as columns."""
    frames = []
    for p in points:
        if point_state(sweep_dir, p)["state"] != "done":
            continue
        _, table = read_run(sweep_dir / "points" / p.id / "run")
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
) -> Path:
    """Run (or resume) a sweep; return the report's path (or the combined table's without report).

    `execution` picks the executor (default: `workers` local warm kernels)."""
    execution = execution or Execution(workers=workers)
    execution.check()
    spec = load_spec(spec_source)
    points = expand(spec)
    sweep_dir = Path(out).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    old = sweep_dir / SWEEP_FILE  # its provenance carries over when no point runs
    previous = json.loads(old.read_text()).get("provenance") if old.is_file() else None
    before = {p.id: point_state(sweep_dir, p) for p in points}  # read once: what to run, what is measured
    todo = [p for p in points if before[p.id]["state"] != "done"]
    print(
        f"sweep: {len(points)} points, {len(points) - len(todo)} already done, {len(todo)} to run", flush=True
    )
    record_file = sweep_dir / SWEEP_FILE
    earlier = json.loads(record_file.read_text()) if record_file.exists() else {}
    measured = [
        (p.flat, before[p.id]["seconds"])
        for p in points
        if before[p.id]["state"] == "done" and before[p.id].get("seconds") is not None
    ]
    efficiency = (
        run_points(sweep_dir, [(p.id, p.flat) for p in todo], NOTEBOOK, timeout, execution, measured)
        if todo
        else earlier.get("efficiency")
    )
    states = [
        {"id": p.id, "params": p.swept, **point_state(sweep_dir, p), "resolved": p.flat} for p in points
    ]
    record = {
        "parameters": spec["parameters"],
        "grid": swept_values(spec),
        "spec": spec,
        "points": states,
        "efficiency": efficiency,
        "provenance": provenance.record(previous, started, time.time(), len(todo)),
    }
    record_file.write_text(json.dumps(record, indent=2))
    collect(sweep_dir, points, list(record["grid"])).to_csv(sweep_dir / TABLE_FILE, index=False)
    for s in states:
        if s["state"] != "done":
            print(f"point {s['id']} {s['params']} failed: {s['error']}", flush=True)
    if todo:
        print(efficiency_line(efficiency), flush=True)
    if not report:
        return sweep_dir / TABLE_FILE
    from workbench.lab.report.export import build_report

    return build_report(sweep_dir)


def export_points(sweep_dir: str | Path) -> list[Path]:
    """Export every executed point notebook of a sweep to HTML beside it (code shown)."""
    from workbench.lab.report.export import notebook_to_html

    shared = Path(sweep_dir) / "points" / "plotly.min.js"  # one copy, not 5 MB per page
    return [
        notebook_to_html(nb, nb.with_suffix(".html"), hide_code=False, shared_plotlyjs=shared)
        for nb in sorted(Path(sweep_dir).glob("points/*/fedlora.ipynb"))
    ]
