"""Flower support: records, config, the server's refusals, runs on Flower's simulation engine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")

from flower_faults import faulty
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.cli.config_utils import load_and_validate
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from workbench.algorithms import REGISTRY
from workbench.config import ConfigError, build_config, defaults
from workbench.core.accounting import payload_bytes
from workbench.core.run_files import read_run
from workbench.flower import simulation
from workbench.flower.client_app import make_client_app
from workbench.flower.records import from_record, record_bytes, to_record
from workbench.flower.server_app import run_server
from workbench.flower.settings import FlowerSettings, partition_id, split_run_config, to_run_config
from workbench.flower.simulation import RAY_ENV, simulate, start_ray
from workbench.flower.strategy import WorkbenchStrategy
from workbench.loop.runner import run_experiment
from workbench.loop.server_round import KEPT, RESTORED, RoundRefusedError, sample_clients

APP = Path(__file__).resolve().parents[1] / "workbench" / "flower" / "app"
FLOWER_TINY = dict(dataset="digits", num_clients=4, rounds=2, batch_size=64, seed=0, device="cpu")


@pytest.fixture
def no_telemetry(monkeypatch):
    """Flower and Ray must not try to phone home from a machine without internet."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # a Ray FutureWarning
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only


@pytest.fixture
def one_thread():
    """Torch on one thread, like a Ray actor with num_cpus=1: same float reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROBE = (  # the Flower command line as a user runs it, then whether it ever imported Ray
    "import sys\nfrom workbench.flower.cli import main\nstatus = main(sys.argv[1:])\n"
    "print('ray imported' if 'ray' in sys.modules else 'ray never imported')\nsys.exit(status)"
)


@pytest.mark.flower
@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, fragment",
    [
        (
            ["--partition", "dirichlet", "--dirichlet_alpha", "0.5", "--num_clients", "100"],
            "cannot partition",
        ),
        (["--lora_targets", "fc2"], "layer 'fc2' is not homogeneous across the clients' models"),
    ],
)
def test_what_in_process_refuses_before_training_flower_refuses_before_ray(flags, fragment, tmp_path, capsys):
    from workbench.cli import main as workbench_main

    assert workbench_main(["run", *flags, "--out", str(tmp_path / "in-process")]) == 2
    in_process = capsys.readouterr().err
    assert in_process.startswith("error: ") and fragment in in_process
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "simulate", *flags, "--out", str(tmp_path / "flower")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(APP.parents[2])},
        timeout=600,
    )
    assert done.returncode == 2 and done.stderr == in_process and "Traceback" not in done.stderr
    assert done.stdout.strip() == "ray never imported" and not (tmp_path / "flower").exists()


# ---- records and config ------------------------------------------------------------------
def test_records_round_trip_exactly_and_count_tensor_bytes():
    payload = {"w": torch.randn(4, 500), "counts": torch.arange(10), "mask": torch.rand(10) > 0.5}
    record = to_record(payload)
    back = from_record(record)
    for name, t in payload.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    tensor, serialized = record_bytes(record)
    assert tensor == payload_bytes(payload) == 4 * 500 * 4 + 10 * 8 + 10
    assert serialized - tensor == sum(len(a.data) for a in record.values()) - tensor > 0  # .npy


def test_run_config_round_trips_and_refuses_bad_values():
    config = build_config({**FLOWER_TINY, "models": "cnn1,cnn3", "lora_targets": "head"})
    settings = FlowerSettings(out_dir="/tmp/x", timeout=5.0, wait_nodes=7.0)
    assert split_run_config(to_run_config(config, settings)) == (config, settings)
    with pytest.raises(ConfigError, match="rnk"):
        split_run_config({"rnk": 4})
    with pytest.raises(ConfigError, match="timeout=-1"):
        split_run_config({"timeout": -1})


def test_partition_id_is_checked_against_the_run():
    assert partition_id({"partition-id": "2", "num-partitions": 4}, 4) == 2
    with pytest.raises(ConfigError, match="lacks partition-id"):
        partition_id({}, 4)
    with pytest.raises(ConfigError, match="partition-id=4 is out of range"):
        partition_id({"partition-id": 4}, 4)
    with pytest.raises(ConfigError, match="num-partitions=3 differs"):
        partition_id({"partition-id": 0, "num-partitions": 3}, 4)


def test_flower_app_config_holds_valid_parameters_at_their_defaults():
    config, warnings = load_and_validate(APP / "pyproject.toml")  # imports both components too
    app_config = config["tool"]["flwr"]["app"]["config"]
    flat = {k: v for k, v in app_config.items() if k not in ("out-dir", "timeout", "wait-nodes")}
    expected = to_run_config(build_config({}))
    assert {k: expected[k] for k in flat} == flat
    assert {"rank", "mu", "num_clients", "rounds", "algorithm"} <= set(flat) <= set(defaults())
    assert list(flat) == list(defaults())  # every registered parameter, in the registry's order
    assert tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "workbench.flower.server_app:app",
        "clientapp": "workbench.flower.client_app:app",
    }


# ---- the server's refusals, without Ray ---------------------------------------------------
@pytest.fixture
def task_identity():
    """Messages read the identity of the running task; a unit test has none, so set one."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def _reply(message: Message, upload: dict, flops: int = 10, rolled_back: int = 0) -> Message:
    """A client's train reply carrying `upload`."""
    metrics = MetricRecord(
        {"train-flops": flops, "train-loss": 0.5, "num-examples": 100, "rolled-back": rolled_back}
    )
    return Message(RecordDict({"arrays": to_record(upload), "metrics": metrics}), reply_to=message)


