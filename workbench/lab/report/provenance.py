"""Provenance: which code, packages and machine produced a sweep, when, and how long it took.

`record` is what a sweep stores in sweep.json; the table functions lay it out for a report.
Versions come from package metadata, so nothing here imports torch.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import workbench

PACKAGES = (
    "torch",
    "torchvision",
    "peft",
    "papermill",
    "plotly",
    "pandas",
    "numpy",
    "scipy",
    "nbconvert",
    "scikit-learn",
)
ROOT = Path(workbench.__file__).resolve().parents[1]


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution ('not installed' when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _run(*command: str) -> str | None:
    """A command's stripped stdout, or None when it fails or is missing."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """The checkout's commit and whether it differs from it; None/None unless `root` is itself
    the top of a git checkout (an installed wheel's site-packages inside someone's repository
    is not this code's commit)."""
    top = _run("git", "-C", str(root), "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return {"commit": None, "dirty": None}
    commit = _run("git", "-C", str(root), "rev-parse", "HEAD")
    status = _run("git", "-C", str(root), "status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux) and the number of logical cores."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} logical cores"


def gpu_names() -> list[str]:
    """NVIDIA GPUs as nvidia-smi lists them (empty without nvidia-smi or a GPU)."""
    if not shutil.which("nvidia-smi"):
        return []
    out = _run("nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader")
    return [line.strip() for line in (out or "").splitlines() if line.strip()]


def environment() -> dict[str, Any]:
    """Workbench version and commit, package versions, Python and machine."""
    return {
        "workbench": workbench.__version__,
        **git_state(),
        "packages": package_versions(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "gpus": gpu_names(),
    }


def _iso(seconds: float) -> str:
    """A POSIX time as a local ISO date with offset, to the second."""
    return dt.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def record(
    previous: dict[str, Any] | None, started: float, finished: float, points_run: int
) -> dict[str, Any]:
    """A sweep's provenance after one invocation: unchanged when it ran no point (the results
    come from earlier runs), else this environment with this run appended to `runs`."""
    previous = previous or {}
    if points_run == 0:
        return previous
    env = environment()
    run = {
        "started": _iso(started),
        "finished": _iso(finished),
        "wall_seconds": round(finished - started, 1),
        "points_run": points_run,
        "commit": env["commit"],
        "dirty": env["dirty"],
    }
    return {**env, "runs": [*previous.get("runs", []), run]}


def duration(seconds: float | None) -> str:
    """Seconds as '42 s', '3 min 05 s' or '1 h 02 min'."""
    if seconds is None or pd.isna(seconds):
        return "not recorded"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def environment_table(
    provenance: dict[str, Any], point_seconds: pd.Series, efficiency: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The sweep's environment and timing as (item, value) rows, with the efficiency of its
    last run that ran points."""
    if not provenance:
        return pd.DataFrame(
            {"item": ["provenance"], "value": ["not recorded (the sweep predates provenance records)"]}
        )
    commit = provenance.get("commit") or "unknown (not a git checkout)"
    flags: dict[Any, str] = {True: " (dirty: uncommitted changes)", False: " (clean)"}
    dirty = flags.get(provenance.get("dirty"), "")
    rows = [
        ("workbench version", provenance.get("workbench")),
        ("git commit", commit + dirty),
        *[(name, version) for name, version in provenance.get("packages", {}).items()],
        ("Python", provenance.get("python")),
        ("platform", provenance.get("platform")),
        ("CPU", provenance.get("cpu")),
        ("GPU", ", ".join(provenance.get("gpus") or []) or "none found (nvidia-smi)"),
        *_run_rows(provenance.get("runs", [])),
        (
            "wall time of all points, summed",
            duration(point_seconds.sum(min_count=1)) + f" ({int(point_seconds.notna().sum())} points timed)",
        ),
        (
            "sweep efficiency: Σ experiment time ÷ (wall time × workers), last run with points",
            efficiency_line(efficiency) if efficiency else "not recorded (the sweep predates it)",
        ),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])


def _run_rows(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """One row per sweep invocation that ran points, and their total wall time."""
    rows = [
        (
            f"sweep run {i}",
            f"{run['started']} → {run['finished']}: {run['points_run']} "
            f"points in {duration(run['wall_seconds'])} (commit "
            f"{str(run['commit'])[:12]}{', dirty' if run['dirty'] else ''})",
        )
        for i, run in enumerate(runs, 1)
    ]
    total = duration(sum(run["wall_seconds"] for run in runs))
    return [*rows, ("wall time of the sweep runs (points only, without the report)", total)]


def parameter_tables(
    resolved: pd.DataFrame, points: pd.DataFrame, names: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every resolved parameter of every point: (values shared by all points as name/value rows,
    one row per point with its configuration, state, wall time and the values that differ)."""
    params = resolved.drop(columns="id") if "id" in resolved else resolved
    varying = [c for c in params.columns if params[c].astype(str).nunique(dropna=False) > 1]
    same = [c for c in params.columns if c not in varying]
    shared = pd.DataFrame({"parameter": same, "value": [params[c].iloc[0] for c in same]})
    per_point = points[["id", "state", "seconds"]].merge(
        resolved[["id", *varying]] if "id" in resolved else points[["id"]], on="id", how="left"
    )
    per_point.insert(1, "configuration", per_point["id"].map(names).fillna("(did not finish)"))
    per_point["seconds"] = per_point["seconds"].map(duration)
    return shared, per_point.rename(columns={"id": "point folder", "seconds": "wall time"})


def efficiency_record(
    statuses: Sequence[Mapping[str, Any]], wall: float, workers: int, executor: str, kernels: str
) -> dict[str, Any]:
    """Σ points' experiment seconds ÷ (wall seconds × parallel workers), with its parts."""
    experiment = sum(s.get("experiment_s", 0.0) for s in statuses)
    return {
        "efficiency": round(experiment / (wall * workers), 4) if wall > 0 else None,
        "experiment_s": round(experiment, 2),
        "wall_s": round(wall, 2),
        "workers": workers,
        "points_run": len(statuses),
        "executor": executor,
        "kernels": kernels,
    }


def efficiency_line(e: Mapping[str, Any]) -> str:
    """The efficiency record as one line for people."""
    share = f"{e['efficiency']:.1%}" if e["efficiency"] is not None else "n/a"
    return (
        f"sweep efficiency {share}: {e['experiment_s']:.1f} s of experiments in "
        f"{e['points_run']} points / ({e['wall_s']:.1f} s wall x {e['workers']} workers, "
        f"{e['executor']}, {e['kernels']} kernels)"
    )
