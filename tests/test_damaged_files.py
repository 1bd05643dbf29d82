"""Damaged files are named, not thrown: one `error:` line naming the file, what is wrong and what
to do (exit 2), and in a sweep a damaged point runs again from scratch beside untouched ones.
Folders written before a parameter was added keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import SWEEP_TINY, Killed, kill_after

from workbench.cli import main
from workbench.config import build_config
from workbench.core import files
from workbench.core.errors import DamagedFileError
from workbench.core.facts import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    STATUS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    TABLE_FILE,
)
from workbench.lab.report.sweep_tables import load_sweep
from workbench.lab.sweep.folder import chosen, restart
from workbench.lab.sweep.run import run_sweep
from workbench.lab.sweep.spec import expand, load_spec
from workbench.loop.runner import run_experiment

pytestmark = pytest.mark.slow  # a killed run to damage first: seconds each

ROOT = Path(__file__).resolve().parents[1]
RUN = {**SWEEP_TINY, "rounds": 3, "checkpoint_every": 1, "algorithm": "fedavg"}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run directory holding only the checkpoint of a run killed in round 2 (round 1's)."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    with pytest.raises(Killed):
        run_experiment(build_config(RUN), run_dir, progress=kill_after(2))
    assert (run_dir / CHECKPOINT_FILE).is_file()
    return run_dir


def flags(flat: dict) -> list[str]:
    return [a for k, v in flat.items() for a in (f"--{k}", str(v))]


def one_error_line(err: str, *fragments: str) -> None:
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_a_truncated_checkpoint_is_named_with_how_to_restart(killed_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = (killed_run / CHECKPOINT_FILE).read_bytes()
    (run_dir / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])  # a copy interrupted
    assert main(["run", *flags(RUN), "--out", str(run_dir)]) == 2
    one_error_line(
        capsys.readouterr().err,
        f"error: {run_dir / CHECKPOINT_FILE} cannot be read (cut short or overwritten",
        f"delete it to restart this run from round 0 (rm {run_dir / CHECKPOINT_FILE})",
    )
    # as a user runs it: no traceback, and refused before torch is imported
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "workbench", "run", *flags(RUN), "--out", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2 and done.stdout == ""
    one_error_line(done.stderr, f"{run_dir / CHECKPOINT_FILE} cannot be read")


def test_a_checkpoint_whose_bytes_changed_is_named_although_torch_would_load_it(killed_run, tmp_path):
    data = bytearray((killed_run / CHECKPOINT_FILE).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # torch.load checks no checksum
    (tmp_path / CHECKPOINT_FILE).write_bytes(data)
    with pytest.raises(DamagedFileError, match=r"does not match its checksum\); delete it to restart"):
        run_experiment(build_config(RUN), tmp_path)


def test_damaged_files_of_a_finished_run_are_named(tmp_path, capsys):
    config = build_config(RUN)
    run_experiment(config, tmp_path / "run")
    cases = {
        CONFIG_FILE: ("{", "(not valid JSON"),
        TABLE_FILE: (None, "is incomplete: cut short?"),
        SUMMARY_FILE: ("[]", "(a JSON list, not an object)"),
    }
    for name, (junk, problem) in cases.items():
        run_dir = tmp_path / name
        subprocess.run(["cp", "-r", str(tmp_path / "run"), str(run_dir)], check=True)
        path = run_dir / name
        path.write_text(junk if junk is not None else path.read_text()[:-20])  # None: cut short
        assert main(["run", *flags(RUN), "--out", str(run_dir)]) == 2
        one_error_line(
            capsys.readouterr().err,
            f"error: {path} cannot be read (",
            problem,
            f"remove the run folder {run_dir} (or give another --out) and run it again",
        )


def test_a_damaged_sweep_record_is_named_before_anything_runs(tmp_path, capsys):
    spec = {"parameters": dict(SWEEP_TINY), "grid": {"rank": [1]}}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / SWEEP_FILE).write_text('{"points": [')  # cut short
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s")]) == 2
    one_error_line(
        capsys.readouterr().err,
        f"error: {tmp_path / 's' / SWEEP_FILE} cannot be read (not valid JSON",
        "delete it and run the sweep command again: it is rebuilt from the point folders",
    )
    assert not (tmp_path / "s" / "points").exists()
    with pytest.raises(DamagedFileError, match="delete it and run the sweep command again"):
        load_sweep(tmp_path / "s")  # the report says the same


def done_point(sweep_dir: Path, point_id: str, flat: dict) -> Path:
    """A finished point folder as a sweep leaves it, computed in-process (no kernel)."""
    folder = sweep_dir / "points" / point_id
    run_experiment(build_config(flat), folder / "run")
    files.write_json(folder / STATUS_FILE, {"state": "done", "error": None, "seconds": 1.0})
    return folder


@pytest.mark.kernels
def test_a_sweep_runs_its_damaged_points_again_and_leaves_the_others(killed_run, tmp_path, capsys):
    spec = load_spec({"parameters": {**RUN, "rounds": 2}, "grid": {"rank": [1, 2, 3]}})
    points = expand(spec)
    out = tmp_path / "sweep"
    bad_status, bad_checkpoint, intact = (done_point(out, p.id, p.flat) for p in points)
    (bad_status / STATUS_FILE).write_text('{"state": "do')
    (bad_checkpoint / STATUS_FILE).unlink()  # a killed point: only its checkpoint, cut short
    for name in (TABLE_FILE, SUMMARY_FILE, CONFIG_FILE):
        (bad_checkpoint / "run" / name).unlink()
    (bad_checkpoint / "run" / CHECKPOINT_FILE).write_bytes((killed_run / CHECKPOINT_FILE).read_bytes()[:4096])
    kept = {p: p.stat().st_mtime_ns for p in intact.rglob("*")}
    table = pd.read_csv(run_sweep(spec, out, report=False))
    said = capsys.readouterr().out
    assert f"point {points[0].id} {{'rank': 1}}: {STATUS_FILE} cannot be read (not valid JSON" in said
    assert f"point {points[1].id} {{'rank': 2}}: run/{CHECKPOINT_FILE} cannot be read (cut short" in said
    assert "it runs again from scratch (the old folder is kept as points/" in said
    assert "sweep: 3 points, 1 already done, 2 to run" in said
    assert {p: p.stat().st_mtime_ns for p in intact.rglob("*")} == kept  # untouched
    assert (out / "points" / f"{points[0].id}.old").is_dir() and (
        out / "points" / f"{points[1].id}.old"
    ).is_dir()
    record = json.loads((out / SWEEP_FILE).read_text())["points"]
    assert [p["state"] for p in record] == ["done"] * 3
    assert "restarted" in record[0] and "restarted" in record[1] and "restarted" not in record[2]
    assert sorted(table["rank"].unique()) == [1, 2, 3]
    assert restart(out, points, chosen(points, ["p002"])) == {
        points[2].id: "asked to restart (--restart-point)"
    }
    assert (out / "points" / f"{points[2].id}.old").is_dir() and not intact.exists()
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))
    assert main(["sweep", str(path), "--out", str(out), "--restart-point", "p9"]) == 2
    one_error_line(capsys.readouterr().err, "error: --restart-point p9: no point of this sweep has that id")


def test_folders_written_before_a_parameter_was_added_keep_working(killed_run, tmp_path, capsys):
    spec = load_spec({"parameters": RUN, "grid": {"rank": [2]}})
    (point,) = expand(spec)
    old = done_point(tmp_path / "sweep", "p000-0ld1d000", point.flat)  # as an older version named it
    stored = json.loads((old / "run" / CONFIG_FILE).read_text())
    del stored["trim_fraction"]  # the parameter did not exist when this folder was written
    (old / "run" / CONFIG_FILE).write_text(json.dumps(stored))
    run_sweep(spec, tmp_path / "sweep", report=False)  # nothing runs: the point is found again
    said = capsys.readouterr().out
    assert f"point {point.id}: found as p000-0ld1d000 (made before trim_fraction); renamed" in said
    assert "sweep: 1 points, 1 already done, 0 to run" in said
    # a finished run folder and a checkpoint without the parameter are read at its default
    again = run_experiment(
        build_config(point.flat), tmp_path / "sweep" / "points" / point.id / "run", pytest.fail
    )
    assert again.summary["rounds"] == RUN["rounds"]  # the stored result, not run again
    config = build_config(RUN)
    payload = torch.load(killed_run / CHECKPOINT_FILE, weights_only=True)
    del payload["config"]["trim_fraction"]
    (tmp_path / "resume").mkdir()
    torch.save(payload, tmp_path / "resume" / CHECKPOINT_FILE)
    seen = []
    run_experiment(config, tmp_path / "resume", progress=lambda r, *_: seen.append(r))
    assert seen == [2, 3]  # resumed from the checkpoint of round 1
