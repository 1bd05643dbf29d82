from pathlib import Path

import nbformat
import papermill
import pytest

from workbench.lab.notebook import parameters_source
from workbench.core.results import read_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {"dataset": "digits", "num_clients": 2, "rounds": 2, "device": "cpu", "batch_size": 64}


def parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", ["fedlora.ipynb", "report.ipynb"])
def test_notebooks_are_committed_clean_with_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert len(parameters_cell(NOTEBOOKS / name)) == 1
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_fedlora_parameters_cell_matches_the_config_table():
    assert parameters_cell(NOTEBOOKS / "fedlora.ipynb")[0].source == parameters_source()


def test_fedlora_notebook_runs_headless_and_writes_results(tmp_path):
    out = tmp_path / "run"
    papermill.execute_notebook(str(NOTEBOOKS / "fedlora.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={**TINY, "interactive": False, "out_dir": str(out),
                                           "compare": "standalone"},
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    flat, table = read_run(out)
    assert flat["rounds"] == 2 and len(table) == 2 * 2
    assert read_run(tmp_path / "run-standalone")[1]["bytes_up"].sum() == 0
    executed = (tmp_path / "out.ipynb").read_text()
    assert "application/vnd.plotly.v1+json" in executed
    assert "application/vnd.jupyter.widget-view+json" not in executed  # no widget in batch runs


def test_unknown_injected_parameter_is_refused(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="did you mean 'rank'"):
        papermill.execute_notebook(str(NOTEBOOKS / "fedlora.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={**TINY, "interactive": False, "rnak": 3},
                                   kernel_name="python3", progress_bar=False, cwd=str(tmp_path))


def test_tuner_redraws_in_place_and_caches(tiny):
    from workbench.config import build_config
    from workbench.lab.widgets import Tuner

    tuner = Tuner(build_config({**tiny, "num_clients": 2}), max_rounds=2)
    first = list(tuner.figure.data[0].y)
    assert len(first) == 2 and len(tuner.cache) == 1
    tuner.mu.value = 0.0
    assert len(tuner.cache) == 2 and "μ=0.00" in tuner.figure.data[0].name
    tuner.mu.value = 0.5
    assert len(tuner.cache) == 2 and list(tuner.figure.data[0].y) == first
    tuner.algorithm.value = "fedlora"
    assert tuner.widget().children[-1] is tuner.figure


def test_papermill_reads_every_parameter_with_its_type_and_help():
    from workbench.config import parameter_table
    from workbench.lab.notebook import NOTEBOOK_OPTIONS

    inspected = papermill.inspect_notebook(str(NOTEBOOKS / "fedlora.ipynb"))
    assert set(inspected) == set(parameter_table()) | set(NOTEBOOK_OPTIONS)
    assert inspected["rank"]["inferred_type_name"] == "int" and inspected["rank"]["help"] == "LoRA rank r"
