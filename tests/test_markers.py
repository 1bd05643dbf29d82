"""The spawn guard: a test that starts a kernel, server or browser carries the marker that says so."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from spawn_guard import SpawnGuard, command_line, needed_marker, package_dir

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_make_check_leaves_out_every_registered_marker_and_the_docs_name_each() -> None:
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":")[0] for line in pytest_ini["markers"]}
    fast = re.search(r"^FAST := not \((.+)\)$", (ROOT / "Makefile").read_text(), re.M)
    assert fast and set(fast[1].split(" or ")) == registered
    section = (ROOT / "docs" / "architecture.md").read_text().split("## 10. Tests")[1]
    assert set(re.findall(r"^\| `(\w+)` \|", section, re.M)) == registered


def test_real_command_lines_name_the_marker_they_need() -> None:
    kernel = KernelSpecManager().get_kernel_spec("python3").argv  # what papermill's kernels run
    kernel = [sys.executable, *kernel[1:]]
    from playwright._impl._driver import compute_driver_executable

    driver = list(compute_driver_executable())
    assert needed_marker(kernel) == "kernels"
    assert needed_marker([sys.executable, "-m", "workbench", "sweep", "spec.yaml"]) == "kernels"
    assert needed_marker([sys.executable, "-m", "jupyterlab", "--no-browser"]) == "jupyterlab"
    assert needed_marker([str(BIN / "jupyter-lab"), "--port=0"]) == "jupyterlab"
    assert needed_marker([*driver, "run-driver"]) == "browser"
    assert needed_marker(["/usr/bin/chromium", "--headless", "--dump-dom", "r.html"]) == "browser"
    for program in ("flower-superlink", "flower-supernode", "flwr", "flwr-simulation"):
        assert needed_marker([str(BIN / program), "--insecure"]) == "flower", program


@pytest.mark.skipif(package_dir("ray") is None, reason="Ray (the flower extra) is not installed")
def test_ray_processes_need_the_ray_marker() -> None:
    ray = package_dir("ray")  # Ray's own processes: binaries and scripts inside its package
    assert needed_marker([f"{ray}core/src/ray/gcs/gcs_server", "--gcs_server_port=0"]) == "ray"
    assert needed_marker([sys.executable, "-u", f"{ray}_private/log_monitor.py"]) == "ray"


def test_other_processes_need_no_marker(tmp_path: Path) -> None:
    assert needed_marker(["git", "init", "-q", str(tmp_path / "ray" / "jupyterlab")]) is None
    assert needed_marker([sys.executable, "-m", "workbench", "run", "--rounds", "1"]) is None
    assert needed_marker([sys.executable, "-c", "import ipykernel"]) is None
    assert needed_marker([]) is None
    assert needed_marker(command_line("/bin/sh", ["/bin/sh", "-c", "echo jupyter"])) is None


def test_the_audit_event_gives_the_program_started_and_shell_lines() -> None:
    assert command_line(b"/usr/bin/python3", [b"python", Path("-m"), "ipykernel_launcher"]) == [
        "/usr/bin/python3",
        "-m",
        "ipykernel_launcher",
    ]
    shell = command_line("/bin/sh", ["/bin/sh", "-c", "cd nb && jupyter lab --port=0"])  # shell=True
    assert needed_marker(shell) == "jupyterlab"


def test_an_unmarked_kernel_start_is_refused_naming_test_and_marker(spawn_guard: SpawnGuard) -> None:
    with pytest.raises(RuntimeError, match=r"test_markers\.py::.*not marked @pytest\.mark\.kernels"):
        subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "--version"])
    assert len(spawn_guard.refused) == 1
    spawn_guard.refused.clear()  # refused on purpose: this test passes
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # an ordinary process starts
    assert spawn_guard.refused == []


def test_a_marked_test_may_start_what_its_marker_names(request: pytest.FixtureRequest) -> None:
    guard = SpawnGuard()
    guard.item = request.node
    superlink = str(BIN / "flower-superlink")
    event = (superlink, [superlink, "--insecure"], None, None)  # executable, args, cwd, env
    with pytest.raises(RuntimeError, match="flower"):
        guard.audit("subprocess.Popen", event)
    request.node.add_marker(pytest.mark.flower)
    guard.audit("subprocess.Popen", event)  # now let through
    assert len(guard.refused) == 1
    guard.audit("open", ("notes.txt", "r", 0))  # other events are ignored
