"""A Flower deployment on loopback: a SuperLink and SuperNodes as separate processes, with TLS
and SuperNode authentication, running 2 rounds of FedLoRA through `flwr run`.

Only 127.0.0.1 is used; ports are picked free; every process started here (and its children)
is stopped in a `finally`, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")
psutil = pytest.importorskip("psutil")

from workbench.config import build_config  # noqa: E402
from workbench.core.run_files import read_run  # noqa: E402
from workbench.flower.certs import make_certificates, make_node_keys  # noqa: E402
from workbench.loop.runner import run_experiment  # noqa: E402

pytestmark = pytest.mark.flower

APP = Path(__file__).resolve().parents[1] / "workbench" / "flower" / "app"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
TLS_REFUSED = 305  # the exit code flower-supernode logs when it cannot join the SuperLink
# start-up budgets for a loaded machine (each process imports torch and Flower first); a budget
# that runs out fails the test with the process logs, not with a bare timeout
START_S, COMMAND_S, RUN_S = 180, 180, 600


def free_port() -> int:
    """A TCP port nobody listens on right now (on loopback)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, seconds: float, log: str = "") -> None:
    """Block until something accepts connections on the port; fail saying what did not start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(
        f"nothing listens on {HOST}:{port} after {seconds} s (the machine may be overloaded); its log:\n{log}"
    )


def run_command(procs: Processes, args: list[str], seconds: float) -> subprocess.CompletedProcess:
    """A venv command run to its end; past its budget, a failure with every log so far."""
    try:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]], env=procs.env, timeout=seconds, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired as error:
        logs = "\n".join(f"--- {name}\n{procs.log(name)[-3000:]}" for name in procs.started)
        pytest.fail(
            f"`{' '.join(args[:3])}` did not finish within {seconds} s (the machine may "
            f"be overloaded); output: {error.stdout!r}\n{logs}"
        )


class Processes:
    """Processes started by this test, with their logs; stop_all ends them and their children."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        """Logs go to files in `logs`; every process gets `env`."""
        self.logs, self.env, self.started = logs, env, {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        """Start a venv command in its own session, output to logs/<name>.log."""
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What a started process has written so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def family(self) -> list[psutil.Process]:
        """Started processes, their descendants, and the SuperExecs they spawned, which outlive
        a parent that exited early (they are found by the `--parent-pid` they were given)."""
        pids = {proc.pid for proc in self.started.values()}
        members = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if p.pid in pids or any(
                cmd[i : i + 2] == ["--parent-pid", str(pid)] for pid in pids for i in range(len(cmd) - 1)
            ):
                members[p.pid] = p
        for p in list(members.values()):
            try:
                members.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(members.values())

    def stop_all(self) -> None:
        """SIGTERM every process of the family, then SIGKILL what is left after 10 s."""
        family = self.family()
        for member in family:
            try:
                member.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(family, timeout=10)
        for member in alive:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in self.started.values():
            proc.wait(timeout=10)


def supernode(
    port: int,
    ca: Path,
    key: Path,
    partition: int,
    clients: int,
    state: Path | None = None,
    retries: bool = True,
) -> list[str]:
    """flower-supernode arguments for one client on loopback."""
    config = f"partition-id={partition} num-partitions={clients}"
    if state is not None:
        config += f" state-dir='{state}'"
    args = [
        "flower-supernode",
        "--superlink",
        f"{HOST}:{port}",
        "--root-certificates",
        str(ca),
        "--auth-supernode-private-key",
        str(key),
        "--node-config",
        config,
        "--host",
        HOST,
        "--port",
        str(free_port()),
    ]
    return args if retries else args + ["--max-retries", "1", "--max-wait-time", "20"]


def assert_same_as_in_process(run_dir: Path, flat: dict, table: pd.DataFrame) -> None:
    """The in-process loop, on as many torch threads as the ClientApps used, gives this table."""
    info = json.loads((run_dir / "flower.json").read_text())["clients"]
    (threads,) = {client["torch-threads"] for client in info.values()}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        expected = run_experiment(build_config(flat)).table
    finally:
        torch.set_num_threads(before)
    pd.testing.assert_frame_equal(table, expected.reset_index(drop=True), check_exact=True)


def flower_env(tmp_path: Path, port: int, ca_cert: Path) -> dict[str, str]:
    """Environment of every Flower process: a private FLWR_HOME whose one SuperLink connection
    (`workbench`) is this test's, over TLS; no telemetry or update checks (no internet)."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "workbench"\n\n[superlink.workbench]\n'
        f'address = "{HOST}:{port}"\nroot-certificates = "{ca_cert}"\n'
    )
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }  # should anything start Ray: loopback


