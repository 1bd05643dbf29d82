"""Sweep points in warm Jupyter kernels: a kernel's imports are paid once, not once per point.

A `WarmKernel` is one ipykernel process that imported the workbench (torch, and what the
points' methods declare in `kernel_imports`, e.g. PEFT for FedLoRA) before its first point.
Each point is still a papermill execution of the parameterized notebook with its own executed
copy; before it, the kernel's namespace is reset and its working directory set to the point's
folder, so a point sees only its own parameters. A point that fails, times out or kills its
kernel gets a fresh kernel for the next point, so nothing of it reaches the others. The kernel
talks over IPC sockets in a private folder: no port, no network.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workbench.algorithms import REGISTRY
from workbench.core import files
from workbench.core.facts import STATUS_FILE, TIMING_FILE
from workbench.lab.ipc_kernels import ipc_kernel_manager
from workbench.lab.sweep.executor_base import KernelSetupError

START_TIMEOUT = 300  # seconds for a kernel to answer at start: a busy machine is slow
BASE_IMPORTS = (
    "IPython.display",
    "nbformat",  # plotly's notebook renderer imports it, and with it jsonschema
    "plotly.io",
    "workbench.lab.notebook",
    "workbench.lab.report.figures",
    "workbench.loop.runner",
)

# jsonschema builds the grammar of its optional IRI format checker (rfc3987-syntax) on import:
# 2.5 s of every kernel's start on a 2-core machine, a sixth of its imports. No notebook
# validation checks an IRI, so the kernels a sweep starts go without that checker.
NOT_IMPORTED = ("rfc3987_syntax",)


def warm_imports(flats: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The modules the points' experiments import lazily, so no experiment time includes them:
    each method's declared `kernel_imports`, and the digits loader's when a point reads digits."""
    flats = list(flats)
    algorithms = {
        a.strip() for f in flats for a in (f.get("algorithm", ""), *str(f.get("compare", "")).split(","))
    }
    # what each method declares, in registry order so that equal sweeps warm alike
    extra = tuple(
        dict.fromkeys(
            m for name, method in REGISTRY.items() if name in algorithms for m in method.kernel_imports
        )
    )
    if any(f.get("dataset") == "digits" for f in flats):
        extra += ("sklearn.datasets", "sklearn.model_selection")
    return BASE_IMPORTS + extra