def test_a_round_whose_every_upload_is_refused_stops_the_flower_run_as_in_process(task_identity):
    config = build_config({**FLOWER_TINY, "num_clients": 3})
    info = {cid: {"num-train": 100} for cid in range(3)}
    strategy = WorkbenchStrategy(config, {cid: 10 + cid for cid in range(3)}, info)
    arrays = strategy.initial_arrays()
    messages = {
        m.metadata.dst_node_id - 10: m for m in strategy.configure_train(1, arrays, ConfigRecord(), grid=None)
    }
    nan = {name: torch.full_like(t, math.nan) for name, t in from_record(arrays).items()}
    replies = [_reply(messages[cid], nan, rolled_back=int(cid != 2)) for cid in range(3)]
    with pytest.raises(RoundRefusedError, match="round 1: the server refused the upload of every"):
        strategy.aggregate_train(1, replies)
    assert [(e.client, e.action) for e in strategy.events] == [(0, RESTORED), (1, RESTORED), (2, KEPT)]
    assert strategy.ledger.refused == {0: 1, 1: 1, 2: 1}


def test_malformed_and_failed_updates_are_refused_and_the_round_completes(task_identity):
    config = build_config({**FLOWER_TINY, "num_clients": 5})
    info = {cid: {"num-train": 100 + cid} for cid in range(5)}
    strategy = WorkbenchStrategy(config, {cid: 10 + cid for cid in range(5)}, info)
    arrays = strategy.initial_arrays()
    messages = {
        m.metadata.dst_node_id - 10: m for m in strategy.configure_train(1, arrays, ConfigRecord(), grid=None)
    }
    theta = from_record(arrays)
    good = {name: t + 1.0 for name, t in theta.items()}
    nan = {name: torch.full_like(t, math.nan) for name, t in theta.items()}
    wide = {name: torch.zeros(t.shape[0] + 1, *t.shape[1:]) for name, t in theta.items()}
    renamed = {name + "x": t for name, t in theta.items()}
    replies = [
        _reply(messages[0], good),
        _reply(messages[1], nan),
        _reply(messages[2], wide),
        _reply(messages[3], renamed),
        Message(Error(code=0, reason="boom"), reply_to=messages[4]),
    ]
    new, metrics = strategy.aggregate_train(1, replies)
    assert metrics["accepted"] == 1 and metrics["refused"] == 4
    for name, t in from_record(new).items():  # only client 0's update was averaged
        assert torch.equal(t, good[name])
    errors = {r["client"]: r["error"] for r in strategy.refusals}
    assert "contains NaN or infinity" in errors[1]
    assert "shape (5, 500) != (4, 500)" in errors[2]
    assert "keys differ: missing" in errors[3]
    assert "the ClientApp failed: boom" in errors[4]
    assert strategy.ledger.up[1] == payload_bytes(nan) and strategy.ledger.flops[4] == 0


