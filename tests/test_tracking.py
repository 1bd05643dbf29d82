"""Experiment tracking: what a run sends to TensorBoard and MLflow, read back through the
libraries' own readers (TensorBoard's EventAccumulator, MLflow's client)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from helpers import tiny_spec
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from workbench.config import build_config
from workbench.core.errors import UserError
from workbench.core.results import mean_accuracy
from workbench.loop import tracking
from workbench.loop.runner import run_experiment


def scalars(log_dir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar as TensorBoard's reader returns them."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def expected_means(table: pd.DataFrame) -> list[tuple[int, float]]:
    """The per-round mean accuracy of the tidy table."""
    per_round = mean_accuracy(table)
    return [(int(r), float(a)) for r, a in zip(per_round["round"], per_round["accuracy"])]


@pytest.mark.slow
def test_cli_run_with_tensorboard_writes_the_per_round_mean_accuracy(tiny, tmp_path):
    out = tmp_path / "run"
    flags = [f"--{k}={v}" for k, v in {**tiny, "algorithm": "standalone", "rounds": 3}.items()]
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "run", *flags, "--track", "tensorboard", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "results.csv")
    log_dir = out / "tracking" / "tensorboard" / "run"
    got = scalars(log_dir, "mean/accuracy")
    assert [s for s, _ in got] == [1, 2, 3]
    want = expected_means(table)
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)  # float32 events
    assert len(scalars(log_dir, "client_3/accuracy")) == 3
    assert scalars(log_dir, "cost/cum_train_flops")[-1][1] == pytest.approx(table["train_flops"].sum())


@pytest.mark.slow
def test_mlflow_run_holds_parameters_tags_metrics_and_artifacts(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's own default would put artifacts in ./mlruns
    config = build_config({**tiny, "algorithm": "fedavg", "models": ["cnn5"], "track": "mlflow"})
    result = run_experiment(config, out_dir=tmp_path / "run")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'tracking' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["algorithm"] == "fedavg" and run.data.params["rounds"] == "2"
    assert run.data.tags["method"] == "fedavg" and run.data.tags["dataset"] == "digits"
    history = client.get_metric_history(run.info.run_id, "mean/accuracy")
    got = sorted((m.step, m.value) for m in history)
    want = expected_means(result.table)
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-12)
    assert client.get_metric_history(run.info.run_id, "client_0/loss")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.csv", "config.json"}
    assert run.info.status == "FINISHED"
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "run" / "tracking" / "artifacts").rglob("results.csv"))


@pytest.mark.slow
def test_tracking_changes_no_result(tiny, tmp_path):
    flat = {**tiny, "algorithm": "standalone"}
    plain = run_experiment(build_config(flat)).table
    tracked = run_experiment(build_config({**flat, "track": "tensorboard"}), out_dir=tmp_path / "r").table
    pd.testing.assert_frame_equal(plain, tracked)


def test_tracking_needs_a_place_to_write(tiny):
    with pytest.raises(UserError, match="track_uri"):
        run_experiment(build_config({**tiny, "track": "mlflow"}))


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[tracking\]'"):
        tracking.check_available("mlflow")


def test_sweep_points_share_one_store_with_their_point_as_tag(tmp_path):
    run_dir = tmp_path / "sweep" / "points" / "p001-abc" / "run"
    assert tracking.store_root(run_dir) == tmp_path / "sweep" / "tracking"
    flat = {"algorithm": "fedlora", "dataset": "digits"}
    assert tracking.tags(run_dir, flat)["sweep"] == "sweep"
    assert tracking.run_name(run_dir, flat) == "p001-abc"
    assert tracking.store_root(tmp_path / "r") == tmp_path / "r" / "tracking"
    assert tracking.tags(run_dir, flat)["phase"] == "point"


def test_a_tuning_trial_is_tracked_in_its_tune_folder_tagged_as_a_trial(tmp_path):
    run_dir = tmp_path / "tune" / "tuning" / "points" / "fedlora-t003" / "run"
    assert tracking.store_root(run_dir) == tmp_path / "tune" / "tracking"
    found = tracking.tags(run_dir, {"algorithm": "fedlora", "dataset": "digits"})
    assert found | {"run_dir": ""} == {
        "method": "fedlora",
        "dataset": "digits",
        "run_dir": "",
        "sweep": "tune",
        "point": "fedlora-t003",
        "phase": "trial",
    }


def test_tracked_stores_are_the_distinct_trackers_of_the_points():
    flats = [{"track": "mlflow"}, {"track": "mlflow"}, {}, {"track": "tensorboard", "track_uri": "/x"}]
    assert tracking.tracked_stores(flats) == [("mlflow", "auto"), ("tensorboard", "/x")]


@pytest.mark.kernels
def test_a_sweep_gives_one_tracked_run_per_point(tmp_path):
    from workbench.lab.sweep.run import run_sweep

    spec = tiny_spec({"algorithm": ["standalone", "fedproto"]})
    spec["parameters"].update(track="mlflow", rounds=1)
    run_sweep(spec, tmp_path / "sweep")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'sweep' / 'tracking' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    every = client.search_runs([experiment.experiment_id])
    (report,) = [r for r in every if r.data.tags["phase"] == "report"]
    assert report.data.tags["sweep"] == "sweep"
    assert {a.path for a in client.list_artifacts(report.info.run_id)} >= {"report.html", "sweep.json"}
    runs = [r for r in every if r.data.tags["phase"] == "point"]
    assert sorted(r.data.tags["method"] for r in runs) == ["fedproto", "standalone"]
    points = {p.name for p in (tmp_path / "sweep" / "points").iterdir()}
    assert {r.data.tags["point"] for r in runs} == points
    assert all(r.data.tags["sweep"] == "sweep" for r in runs)