class WarmKernel:
    """One kernel process reused across points (started on first use, replaced after a failure).

    Its imports are sent as soon as it answers and run while the sweep process prepares the
    point (papermill's own imports take seconds there too); `wait_warm` waits for them."""

    def __init__(self, threads: int, imports: tuple[str, ...] = BASE_IMPORTS) -> None:
        self.threads, self.imports = threads, imports
        self.km: Any = None
        self.kc: Any = None  # one client for every point: no per-point connection handshake
        self._warming: str | None = None  # message id of the imports still running
        self._folder: str | None = None

    def ensure_started(self) -> None:
        """Start the kernel unless it is running, and send it the warm imports (not waiting)."""
        if self.km is not None and self._alive():
            return
        self.shutdown()
        from jupyter_core.utils import run_sync

        self._folder = tempfile.mkdtemp(prefix="workbench-kernel-")
        self.km = ipc_kernel_manager(self._folder)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}  # no oversubscription
        run_sync(self.km.start_kernel)(
            env=env,
            cwd=self._folder,  # history: no shared file
            extra_arguments=["--HistoryManager.hist_file=:memory:"],
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        run_sync(self.kc.wait_for_ready)(timeout=START_TIMEOUT)
        self.kc.allow_stdin = False
        self._warming = self.kc.execute(self.import_code(), store_history=False)

    def import_code(self) -> str:
        """The warm imports; then the imported modules' objects are frozen out of the garbage
        collector's work, so the collection in each reset walks only what points created."""
        return (
            f"import sys\nfor name in {NOT_IMPORTED!r}:\n    sys.modules.setdefault(name, None)\n"
            f"import {', '.join(self.imports)}\nimport gc\ngc.freeze()"
        )

    def wait_warm(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the warm imports sent at start are done; KernelSetupError if they failed."""
        if self._warming is None:
            return
        from jupyter_core.utils import run_sync

        warming, self._warming = self._warming, None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = run_sync(self.kc.get_shell_msg)(timeout=min(left, 5.0))
            except queue.Empty:
                if not self._alive():
                    raise KernelSetupError("the kernel died while importing") from None
                continue
            if reply["parent_header"].get("msg_id") == warming:
                content = reply["content"]
                if content["status"] != "ok":
                    raise KernelSetupError(
                        f"kernel imports failed: {content.get('ename')}: {content.get('evalue')}"
                    )
                return
        raise KernelSetupError(f"the kernel's imports took more than {timeout:.0f} s")

    def _alive(self) -> bool:
        """Whether the kernel process still runs."""
        from jupyter_core.utils import run_sync

        return bool(run_sync(self.km.is_alive)())

    @staticmethod
    def prologue(folder: Path) -> str:
        """Code to run before a point: the point's folder as working directory, then a clean
        namespace (modules stay imported). The directory comes first: the previous point's
        folder may be gone (Ray removes its scratch folders), and IPython's reset fails in a
        working directory that no longer exists. The reset also collects garbage."""
        return f"import os\nos.chdir({str(folder)!r})\nget_ipython().reset(new_session=True)"

    def shutdown(self) -> None:
        """Stop the kernel (if any) and remove its socket folder."""
        from jupyter_core.utils import run_sync

        self._warming = None
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None:
            try:
                run_sync(self.km.shutdown_kernel)(now=True)
            except Exception:  # already gone: nothing left to stop
                pass
            self.km = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _execute(
    kernel: WarmKernel, notebook: str | Path, folder: Path, parameters: dict[str, Any], timeout: int
) -> None:
    """Papermill on the warm kernel, after the kernel's prologue."""
    kernel.ensure_started()  # it imports while this process imports papermill
    import papermill

    from workbench.lab.sweep.warm_engine import ENGINE, register
    from workbench.lab.templates import clean_template

    register()
    kernel.wait_warm()
    # saving a 5 MB notebook (plotly.js) after each cell costs seconds; it is written at the end
    # (on failure too, then renamed into place), and a killed point resumes from its run's
    # checkpoint, not its notebook
    with files.replacing(folder / "fedlora.ipynb", keep_on_error=True) as output:
        papermill.execute_notebook(
            clean_template(notebook),
            str(output),
            parameters=parameters,
            engine_name=ENGINE,
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
            start_timeout=START_TIMEOUT,
            km=kernel.km,
            kc=kernel.kc,
            prologue=kernel.prologue(folder),
            request_save_on_cell_execute=False,
        )


def experiment_seconds(folder: Path, since: float) -> float:
    """Seconds the point's experiments computed in this execution (their timing files)."""
    total = 0.0
    for timing in folder.glob(f"run*/{TIMING_FILE}"):
        if timing.stat().st_mtime >= since:  # a run already finished earlier computed nothing now
            total += json.loads(timing.read_text())["experiment_s"]
    return round(total, 3)


def run_point(
    kernel: WarmKernel,
    notebook: str | Path,
    folder: str | Path,
    flat: Mapping[str, Any],
    timeout: int,
    where: str | None = None,
) -> dict[str, Any]:
    """Run one point in the kernel and write its status file (`node`: where, default the host
    name); a failure replaces the kernel."""
    folder = Path(folder).resolve()  # the kernel runs in the point's folder
    folder.mkdir(parents=True, exist_ok=True)
    parameters = {**flat, "interactive": False, "out_dir": str(folder / "run")}
    started, wall = time.perf_counter(), time.time() - 1  # mtimes have coarse resolution
    try:
        _execute(kernel, notebook, folder, parameters, timeout)
        status: dict[str, Any] = {"state": "done", "error": None}
    except Exception as error:  # the point failed; the sweep records it and goes on
        name = getattr(error, "ename", type(error).__name__)
        status = {"state": "failed", "error": f"{name}: {getattr(error, 'evalue', error)}"}
        kernel.shutdown()  # its state is suspect (or it died): the next point gets a fresh one
    status["seconds"] = round(time.perf_counter() - started, 2)
    status["experiment_s"] = experiment_seconds(folder, wall)
    status["node"] = where or socket.gethostname()
    files.write_json(folder / STATUS_FILE, status, indent=2)
    return status
