"""One owner per sweep folder: a second owner is refused naming the holder, a killed holder's
lock is taken over with a message, and two `sweep` commands on one folder never both run."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import SWEEP_TINY, wait_for

from workbench.core.errors import UserError
from workbench.core.facts import LOCK_FILE
from workbench.core.folder_lock import FolderInUseError, owned

ROOT = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys\nfrom workbench.core.folder_lock import owned\n"
    "with owned(sys.argv[1], 'sweep'):\n    print('held', flush=True)\n    sys.stdin.read()\n"
)


def holder(folder: Path) -> subprocess.Popen:
    """A process that owns `folder` until its stdin closes (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout.readline().strip() == "held", "the holder never took the lock"
    return process


def test_a_second_owner_is_refused_naming_the_holder_and_the_lock_goes_with_its_owner(tmp_path, capsys):
    process = holder(tmp_path)
    try:
        with pytest.raises(FolderInUseError) as refused, owned(tmp_path, "sweep"):
            pass
        message = str(refused.value)
        assert (
            f"folder {tmp_path} is in use by sweep (PID {process.pid} on host {socket.gethostname()}"
            in message
        )
        assert f"stop it (kill {process.pid})" in message
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert not (tmp_path / LOCK_FILE).exists()  # an owner that ends removes its lock file
    with owned(tmp_path, "sweep"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert capsys.readouterr().err == ""  # nothing was left behind to take over


def test_the_lock_of_a_killed_owner_is_taken_over_with_a_message(tmp_path, capsys):
    process = holder(tmp_path)
    process.kill()
    process.wait(timeout=60)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == process.pid  # left behind
    with owned(tmp_path, "tune") as folder:
        assert folder == tmp_path.resolve()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["purpose"] == "tune"
    err = capsys.readouterr().err
    assert f"note: taking over {tmp_path}: its lock was left by sweep (PID {process.pid}" in err
    assert f"PID {process.pid} is gone" in err


def test_another_hosts_lock_is_named_with_its_host(tmp_path, capsys):
    left = {"purpose": "sweep", "pid": 4242, "host": "node-7", "started": time.time()}
    (tmp_path / LOCK_FILE).write_text(json.dumps(left))
    with owned(tmp_path, "sweep"):  # no process holds it: its host released it
        pass
    assert "its host released the lock (this host cannot check PID 4242 there)" in capsys.readouterr().err
    refusal = str(FolderInUseError(tmp_path, left))
    assert "in use by sweep (PID 4242 on host node-7" in refusal and "kill 4242 on node-7" in refusal


def test_an_owner_may_take_its_own_folder_again(tmp_path):
    with owned(tmp_path, "tune"), owned(tmp_path, "sweep"):  # a study running its sweep points
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_filesystem_without_locks_is_an_error_not_a_silent_lack_of_one(tmp_path, monkeypatch):
    import fcntl

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(UserError, match="this filesystem refuses file locks"), owned(tmp_path, "sweep"):
        pass


def workbench(*args: str, **kwargs) -> subprocess.Popen:
    """`python -m workbench ARGS` in a session of its own (so a test can kill all of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        text=True,
        **kwargs,
    )


@pytest.mark.kernels
def test_two_sweeps_on_one_folder_never_both_run_and_a_killed_sweeps_folder_resumes(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"parameters": {**SWEEP_TINY, "checkpoint_every": 1}, "grid": {"rank": [1, 2]}})
    )
    out = tmp_path / "sweep"
    first = workbench(
        "sweep", str(spec), "--out", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lock = out / LOCK_FILE
        owner = lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text()
        assert wait_for(owner, 120), "the first sweep never took its folder"
        started = time.monotonic()
        second = workbench(
            "sweep", str(spec), "--out", str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, stderr = second.communicate(timeout=120)
        waited = time.monotonic() - started
        assert second.returncode == 2 and stdout == "" and "Traceback" not in stderr
        assert stderr.startswith(f"error: folder {out.resolve()} is in use by sweep (PID {first.pid} on host")
        assert waited < 60, f"the second sweep was refused only after {waited:.0f} s"
        done = lambda: any(
            json.loads(s.read_text())["state"] == "done" for s in out.glob("points/*/status.json")
        )
        assert wait_for(done, 300), "no point finished"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # killed: its lock file stays behind, unlocked
        first.wait()
    finished = {s.parent.name: s.read_text() for s in out.glob("points/*/status.json")}
    third = workbench("sweep", str(spec), "--out", str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = third.communicate(timeout=600)
    assert third.returncode == 0, stderr
    assert f"note: taking over {out.resolve()}: its lock was left by sweep (PID {first.pid}" in stderr
    assert f"sweep: 2 points, {len(finished)} already done, {2 - len(finished)} to run" in stdout
    for point, status in finished.items():  # finished points did not run again
        assert (out / "points" / point / "status.json").read_text() == status
    states = [p["state"] for p in json.loads((out / "sweep.json").read_text())["points"]]
    assert states == ["done", "done"] and (out / "report.html").is_file() and not (out / LOCK_FILE).exists()
