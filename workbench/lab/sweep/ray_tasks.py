"""The Ray sweep executor: each point is a Ray task on an existing Ray cluster.

A task runs the point exactly as the local executor does (papermill on a warm kernel that the
Ray worker process keeps across its tasks), in a scratch folder on whichever node Ray picked,
and returns the point's files; the driver writes them into the sweep folder. Nodes therefore
need no shared filesystem, only the workbench's dependencies: the driver ships its own
`workbench` package (Ray `py_modules`) and the notebook with every task, so all nodes run the
driver's code. A failed point's files (its checkpoint included) come back too, and are sent
with its next attempt, so a rerun resumes it like the local executor does.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import workbench
from workbench.config import ConfigError
from workbench.core.facts import STATUS_FILE
from workbench.core.files import write_bytes as replace_bytes
from workbench.lab.sweep.executor_base import Done, Execution
from workbench.lab.sweep.schedule import Job, PointQueue

Files = dict[str, bytes]  # a point folder's files by relative path
PACKAGE = Path(workbench.__file__).resolve().parent
_KERNEL: dict[str, Any] = {}  # per Ray worker process: its warm kernel and what it was made for


def read_files(folder: Path) -> Files:
    """Every file under folder by relative path (empty when the folder does not exist)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: Files) -> None:
    """Write the files under folder, each replaced whole (its status last, so a point is never
    done half-written)."""
    for name in sorted(files, key=lambda n: n == STATUS_FILE):
        replace_bytes(folder / name, files[name])


def _kernel(threads: int, imports: tuple[str, ...]) -> Any:
    """This worker process's warm kernel, replaced when threads, imports or GPUs differ."""
    from workbench.lab.sweep.warm_kernels import WarmKernel

    key = (threads, imports, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if _KERNEL.get("key") != key:
        if "kernel" in _KERNEL:
            _KERNEL["kernel"].shutdown()
        _KERNEL.update(key=key, kernel=WarmKernel(threads, imports))
    return _KERNEL["kernel"]


def run_point_task(
    point_id: str,
    notebook: str,
    flat: dict[str, Any],
    files: Files,
    timeout: int,
    threads: int,
    imports: tuple[str, ...],
) -> tuple[dict[str, Any], Files]:
    """A Ray task body: run one point in a scratch folder; return its status and files."""
    import ray

    from workbench.lab.sweep.warm_kernels import run_point

    # the kernel is a child process: let it import the same workbench this worker runs
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(PACKAGE.parent), *paths]))
    scratch = Path(tempfile.mkdtemp(prefix=f"workbench-{point_id}-"))
    try:
        write_files(scratch, files)
        (scratch / "input.ipynb").write_text(notebook)
        node = ray.get_runtime_context().get_node_id()
        status = run_point(
            _kernel(threads, imports), scratch / "input.ipynb", scratch, flat, timeout, where=f"ray:{node}"
        )
        (scratch / "input.ipynb").unlink()
        return status, read_files(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def connect(address: str | None) -> None:
    """Join an existing cluster (address, else RAY_ADDRESS, else the local `ray start` head)."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    if target != "auto":
        _check_reachable(target)
    try:
        ray.init(
            address=target,
            runtime_env={"py_modules": [str(PACKAGE)], "excludes": ["__pycache__"]},
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(
            f"--executor ray: cannot join a Ray cluster at {target!r} ({error}); "
            f"start one with `ray start --head` or pass --address HOST:PORT"
        ) from None


def _check_reachable(target: str, timeout_s: float = 10.0) -> None:
    """Refuse an address where nothing listens at once: Ray itself retries such an address for
    many minutes before it gives up."""
    import socket

    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {target!r}: give HOST:PORT of a Ray head node (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(
            f"--executor ray: nothing answers at {target!r} ({error}); start a head with "
            f"`ray start --head` and pass the address it prints"
        ) from None


def capacity(cpus: float, gpus: float) -> int:
    """How many points the cluster can run at once with these resources per point."""
    import ray

    total = ray.cluster_resources()
    slots = math.floor(total.get("CPU", 0) / cpus) if cpus > 0 else math.inf
    if gpus > 0:
        slots = min(slots, math.floor(total.get("GPU", 0) / gpus))
    if not slots or slots == math.inf:
        raise ConfigError(
            f"the Ray cluster ({total.get('CPU', 0)} CPUs, {total.get('GPU', 0)} "
            f"GPUs) cannot fit one point needing {cpus} CPUs and {gpus} GPUs"
        )
    return int(slots)


def run_ray(
    points: PointQueue,
    notebook: str | Path,
    timeout: int,
    on_done: Done,
    imports: tuple[str, ...],
    execution: Execution,
) -> int:
    """Run the queued points as Ray tasks (at most execution.workers at once, default all that
    fit); return the number of points that ran in parallel."""
    import ray

    cpus, gpus = execution.cpus, execution.gpus
    connect(execution.address)
    try:
        slots = min(len(points), capacity(cpus, gpus), execution.workers or len(points))
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_point_task)
        text, threads = Path(notebook).read_text(), execution.threads or max(1, int(cpus))
        running: dict[Any, Job] = {}
        while len(points) or running:
            while len(running) < slots and (job := points.take()) is not None:
                point_id, folder, flat = job
                ref = task.remote(point_id, text, flat, read_files(Path(folder)), timeout, threads, imports)
                running[ref] = job
            ready, _ = ray.wait(list(running), num_returns=1)
            point_id, folder, flat = running.pop(ready[0])
            status = _collect(ready[0], Path(folder))
            points.finished(flat, status)
            on_done(point_id, status)
        return slots
    finally:
        ray.shutdown()


def _collect(ref: Any, folder: Path) -> dict[str, Any]:
    """Write a finished task's files into the sweep folder; a lost task becomes a failed point."""
    import json

    import ray

    try:
        status, files = ray.get(ref)
    except Exception as error:  # the task or its node died: record it, keep the others going
        status = {"state": "failed", "error": f"{type(error).__name__}: {error}"}
        files = {STATUS_FILE: json.dumps(status, indent=2).encode()}
    write_files(folder, files)
    return status
