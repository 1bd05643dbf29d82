from pathlib import Path

import nbformat
import papermill
import pytest

from workbench.core.run_files import read_run
from workbench.lab.notebook import parameters_source

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {"dataset": "digits", "num_clients": 2, "rounds": 2, "device": "cpu", "batch_size": 64}


def parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", ["fedlora.ipynb", "report.ipynb"])
def test_notebooks_are_committed_clean_with_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert len(parameters_cell(NOTEBOOKS / name)) == 1
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in code)


def test_fedlora_parameters_cell_matches_the_config_table():
    assert parameters_cell(NOTEBOOKS / "fedlora.ipynb")[0].source == parameters_source()


@pytest.mark.kernels
def test_fedlora_notebook_runs_headless_and_writes_results(tmp_path):
    out = tmp_path / "run"
    papermill.execute_notebook(
        str(NOTEBOOKS / "fedlora.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={**TINY, "interactive": False, "out_dir": str(out), "compare": "standalone"},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    flat, table = read_run(out)
    assert flat["rounds"] == 2 and len(table) == 2 * 2
    assert read_run(tmp_path / "run-standalone")[1]["bytes_up"].sum() == 0
    executed = (tmp_path / "out.ipynb").read_text()
    assert "application/vnd.plotly.v1+json" in executed
    assert "application/vnd.jupyter.widget-view+json" not in executed  # no widget in batch runs


@pytest.mark.kernels
def test_unknown_injected_parameter_is_refused(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="did you mean 'rank'"):
        papermill.execute_notebook(
            str(NOTEBOOKS / "fedlora.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={**TINY, "interactive": False, "rnak": 3},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(tmp_path),
        )


@pytest.mark.slow
def test_compare_without_out_dir_writes_nothing(tiny, tmp_path, monkeypatch):
    from workbench.config import build_config
    from workbench.lab import notebook

    monkeypatch.chdir(tmp_path)
    config = build_config({**tiny, "num_clients": 2, "algorithm": "lg_fedavg"})
    options = notebook.NotebookOptions(interactive=False, out_dir="", compare=("standalone",))
    table = notebook.run(config, options)
    assert sorted(set(table["algorithm"])) == ["lg_fedavg", "standalone"]
    assert list(tmp_path.iterdir()) == []  # no stray "-standalone" run directory


@pytest.mark.kernels
def test_the_notebook_can_be_edited_and_rerun_cell_by_cell(tmp_path):
    """A full run, then an edited parameters cell and the run cell again, in one kernel."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / "fedlora.ipynb", as_version=4)
    params = parameters_cell(NOTEBOOKS / "fedlora.ipynb")[0]
    index = next(i for i, c in enumerate(nb.cells) if c.source == params.source)
    small = {**TINY, "rounds": 1, "interactive": False, "compare": "standalone"}
    nb.cells[index].source += "".join(f"\n{k} = {v!r}" for k, v in small.items())
    nb.cells.append(
        nbformat.v4.new_code_cell("print(config.params_of('fedlora').rank, sorted(set(table.algorithm)))")
    )
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        nb.cells[index].source += "\nrank = 2"  # edit the parameters cell, re-run it and below
        for i in range(index, len(nb.cells)):
            client.execute_cell(nb.cells[i], i)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.strip() == "2 ['fedlora', 'standalone']"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # out_dir "" writes no run directory


def test_papermill_reads_every_parameter_with_its_type_and_help():
    from workbench.config import parameter_table
    from workbench.lab.notebook import NOTEBOOK_OPTIONS

    inspected = papermill.inspect_notebook(str(NOTEBOOKS / "fedlora.ipynb"))
    assert set(inspected) == set(parameter_table()) | set(NOTEBOOK_OPTIONS)
    assert inspected["rank"]["inferred_type_name"] == "int" and inspected["rank"]["help"] == "LoRA rank r"
