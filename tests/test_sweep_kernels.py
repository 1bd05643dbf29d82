"""Warm kernels: points share a kernel's imports, never its state; a dead kernel is replaced."""

import json
import shutil

import nbformat
import pandas as pd
import pytest
from helpers import tiny_spec

from workbench.lab.report.provenance import efficiency_line
from workbench.lab.sweep.executor_base import Execution
from workbench.lab.sweep.run import run_sweep

pytestmark = pytest.mark.kernels


def test_a_dead_kernel_fails_only_its_point_and_warm_points_equal_fresh_ones(tmp_path, monkeypatch, capsys):
    import workbench.lab.sweep.run as sweep

    killer = tmp_path / "killer.ipynb"
    nb = nbformat.read(sweep.NOTEBOOK, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "# a leftover name must not leak into the next point\n"
            "assert 'leak' not in globals(), 'state leaked from the previous point'\n"
            "leak = True\n"
            "if rank == 2:\n    import os\n    os._exit(1)  # the kernel dies mid-point"
        )
    )
    nbformat.write(nb, killer)
    monkeypatch.setattr(sweep, "NOTEBOOK", killer)
    one = Execution(workers=1, threads=1)
    table = pd.read_csv(
        run_sweep(tiny_spec({"rank": [1, 2, 3, 4]}), tmp_path / "warm", report=False, execution=one)
    )
    record = json.loads((tmp_path / "warm" / "sweep.json").read_text())
    assert [p["state"] for p in record["points"]] == ["done", "failed", "done", "done"]
    assert "DeadKernelError" in record["points"][1]["error"]
    assert set(table["rank"]) == {1, 3, 4}  # the points after the dead kernel ran on a new one
    statuses = [json.loads(p.read_text()) for p in sorted((tmp_path / "warm").glob("points/*/status.json"))]
    assert all(s["experiment_s"] > 0 for s in statuses if s["state"] == "done")
    efficiency = record["efficiency"]
    assert efficiency["workers"] == 1 and efficiency["points_run"] == 4
    assert efficiency["experiment_s"] == round(sum(s["experiment_s"] for s in statuses), 2)
    share = efficiency["experiment_s"] / efficiency["wall_s"]  # of the rounded parts: agrees to 1e-3
    assert 0 < efficiency["efficiency"] < 1
    assert efficiency["efficiency"] == pytest.approx(share, abs=1e-3)
    assert efficiency_line(efficiency) in capsys.readouterr().out
    executed = nbformat.read(next((tmp_path / "warm" / "points").glob("p003-*/fedlora.ipynb")), 4)
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "rank = 4" in injected.source  # its own parameters
    assert [c.execution_count for c in executed.cells if c.cell_type == "code"][0] == 1

    fresh = Execution(workers=1, threads=1, fresh_kernels=True)
    alone = pd.read_csv(
        run_sweep(tiny_spec({"rank": [4]}), tmp_path / "fresh", report=False, execution=fresh)
    )
    warm_rank4 = table[table["rank"] == 4].drop(columns="point").reset_index(drop=True)
    pd.testing.assert_frame_equal(warm_rank4, alone.drop(columns="point"), check_exact=True)


def test_a_warm_kernel_outlives_the_folder_of_its_previous_point(tmp_path):
    """Ray removes each point's scratch folder; the next point's prologue must still run."""
    from jupyter_core.utils import run_sync

    from workbench.lab.sweep.warm_kernels import WarmKernel

    kernel = WarmKernel(threads=1, imports=("json",))
    kernel.ensure_started()
    kernel.wait_warm()
    try:
        for name in ("first", "second"):
            folder = tmp_path / name
            folder.mkdir()
            reply = run_sync(kernel.kc.execute_interactive)(kernel.prologue(folder), timeout=120)
            assert reply["content"]["status"] == "ok", reply["content"]
            shutil.rmtree(folder)  # what the Ray task does once its point is done
    finally:
        kernel.shutdown()


def test_a_kernel_whose_warm_imports_fail_is_refused_naming_the_module():
    from workbench.lab.sweep.warm_kernels import KernelSetupError, WarmKernel

    kernel = WarmKernel(threads=1, imports=("json", "no_such_module_for_the_workbench"))
    kernel.ensure_started()  # returns at once: the imports run in the kernel meanwhile
    try:
        with pytest.raises(KernelSetupError, match="ModuleNotFoundError.*no_such_module_for_the_workbench"):
            kernel.wait_warm()
        kernel.wait_warm()  # nothing left to wait for
    finally:
        kernel.shutdown()
