"""Notebook templates stay clean: stripping, the pre-save hook, sweeps' clean copies, quiet kernels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from workbench.lab.templates import clean_template, strip, strip_tracked_notebook

ROOT = Path(__file__).resolve().parents[1]


def dirty_notebook() -> nbformat.NotebookNode:
    """A notebook as JupyterLab saves it after a run: outputs, counts, widget state."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('fresh')", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="STALE OUTPUT\n")]
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_strip_removes_outputs_counts_and_widget_state():
    nb = dirty_notebook()
    assert strip(nb) is True
    code = nb.cells[1]
    assert code.outputs == [] and code.execution_count is None and "execution" not in code.metadata
    assert "widgets" not in nb.metadata and nb.cells[1].source == "print('fresh')"
    assert strip(nb) is False  # already clean


def test_the_pre_save_hook_strips_git_tracked_notebooks_only(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name in ("tracked.ipynb", "untracked.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / name)
    subprocess.run(["git", "add", "tracked.ipynb"], cwd=tmp_path, check=True)
    manager = SimpleNamespace(root_dir=str(tmp_path))
    for name, kept in (("tracked.ipynb", 0), ("untracked.ipynb", 1)):
        model = {"type": "notebook", "content": json.loads(nbformat.writes(dirty_notebook()))}
        strip_tracked_notebook(model=model, path=name, contents_manager=manager)
        assert len(model["content"]["cells"][1]["outputs"]) == kept, name


def test_the_repo_jupyter_config_names_the_hook():
    config = json.loads((ROOT / ".jupyter" / "jupyter_server_config.json").read_text())
    hook = config["ContentsManager"]["pre_save_hook"]
    module, name = hook.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[name]), name) is strip_tracked_notebook


def test_gitattributes_route_notebooks_through_nbstripout():
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "filter.nbstripout.clean" in makefile and "jupyter_server_config" in makefile


@pytest.mark.kernels
def test_a_sweep_point_runs_a_clean_copy_on_a_quiet_kernel(tmp_path, capfd):
    from workbench.lab.sweep.warm_kernels import WarmKernel, run_point

    template = tmp_path / "template.ipynb"
    nb = dirty_notebook()
    nb.cells.insert(
        0, nbformat.v4.new_code_cell("interactive = True\nout_dir = ''", metadata={"tags": ["parameters"]})
    )
    nbformat.write(nb, template)
    kernel = WarmKernel(threads=1)
    try:
        status = run_point(kernel, str(template), str(tmp_path / "point"), {}, timeout=120)
    finally:
        kernel.shutdown()
    assert status["state"] == "done", status
    executed = (tmp_path / "point" / "fedlora.ipynb").read_text()
    assert "fresh" in executed and "STALE OUTPUT" not in executed
    assert "without encryption" not in capfd.readouterr().err
    assert "STALE OUTPUT" not in nbformat.writes(clean_template(template))


@pytest.mark.parametrize("name", ["fedlora.ipynb", "report.ipynb"])
def test_tracked_templates_have_nothing_to_strip(name):
    assert strip(nbformat.read(ROOT / "notebooks" / name, as_version=4)) is False