# ---- every supported algorithm, through the apps, without Ray ----------------------------
class LoopbackGrid(Grid):
    """Hands each message to the ClientApp of its node in this process: the ServerApp and
    ClientApp code paths of a real run, without Ray or a network."""

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        self.app = app
        self.contexts = {
            100 + k: Context(
                run_id=7,
                node_id=100 + k,
                state=RecordDict(),
                node_config={"partition-id": k, "num-partitions": num_nodes},
                run_config={},
            )
            for k in range(num_nodes)
        }

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            try:
                replies.append(self.app(message, self.contexts[message.metadata.dst_node_id]))
            except Exception as error:  # what Flower's runtimes turn a ClientApp failure into
                replies.append(Message(Error(code=0, reason=repr(error)), reply_to=message))
        return replies


def assert_flower_equals_in_process(config, tmp_path) -> pd.DataFrame:
    """Run config through the apps and in-process; the two tables must be identical."""
    run_config = to_run_config(config, FlowerSettings(out_dir=str(tmp_path / "run")))
    app = make_client_app(run_config, str(tmp_path / "nodes"))
    run_server(LoopbackGrid(app, config.federation.num_clients), run_config)
    _, table = read_run(tmp_path / "run")
    expected = run_experiment(config, out_dir=tmp_path / "in-process")
    pd.testing.assert_frame_equal(table, read_run(expected.run_dir)[1], check_exact=True)
    return table


@pytest.mark.flower
@pytest.mark.parametrize(
    "variant",
    [
        {"use_rslora": True, "adapter_init": "gaussian", "adapter_schedule": "model_plus"},
        {"adapter_weights": "uniform", "adapter_inference": "private", "max_train_samples": 20},
        {"adapter_init": "small_b", "lora_plus_ratio": 8, "adapter_placement": "fc2"},
    ],
)
def test_fedlora_variants_run_through_the_apps_as_in_process(variant, tmp_path, task_identity, one_thread):
    """Every FedLoRA variant (issue 21) travels in the run config and trains as in-process."""
    config = build_config({**FLOWER_TINY, "algorithm": "fedlora", "fraction": 0.5, "seed": 1, **variant})
    assert_flower_equals_in_process(config, tmp_path)


@pytest.mark.flower
@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_every_algorithm_runs_through_the_apps_as_in_process(algorithm, tmp_path, task_identity, one_thread):
    """Sampling half the clients, evaluating every 2nd round: identical tables."""
    config = build_config(
        {**FLOWER_TINY, "algorithm": algorithm, "rounds": 3, "eval_every": 2, "fraction": 0.5, "seed": 3}
    )
    table = assert_flower_equals_in_process(config, tmp_path)
    assert sorted(table["round"].unique()) == [2, 3]
    # validation travels with the evaluation: the same held-out samples as in-process
    assert table["val_accuracy"].notna().all() and (table["num_val"] > 0).all()
    details = json.loads((tmp_path / "run" / "flower.json").read_text())
    assert len(details["round_seconds"]) == 3  # every round timed, evaluated or not
    if algorithm == "fedkd":  # uploads travel SVD-compressed (validated by reconstruction), not dense
        ups = [m for m in details["messages"] if m["direction"] == "up"]
        assert ups and any(key.endswith(".S") for m in ups for key in m["keys"])


@pytest.mark.flower
def test_the_server_asks_only_for_evaluations_that_went_stale(tmp_path, task_identity, one_thread):
    """An idle client's evaluation is reused until it trains again (as in-process): evaluate
    messages go only to clients never evaluated, and the table still equals in-process."""
    config = build_config({**FLOWER_TINY, "num_clients": 6, "rounds": 4, "fraction": 0.34})
    run_config = to_run_config(config, FlowerSettings(out_dir=str(tmp_path / "run")))
    grid = LoopbackGrid(make_client_app(run_config, str(tmp_path / "nodes")), 6)
    asked = []
    send = grid.send_and_receive
    grid.send_and_receive = lambda messages, **kw: send(asked.append(messages) or messages, **kw)
    run_server(grid, run_config)
    evaluations = [m for batch in asked for m in batch if m.metadata.message_type == MessageType.EVALUATE]
    # round 1: each client not sampled (the sampled ones evaluate with their upload); later
    # rounds: none, since every client then holds an evaluation from its last training
    assert len(evaluations) == 6 - len(sample_clients(6, 0.34, config.run.seed, 1))
    expected = run_experiment(config, out_dir=tmp_path / "in-process")
    pd.testing.assert_frame_equal(
        read_run(tmp_path / "run")[1], read_run(expected.run_dir)[1], check_exact=True
    )