def start_superlink(procs: Processes, port: int, certs: dict[str, Path]) -> None:
    """A SuperLink with TLS that admits registered SuperNodes only."""
    procs.start(
        "superlink",
        [
            "flower-superlink",
            "--ssl-ca-certfile",
            str(certs["ca_cert"]),
            "--ssl-certfile",
            str(certs["server_cert"]),
            "--ssl-keyfile",
            str(certs["server_key"]),
            "--enable-supernode-auth",
            "--host",
            HOST,
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ],
    )
    wait_listening(port, START_S, procs.log("superlink"))


def check_run(run_dir: Path, clients: int, storage: Path) -> None:
    """The run directory is the workbench's, with the adapter's bytes and node-local state."""
    flat, table = read_run(run_dir)
    assert flat["num_clients"] == clients and flat["algorithm"] == "fedlora"
    assert list(zip(table["round"], table["client"])) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert table["participated"].all() and table["accuracy"].between(0, 1).all()
    assert (table["bytes_up"] == 4 * 4 * (500 + 10)).all()  # the rank-4 head adapter only
    assert (table["bytes_down"] == table["bytes_up"]).all() and (table["train_flops"] > 0).all()
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 2
    for cid in range(clients):  # each private model stayed in its own node's storage
        assert list((storage / f"node{cid}").glob(f"run-*/client-{cid}.pt"))
    assert_same_as_in_process(run_dir, flat, table)


def test_superlink_and_supernodes_with_tls_run_fedlora(tmp_path):
    clients, port = 2, free_port()
    certs = make_certificates(tmp_path / "certs")
    impostor = make_certificates(tmp_path / "impostor", name="impostor-ca")
    keys = {n: make_node_keys(tmp_path / "keys", n) for n in ("node0", "node1", "intruder")}
    env = flower_env(tmp_path, port, certs["ca_cert"])
    procs = Processes(tmp_path / "logs", env)
    try:
        start_superlink(procs, port, certs)
        for cid in range(clients):  # only registered SuperNodes may join
            registered = run_command(
                procs, ["flwr", "supernode", "register", str(keys[f"node{cid}"][1]), "workbench"], COMMAND_S
            )
            assert registered.returncode == 0, registered.stdout + registered.stderr
            procs.start(
                f"node{cid}",
                supernode(
                    port,
                    certs["ca_cert"],
                    keys[f"node{cid}"][0],
                    cid,
                    clients,
                    tmp_path / "storage" / f"node{cid}",
                ),
            )
        wrong_ca = procs.start(
            "wrong-ca", supernode(port, impostor["ca_cert"], keys["node0"][0], 0, clients, retries=False)
        )
        intruder = procs.start(
            "intruder", supernode(port, certs["ca_cert"], keys["intruder"][0], 1, clients, retries=False)
        )
        run_config = (
            f"num_clients={clients} rounds=2 batch_size=64 device='cpu' "
            f"out-dir='{tmp_path / 'run'}' wait-nodes={START_S} timeout={COMMAND_S}"
        )
        run = run_command(
            procs, ["flwr", "run", str(APP), "workbench", "--run-config", run_config, "--stream"], RUN_S
        )
        assert run.returncode == 0, run.stdout + run.stderr
        check_run(tmp_path / "run", clients, tmp_path / "storage")
        # a SuperNode that does not trust the SuperLink's certificate never connects ...
        assert wrong_ca.wait(timeout=COMMAND_S) != 0
        assert "CERTIFICATE_VERIFY_FAILED" in procs.log("wrong-ca")
        assert f"Exit Code: {TLS_REFUSED}" in procs.log("wrong-ca")
        # ... and one with a valid TLS connection but an unregistered key is refused by the link
        assert intruder.wait(timeout=COMMAND_S) != 0
        assert "Failed to activate SuperNode" in procs.log("intruder")
        assert "Attempted to register SuperNode with public key" in procs.log("superlink")
    finally:
        procs.stop_all()
