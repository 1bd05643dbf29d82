"""The Ray executor on a real two-node Ray cluster on 127.0.0.1, against the local executor."""

import json
import os
import signal

import pytest

ray = pytest.importorskip("ray", reason="the flower extra (which installs Ray) is missing")
pytest.importorskip("flwr", reason="the flower extra is missing")
psutil = pytest.importorskip("psutil")

from helpers import tiny_spec  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from workbench.flower.simulation import RAY_ENV  # noqa: E402
from workbench.lab.sweep.executor_base import Execution  # noqa: E402
from workbench.lab.sweep.run import run_sweep  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.kernels]

SPEC = tiny_spec({"algorithm": ["fedlora", "lg_fedavg"]})
START_BUDGET_S = 240  # node start-up on a loaded 2-core machine takes far longer than on a laptop
ATTEMPTS = 3  # Ray waits a fixed 30 s for a raylet to register; a busy machine can miss that


@pytest.fixture
def two_nodes(monkeypatch):
    """Head + one more node, each a real GCS/raylet process set, all on 127.0.0.1; torn down
    by PID. (`ray start --address` refuses to join on loopback, hence ray.cluster_utils.)"""
    # RAY_ENV: loopback only, start-up and GCS request budgets for a busy machine
    for name, value in {
        **RAY_ENV,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }.items():
        monkeypatch.setenv(name, value)
    ours = psutil.Process()
    before = {p.pid for p in ours.children(recursive=True)}
    errors = []
    for _ in range(ATTEMPTS):
        cluster = None
        try:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "wait": False})
            cluster.add_node(num_cpus=1, wait=False)
            cluster.wait_for_nodes(timeout=START_BUDGET_S)
            break
        except Exception as error:  # start-up timed out: clean up and try again
            errors.append(f"{type(error).__name__}: {error}")
            _teardown(cluster, ours, before)
    else:
        pytest.fail(
            f"a two-node Ray cluster on 127.0.0.1 did not start in {ATTEMPTS} attempts "
            f"(is the machine overloaded?): {errors}"
        )
    if not cluster.address.startswith("127.0.0.1:"):
        _teardown(cluster, ours, before)
        pytest.fail(
            f"the Ray cluster bound {cluster.address}, not loopback (was ray imported before conftest?)"
        )
    yield cluster.address
    _teardown(cluster, ours, before)


def _teardown(cluster, ours, before):
    """Stop the cluster, then kill by PID whatever it left behind (kernels included)."""
    started = {p.pid for p in ours.children(recursive=True)} - before
    if ray.is_initialized():
        ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ray_sweep_equals_the_local_sweep_and_resumes(tmp_path, two_nodes):
    execution = Execution(executor="ray", address=two_nodes, cpus=1)
    remote = run_sweep(SPEC, tmp_path / "ray", report=False, execution=execution)
    record = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert [p["state"] for p in record["points"]] == ["done"] * 2, record["points"]
    nodes = {json.loads(s.read_text())["node"] for s in (tmp_path / "ray").glob("points/*/status.json")}
    assert len(nodes) == 2 and all(n.startswith("ray:") for n in nodes)  # both nodes ran points
    assert record["efficiency"]["executor"] == "ray" and record["efficiency"]["workers"] == 2
    for point in (tmp_path / "ray" / "points").iterdir():  # the same folder as a local sweep
        assert {"fedlora.ipynb", "status.json", "run"} <= {p.name for p in point.iterdir()}

    local = run_sweep(SPEC, tmp_path / "local", report=False, execution=Execution(workers=2, threads=1))
    assert remote.read_bytes() == local.read_bytes()  # results.csv, byte for byte

    statuses = lambda: {
        s.parent.name: s.stat().st_mtime_ns for s in (tmp_path / "ray").glob("points/*/status.json")
    }
    (gone,) = (tmp_path / "ray" / "points").glob("p001-*/status.json")
    gone.unlink()  # as if that point had never finished: a rerun runs it alone
    kept = statuses()
    again = run_sweep(SPEC, tmp_path / "ray", report=False, execution=execution)
    record = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert record["efficiency"]["points_run"] == 1
    assert {k: v for k, v in statuses().items() if k in kept} == kept
    assert again.read_bytes() == local.read_bytes()


@pytest.mark.parametrize(
    "address, fragment", [("127.0.0.1:{port}", "nothing answers at"), ("nohost", "give HOST:PORT")]
)
def test_a_ray_address_where_nothing_listens_is_refused_at_once(tmp_path, address, fragment):
    """Ray itself retries a dead address for many minutes; the sweep refuses it before any point."""
    import socket

    from workbench.config import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    execution = Execution(executor="ray", address=address.format(port=port), cpus=1)
    with pytest.raises(ConfigError, match=fragment):
        run_sweep(SPEC, tmp_path / "s", report=False, execution=execution)
    assert not list((tmp_path / "s").glob("points/*/status.json"))