@pytest.mark.flower
def test_a_flower_run_whose_every_upload_is_refused_stops_keeping_its_run_directory(
    tmp_path, task_identity, one_thread
):
    config = build_config(FLOWER_TINY)
    run_config = to_run_config(config, FlowerSettings(out_dir=str(tmp_path / "run")))
    app = make_client_app(run_config, str(tmp_path / "nodes"), faulty({cid: "nan" for cid in range(4)}))
    summary = run_server(LoopbackGrid(app, config.federation.num_clients), run_config)
    assert summary["stopped"].startswith("round 1: the server refused the upload of every")
    assert summary["refused"] == 4 and summary["rounds"] == 0
    events = pd.read_csv(tmp_path / "run" / "events.csv")
    assert events["client"].tolist() == [0, 1, 2, 3] and (events["action"] == KEPT).all()


# ---- Ray's start-up, without Ray -------------------------------------------------------------
class FakeRay:
    """ray.init that times out like a Ray node on a loaded machine (leaving a process behind)
    `failures` times, then starts."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.left_behind, self.started = failures, 0, [], False

    def init(self, **kwargs) -> None:
        self.calls += 1
        # no job runtime_env: actors then start in the workers Ray started in advance
        assert kwargs["include_dashboard"] is False and "runtime_env" not in kwargs
        if self.calls <= self.failures:
            self.left_behind.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
            raise Exception("The current node timed out during startup.")
        self.started = True

    def is_initialized(self) -> bool:
        return self.started

    def shutdown(self) -> None:
        pass


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    def install(failures: int) -> FakeRay:
        fake = FakeRay(failures)
        for name in ("init", "is_initialized", "shutdown"):
            monkeypatch.setattr(ray, name, getattr(fake, name))
        return fake

    return install


def test_a_timed_out_ray_start_is_retried_and_what_it_left_is_stopped(fake_ray):
    fake = fake_ray(failures=2)
    start_ray({}, budget_s=60)
    assert fake.calls == 3 and fake.started
    assert all(proc.poll() is not None for proc in fake.left_behind)  # stopped by PID


def test_ray_that_never_starts_fails_with_one_clear_message(fake_ray):
    fake = fake_ray(failures=10**6)
    with pytest.raises(
        RuntimeError,
        match=r"Ray did not start on this machine: \d+ attempt\(s\) "
        r"within 1 s.*timed out during startup.*overloaded",
    ):
        start_ray({}, budget_s=1)
    assert all(proc.poll() is not None for proc in fake.left_behind)


def test_ray_environment_keeps_ray_on_loopback_and_restores_the_callers(monkeypatch):
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "7")
    monkeypatch.setenv("PYTHONPATH", "/callers/own")
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    with simulation.ray_environment():
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert int(os.environ["RAY_raylet_start_wait_time_s"]) >= 60  # noqa: SIM112 (Ray's own spelling)
        assert set(RAY_ENV) <= set(os.environ)
        # Ray's processes inherit the driver's import path, and the caller's own entries
        assert os.environ["PYTHONPATH"].split(os.pathsep) == [*sys.path, "/callers/own"]
    assert os.environ["RAY_raylet_start_wait_time_s"] == "7"  # noqa: SIM112 (Ray's own spelling)
    assert os.environ["PYTHONPATH"] == "/callers/own"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


@pytest.mark.flower
def test_fedlora_sends_only_its_adapter_and_keeps_the_private_model_on_its_node(tmp_path, task_identity):
    """4 clients × 2 rounds through the apps: what travels is the adapter, counted as sent; the
    private model lives in each node's storage."""
    config = build_config(FLOWER_TINY)
    run_config = to_run_config(config, FlowerSettings(out_dir=str(tmp_path / "run")))
    app = make_client_app(run_config, str(tmp_path / "nodes"))
    run_server(LoopbackGrid(app, config.federation.num_clients), run_config)
    details = json.loads((tmp_path / "run" / "flower.json").read_text())
    assert details["refused"] == [] and len(details["messages"]) == 2 * 2 * 4
    assert len(details["round_seconds"]) == 2 and all(s > 0 for s in details["round_seconds"])
    for message in details["messages"]:
        assert all("lora_" in key for key in message["keys"]), message["keys"]
        assert message["tensor_bytes"] == 4 * 4 * (500 + 10)
        assert message["serialized_bytes"] > message["tensor_bytes"]
    for cid in range(4):
        (state_file,) = (tmp_path / "nodes").glob(f"run-*/client-{cid}.pt")
        saved = torch.load(state_file, weights_only=True)["model"]
        assert any(key.startswith("conv1.") for key in saved)


