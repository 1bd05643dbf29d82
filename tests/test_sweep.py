import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers import SWEEP_TINY, wait_for

from workbench.cli import main
from workbench.config import ConfigError
from workbench.lab.sweep.run import run_sweep
from workbench.lab.sweep.spec import expand, load_spec

FIXED = {**SWEEP_TINY, "checkpoint_every": 1}


def spec(grid):
    return {"parameters": dict(FIXED), "grid": grid}


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"parameters": FIXED, "grid": {}}, "`grid` is empty"),
        ({"parameters": FIXED}, "`grid` is empty"),
        ({"parameters": FIXED, "grid": {"rank": []}}, "grid entry 'rank' must be a non-empty list"),
        ({"parameters": FIXED, "grid": {"rank": 4}}, "grid entry 'rank' must be a non-empty list"),
        ({"parameters": FIXED, "grid": {"rank": [1]}, "extra": 1}, "must be a mapping with keys"),
        ({"parameters": {**FIXED, "rank": 2}, "grid": {"rank": [1]}}, "both fixed"),
    ],
)
def test_bad_spec_shapes_are_refused(bad, fragment):
    with pytest.raises(ConfigError, match=None) as error:
        expand(load_spec(bad))
    assert fragment in str(error.value)


def test_bad_point_is_refused_naming_point_and_parameter_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"grid point 2 \(\{'rank': 11, 'mu': 0.5\}\): parameter rank=11"):
        run_sweep(spec({"rank": [1, 4, 11], "mu": [0.5]}), tmp_path / "s")
    with pytest.raises(ConfigError, match=r"grid point 0 \(\{'rnak': 1\}\): unknown parameter"):
        run_sweep(spec({"rnak": [1]}), tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_cli_refuses_a_bad_spec_with_status_2(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec({"mu": [0.5, 1.5]})))
    assert main(["sweep", str(path), "--out", str(tmp_path / "s")]) == 2
    assert "grid point 1 ({'mu': 1.5})" in capsys.readouterr().err


def test_points_are_stable_and_distinct():
    points = expand(load_spec(spec({"rank": [1, 2], "algorithm": ["fedlora", "standalone"]})))
    assert [p.swept for p in points][:2] == [
        {"rank": 1, "algorithm": "fedlora"},
        {"rank": 1, "algorithm": "standalone"},
    ]
    assert len({p.id for p in points}) == 4
    assert [p.id for p in points] == [
        p.id for p in expand(load_spec(spec({"rank": [1, 2], "algorithm": ["fedlora", "standalone"]})))
    ]


@pytest.mark.kernels
def test_interrupted_sweep_resumes_without_rerunning_finished_points(tmp_path):
    grid = {"rank": [1, 2], "mu": [0.0, 1.0]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(grid)))
    out = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "sweep", str(path), "--out", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = lambda: any(json.loads(s.read_text())["state"] == "done" for s in out.glob("points/*/status.json"))
    try:
        assert wait_for(done, 300), "no point finished"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {
        s.parent.name: (s.read_text(), (s.parent / "fedlora.ipynb").stat().st_mtime_ns)
        for s in out.glob("points/*/status.json")
    }
    assert 1 <= len(finished) < 4
    table = pd.read_csv(run_sweep(path, out, report=False))
    for point, (status, mtime) in finished.items():  # finished points were not run again
        assert (out / "points" / point / "status.json").read_text() == status
        assert (out / "points" / point / "fedlora.ipynb").stat().st_mtime_ns == mtime
    states = json.loads((out / "sweep.json").read_text())["points"]
    assert [s["state"] for s in states] == ["done"] * 4
    whole = pd.read_csv(run_sweep(path, tmp_path / "whole", report=False, workers=2))
    pd.testing.assert_frame_equal(table, whole)
    assert set(table["rank"]) == {1, 2} and set(table["mu"]) == {0.0, 1.0}
    assert len(table) == 4 * 2 * 2  # points × rounds × clients


@pytest.mark.kernels
def test_failed_point_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch):
    import workbench.lab.sweep.run as sweep

    broken = tmp_path / "broken.ipynb"
    import nbformat

    nb = nbformat.read(sweep.NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("assert rank != 2, 'rank 2 is cursed'"))
    nbformat.write(nb, broken)
    monkeypatch.setattr(sweep, "NOTEBOOK", broken)
    monkeypatch.chdir(tmp_path)
    run_sweep(spec({"rank": [1, 2]}), "s", report=False)  # a relative folder, as a user types it
    states = json.loads((tmp_path / "s" / "sweep.json").read_text())["points"]
    assert [s["state"] for s in states] == ["done", "failed"]
    assert "AssertionError: rank 2 is cursed" in states[1]["error"]
    table = pd.read_csv(tmp_path / "s" / "results.csv")
    assert set(table["rank"]) == {1}


def test_also_grids_append_points_without_a_product():
    loaded = load_spec(
        {
            "parameters": FIXED,
            "grid": {"rank": [1, 2], "mu": [0.0, 1.0]},
            "also": [{"algorithm": ["standalone", "fd"]}],
        }
    )
    points = expand(loaded)
    assert len(points) == 4 + 2
    assert points[-1].swept == {"algorithm": "fd"} and points[-1].flat["rank"] == 4
    from workbench.lab.sweep.spec import swept_values

    assert swept_values(loaded) == {"rank": [1, 2], "mu": [0.0, 1.0], "algorithm": ["standalone", "fd"]}
    with pytest.raises(ConfigError, match=r"also\[0\] entry 'seed' must be a non-empty list"):
        load_spec({"parameters": FIXED, "grid": {"rank": [1]}, "also": [{"seed": []}]})
