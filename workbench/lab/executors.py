"""Where a sweep's points run, and how well the machine was used: its efficiency.

- local (default): `workers` threads in the sweep process, each driving its own warm kernel
  (`workbench.lab.point_runner`). The experiments run in the kernel processes, so a point that
  crashes takes down at most its own kernel, which is replaced. Points come from one queue
  (`workbench.lab.schedule`: longest configuration first), so a free worker starts the next
  point at once.
- ray: each point is a Ray task on an existing cluster (`workbench.lab.sweep_ray`).

Sweep efficiency = Σ points' experiment seconds (measured around `run_experiment`, written to
each point's status.json as `experiment_s`) ÷ (wall seconds of running the points × parallel
workers). It is printed after every sweep and stored in sweep.json under `efficiency`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.lab.schedule import PointQueue

EXECUTORS = ("local", "ray")
Done = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Execution:
    """Where and how points run: local warm kernels (`workers` of them) or Ray tasks."""

    executor: str = "local"
    workers: int | None = None  # parallel points (local default 1; Ray default: what fits)
    address: str | None = None  # Ray cluster address (default RAY_ADDRESS, else the local head)
    cpus: float = 1.0  # Ray resources per point
    gpus: float = 0.0
    fresh_kernels: bool = False  # local: a new kernel per point instead of a warm one
    threads: int | None = None  # torch threads per point (local: cores ÷ workers; Ray: cpus)

    def check(self) -> None:
        """Refuse impossible settings before anything runs."""
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor={self.executor!r} is unknown; allowed: {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers={self.workers} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1")
        if self.cpus <= 0 or self.gpus < 0:
            raise ConfigError(f"cpus={self.cpus} must be > 0 and gpus={self.gpus} >= 0 per point")
        if self.executor == "local" and (self.address or self.gpus or self.cpus != 1.0):
            raise ConfigError("address, cpus and gpus per point apply to --executor ray only")


def threads_per_worker(workers: int) -> int:
    """Torch threads of each local kernel: the machine's cores shared out (no oversubscription)."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_local(
    points: PointQueue,
    notebook: str | Path,
    workers: int,
    timeout: int,
    on_done: Done,
    imports: tuple[str, ...],
    fresh: bool = False,
    threads: int | None = None,
) -> int:
    """Run the queued points on `workers` warm kernels (a new kernel per point with fresh=True);
    return the number of workers started."""
    from workbench.lab.point_runner import WarmKernel, run_point

    errors: list[BaseException] = []

    def worker() -> None:
        kernel = WarmKernel(threads or threads_per_worker(workers), imports)
        try:
            while (job := points.take()) is not None:
                point_id, folder, flat = job
                status = run_point(kernel, notebook, folder, flat, timeout)
                points.finished(flat, status)
                on_done(point_id, status)
                if fresh:
                    kernel.shutdown()
        except BaseException as error:  # re-raised in the caller's thread, not lost in this one
            errors.append(error)
        finally:
            kernel.shutdown()

    pool = [
        threading.Thread(target=worker, name=f"sweep-worker-{i}", daemon=True)
        for i in range(min(workers, len(points)))
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return len(pool)


def run_points(
    sweep_dir: Path,
    todo: Sequence[tuple[str, dict[str, Any]]],
    notebook: Path,
    timeout: int,
    execution: Execution,
    measured: Sequence[tuple[Mapping[str, Any], float]] = (),
) -> dict[str, Any]:
    """Run (point id, flat parameters) pairs with a progress bar, longest configuration first
    (`measured`: flat parameters and seconds of points done earlier); return the efficiency
    record."""
    from tqdm.auto import tqdm

    from workbench.lab.point_runner import warm_imports

    jobs = [(point_id, str(sweep_dir / "points" / point_id), flat) for point_id, flat in todo]
    points, imports = PointQueue(jobs, measured), warm_imports(flat for _, flat in todo)
    statuses: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(jobs), desc="sweep points", unit="point") as bar:

        def on_done(point_id: str, status: dict[str, Any]) -> None:
            statuses[point_id] = status
            bar.update(1)
            bar.set_postfix(
                left=len(jobs) - bar.n, failed=sum(s["state"] == "failed" for s in statuses.values())
            )

        started = time.perf_counter()
        if execution.executor == "ray":
            from workbench.lab.sweep_ray import run_ray

            workers = run_ray(points, notebook, timeout, on_done, imports, execution)
        else:
            workers = run_local(
                points,
                notebook,
                execution.workers or 1,
                timeout,
                on_done,
                imports,
                fresh=execution.fresh_kernels,
                threads=execution.threads,
            )
        wall = time.perf_counter() - started
    return efficiency_record(list(statuses.values()), wall, workers, execution)


def efficiency_record(
    statuses: Sequence[Mapping[str, Any]], wall: float, workers: int, execution: Execution
) -> dict[str, Any]:
    """Σ points' experiment seconds ÷ (wall seconds × parallel workers), with its parts."""
    experiment = sum(s.get("experiment_s", 0.0) for s in statuses)
    return {
        "efficiency": round(experiment / (wall * workers), 4) if wall > 0 else None,
        "experiment_s": round(experiment, 2),
        "wall_s": round(wall, 2),
        "workers": workers,
        "points_run": len(statuses),
        "executor": execution.executor,
        "kernels": "fresh" if execution.fresh_kernels else "warm",
    }


def efficiency_line(e: Mapping[str, Any]) -> str:
    """The efficiency record as one line for people."""
    share = f"{e['efficiency']:.1%}" if e["efficiency"] is not None else "n/a"
    return (
        f"sweep efficiency {share}: {e['experiment_s']:.1f} s of experiments in "
        f"{e['points_run']} points / ({e['wall_s']:.1f} s wall x {e['workers']} workers, "
        f"{e['executor']}, {e['kernels']} kernels)"
    )
