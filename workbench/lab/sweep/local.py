"""The local executor: `workers` threads in the sweep process, each driving its own warm kernel
(`workbench.lab.sweep.warm_kernels`). The experiments run in the kernel processes, so a point that
crashes takes down at most its own kernel, which is replaced."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from workbench.lab.sweep.executor_base import Done
from workbench.lab.sweep.schedule import PointQueue


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
    from workbench.lab.sweep.warm_kernels import WarmKernel, run_point

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