# ---- Flower's simulation engine ------------------------------------------------------------
@pytest.mark.flower
@pytest.mark.ray
def test_fedkd_on_flower_simulation_equals_the_in_process_run(tmp_path, no_telemetry, one_thread):
    """FedKD on the simulation engine (Ray), 4 clients × 2 rounds: its clients learn the round
    from `begin_round` (the SVD energy of their compressed uploads), the server validates the
    variable-rank uploads by reconstruction, and the run equals the in-process one (same
    sampling, seeds, partition, aggregation; one torch thread like the Ray actors, see
    docs/flower.md). FedLoRA's own runs on Flower: the apps above and the TLS deployment."""
    config = build_config({**FLOWER_TINY, "algorithm": "fedkd"})
    expected = run_experiment(config, out_dir=tmp_path / "in-process")
    got = simulate(config, tmp_path / "flower", state_dir=tmp_path / "nodes")
    (flat, table), (ref_flat, ref_table) = read_run(got.run_dir), read_run(expected.run_dir)
    assert flat == ref_flat == config.to_flat()
    pd.testing.assert_frame_equal(table, ref_table, check_exact=True)
    assert got.summary == expected.summary
    details = json.loads((tmp_path / "flower" / "flower.json").read_text())
    ups = [m for m in details["messages"] if m["direction"] == "up"]
    assert details["refused"] == [] and len(ups) == 2 * 4
    assert len(details["round_seconds"]) == 2 and all(s > 0 for s in details["round_seconds"])
    assert len(list((tmp_path / "nodes").glob("run-*/client-*.pt"))) == 4  # state on the nodes
    assert all(any(key.endswith(".S") for key in m["keys"]) for m in ups)  # compressed, not dense


@pytest.mark.flower
@pytest.mark.parametrize(
    "method",
    [
        {"algorithm": "fedlora"},
        {"algorithm": "fml", "fml_shared_model": "resnet8_w8"},
        {"algorithm": "fedlora", "models": "vit", "adapter_placement": "attention"},
    ],
)
def test_a_mixed_group_runs_through_the_apps_as_in_process(method, tmp_path, task_identity, one_thread):
    """CNN, ResNet (BatchNorm kept on the node) and ViT clients: identical tables."""
    flat = {**FLOWER_TINY, "models": "mixed", "num_clients": 3, "fraction": 0.67, "seed": 2, **method}
    assert_flower_equals_in_process(build_config(flat), tmp_path)


@pytest.mark.flower
@pytest.mark.parametrize("late_uploads", ["drop", "next_round"])
def test_dropout_and_a_deadline_run_through_the_apps_as_in_process(
    late_uploads, tmp_path, task_identity, one_thread
):
    """The same clients drop out and miss the same deadline: identical tables and events."""
    flat = {**FLOWER_TINY, "rounds": 3, "num_clients": 4, "max_train_samples": 24, "seed": 1}
    flat |= {"dropout": 0.3, "device_flops": 1e9, "device_profile": "tiers", "late_uploads": late_uploads}
    table = assert_flower_equals_in_process(build_config({**flat, "round_deadline": 2.0}), tmp_path)
    events = [(tmp_path / d / "events.csv").read_bytes() for d in ("run", "in-process")]
    assert events[0] == events[1] and b",dropped," in events[0] and b",late," in events[0]
    assert (table["missed"] > 0).any() and table["sim_time"].max() > 0


@pytest.mark.parametrize("mode", ["central", "local"])
def test_client_level_dp_runs_through_the_apps_as_in_process(mode, tmp_path, task_identity, one_thread):
    """DP's clipping and seeded noise (server-side or on each node) give Flower the in-process
    table bit for bit, its epsilon column included."""
    pytest.importorskip(
        "dp_accounting", reason="the privacy extra is not installed: pip install -e .[privacy]"
    )
    config = build_config(
        {
            **FLOWER_TINY,
            "algorithm": "fedlora",
            "fraction": 0.5,
            "seed": 2,
            "dp_noise_multiplier": 0.8,
            "dp_clip": 0.3,
            "dp_mode": mode,
        }
    )
    table = assert_flower_equals_in_process(config, tmp_path)
    assert table["epsilon"].notna().all() and table["epsilon"].is_monotonic_increasing
