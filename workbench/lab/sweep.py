"""Unattended grid sweeps: each grid point is one papermill execution of notebooks/fedlora.ipynb.

Spec (YAML): `parameters:` fixed flat values, `grid:` a list of values per swept name, and
optionally `also:` a list of further grids whose points are appended (e.g. each baseline once
beside FedLoRA's rank × μ grid, instead of a product that repeats them). Every point is
validated before any runs. Each point lives in `SWEEP/points/<id>/` with its executed
notebook, its run directory and a `status.json`; rerunning skips finished points and re-runs
missing or failed ones (a killed point resumes from its run's checkpoint).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from workbench.config import ConfigError, build_config
from workbench.core.facts import SWEEP_FILE, TABLE_FILE
from workbench.core.results import read_run
from workbench.lab import provenance
from workbench.lab.executors import Execution, efficiency_line, run_points

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "fedlora.ipynb"
SPEC_KEYS = {"parameters", "grid", "also"}


@dataclass(frozen=True)
class Point:
    """One grid point: its id, the swept values and the full flat parameters."""

    id: str
    swept: dict[str, Any]
    flat: dict[str, Any]


def _check_grid(where: str, grid: Any, parameters: Mapping[str, Any]) -> dict[str, list]:
    """A grid is a non-empty mapping of names to non-empty lists, disjoint from the fixed values."""
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"sweep spec: `{where}` is empty; give at least one name with a list of values")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep spec: {where} entry {name!r} must be a non-empty list, got {values!r}")
        if name in parameters:
            raise ConfigError(f"sweep spec: {name!r} is both fixed in `parameters` and swept in `{where}`")
    return {k: list(v) for k, v in grid.items()}


def load_spec(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a sweep spec (YAML file or mapping) and check its shape."""
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ConfigError(
            f"sweep spec {source} is not a file; give the path of a YAML spec (see notebooks/sweeps)"
        )
    try:
        spec = yaml.safe_load(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    except yaml.YAMLError as error:
        raise ConfigError(f"sweep spec {source} is not valid YAML: {error}") from None
    if not isinstance(spec, Mapping) or set(spec) - SPEC_KEYS:
        found = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
        raise ConfigError(f"sweep spec must be a mapping with keys {sorted(SPEC_KEYS)}, got {found}")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ConfigError("sweep spec: `parameters` must map names to values")
    also = spec.get("also") or []
    if not isinstance(also, list):
        raise ConfigError("sweep spec: `also` must be a list of grids")
    return {
        "parameters": dict(parameters),
        "grid": _check_grid("grid", spec.get("grid"), parameters),
        "also": [_check_grid(f"also[{i}]", g, parameters) for i, g in enumerate(also)],
    }


def swept_values(spec: Mapping[str, Any]) -> dict[str, list]:
    """Every swept name with all its values across `grid` and `also`, in first-seen order."""
    merged: dict[str, list] = {}
    for grid in (spec["grid"], *spec["also"]):
        for name, values in grid.items():
            merged.setdefault(name, [])
            merged[name] += [v for v in values if v not in merged[name]]
    return merged


def expand(spec: Mapping[str, Any]) -> list[Point]:
    """All grid points, each validated by the strict config call before anything runs."""
    combos = [
        dict(zip(grid, values))
        for grid in (spec["grid"], *spec["also"])
        for values in itertools.product(*grid.values())
    ]
    points = []
    for index, swept in enumerate(combos):
        flat = {**spec["parameters"], **swept}
        try:
            resolved = build_config(flat).to_flat()
        except ConfigError as error:
            raise ConfigError(f"grid point {index} ({swept}): {error}") from None
        digest = hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
        points.append(Point(id=f"p{index:03d}-{digest}", swept=swept, flat=resolved))
    return points


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
    from workbench.lab.export import build_report

    return build_report(sweep_dir)


def export_points(sweep_dir: str | Path) -> list[Path]:
    """Export every executed point notebook of a sweep to HTML beside it (code shown)."""
    from workbench.lab.export import notebook_to_html

    shared = Path(sweep_dir) / "points" / "plotly.min.js"  # one copy, not 5 MB per page
    return [
        notebook_to_html(nb, nb.with_suffix(".html"), hide_code=False, shared_plotlyjs=shared)
        for nb in sorted(Path(sweep_dir).glob("points/*/fedlora.ipynb"))
    ]
