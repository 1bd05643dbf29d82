"""Where a sweep's points run, and how well the machine was used: its efficiency.

- local (default): `workers` threads in the sweep process, each driving its own warm kernel
  (`workbench.lab.sweep.warm_kernels`). The experiments run in the kernel processes, so a point that
  crashes takes down at most its own kernel, which is replaced. Points come from one queue
  (`workbench.lab.sweep.schedule`: longest configuration first), so a free worker starts the next
  point at once.
- ray: each point is a Ray task on an existing cluster (`workbench.lab.sweep.ray_tasks`).

Sweep efficiency = Σ points' experiment seconds (measured around `run_experiment`, written to
each point's status.json as `experiment_s`) ÷ (wall seconds of running the points × parallel
workers). It is printed after every sweep and stored in sweep.json under `efficiency`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.lab.report.provenance import efficiency_record
from workbench.lab.sweep.executor_base import Execution
from workbench.lab.sweep.local import run_local
from workbench.lab.sweep.schedule import PointQueue


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

    from workbench.lab.sweep.warm_kernels import warm_imports

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
            from workbench.lab.sweep.ray_tasks import run_ray

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
    kernels = "fresh" if execution.fresh_kernels else "warm"
    return efficiency_record(list(statuses.values()), wall, workers, execution.executor, kernels)
