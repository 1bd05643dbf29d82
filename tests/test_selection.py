"""Selection on validation accuracy: a synthetic sweep whose validation and test accuracies
disagree is judged by validation in the report's tables, the verdict and the protocol tables;
a sweep made before validation existed selects on test accuracy and says so."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from workbench.lab.report import export, selection, sweep_tables, verdict
from workbench.lab.report.html_tables import configuration_rows
from workbench.lab.report.protocol_table import best_baseline, protocol_table
from workbench.tools.protocol_note import write_note

ROUNDS, CLIENTS, SEEDS = 2, 2, (0, 1)
# (method, knob value) → (final test accuracy, final validation accuracy): on test the
# first of each pair wins, on validation the second
DESIGN = {
    ("fedlora", 1): (0.80, 0.60),
    ("fedlora", 4): (0.70, 0.75),
    ("fedproto", 1): (0.78, 0.50),
    ("fedproto", 4): (0.65, 0.70),
}
VAL_BEST = {"fedlora": "fedlora · rank=4", "fedproto": "fedproto · rank=4"}
TEST_BEST = {"fedlora": "fedlora · rank=1", "fedproto": "fedproto · rank=1"}


def _rows(pid: str, method: str, rank: int, seed: int, validation: bool) -> list[dict]:
    test, val = DESIGN[(method, rank)]
    rows = []
    for round_, client in itertools.product(range(1, ROUNDS + 1), range(CLIENTS)):
        late = round_ == ROUNDS
        row = {
            "round": round_,
            "client": client,
            "model": "cnn1",
            "algorithm": method,
            "participated": True,
            "accuracy": (test if late else test - 0.2) + 0.01 * seed,
            "loss": 1.0,
            "train_loss": 1.0,
            "train_flops": 1000,
            "bytes_up": 10,
            "bytes_down": 10,
            "num_train": 90,
            "num_test": 30,
            "refused": 0,
        }
        if validation:
            row |= {
                "val_accuracy": (val if late else val - 0.2) + 0.01 * seed,
                "val_loss": 1.0,
                "num_val": 10,
            }
        rows.append(row)
    frame = pd.DataFrame(rows)
    for c in ("train_flops", "bytes_up", "bytes_down"):
        frame[f"cum_{c}"] = frame.groupby("client")[c].cumsum()
    return frame.assign(point=pid, rank=rank, seed=seed).to_dict("records")


def make_sweep(root: Path, validation: bool) -> Path:
    """A finished two-method sweep (rank × seed) with or without validation columns."""
    root.mkdir(parents=True)
    points, rows = [], []
    for i, ((method, rank), seed) in enumerate(itertools.product(DESIGN, SEEDS)):
        pid = f"p{i:03d}"
        params = {"algorithm": method, "rank": rank, "seed": seed}
        points.append({"id": pid, "params": params, "state": "done", "error": None, "seconds": 1.0})
        rows += _rows(pid, method, rank, seed, validation)
    spec = {
        "parameters": {
            "dataset": "digits",
            "num_clients": CLIENTS,
            "rounds": ROUNDS,
            "partition": "dirichlet",
        },
        "grid": {"algorithm": ["fedlora", "fedproto"], "rank": [1, 4], "seed": list(SEEDS)},
        "points": points,
    }
    (root / "sweep.json").write_text(json.dumps(spec))
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    return root


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    sweep = sweep_tables.load_sweep(root)
    summary = sweep_tables.point_summary(sweep.table, sweep.swept)
    return summary, sweep_tables.configurations(summary), sweep_tables.seed_curves(sweep.table)


@pytest.mark.parametrize("validation", [True, False])
def test_the_best_configurations_are_picked_on_validation_when_runs_hold_it(tmp_path, validation) -> None:
    summary, configs, curves = _tables(make_sweep(tmp_path / "s", validation))
    expected = VAL_BEST if validation else TEST_BEST
    assert selection.selected_on(configs) == ("validation" if validation else "test")
    assert sweep_tables.best_per_algorithm(configs) == [expected["fedlora"], expected["fedproto"]]
    found = verdict.decide(summary, configs, curves, "synthetic")
    assert (found.comparisons[0].ours, found.comparisons[0].other) == (
        expected["fedlora"],
        expected["fedproto"],
    )
    # the verdict still compares test accuracy: 0.70 − 0.65 on every seed when selected on validation
    gap = found.comparisons[0].final.difference.mean
    assert gap == pytest.approx(0.05 if validation else 0.02)
    note = selection.selection_note(configs)
    assert ("validation splits" in note) == validation and ("optimistic" in note) == (not validation)
    assert ("validation" in verdict.introduction(selected_on=selection.selected_on(configs))) == validation
    assert ("final validation accuracy" in configuration_rows(sweep_tables.cost_table(configs))) == validation


@pytest.mark.parametrize("validation", [True, False])
def test_the_protocol_tables_select_on_validation(tmp_path, validation) -> None:
    root = make_sweep(tmp_path / "s", validation)
    sweep = sweep_tables.load_sweep(root)
    table = sweep.table.assign(partition="dirichlet")
    protocol = protocol_table(table, [*sweep.swept, "partition"], {"dirichlet": 0.5})
    expected = VAL_BEST if validation else TEST_BEST
    assert best_baseline(protocol, "dirichlet", exclude=("fedlora",)) == expected["fedproto"]
    text = write_note(root, tmp_path / "note.md", {"dirichlet": 0.5})
    assert ("by mean final validation accuracy" in text) == validation
    assert f"best federated baseline: `{expected['fedproto']}`" in text
    assert f"best FedLoRA configuration `{expected['fedlora']}`" in text


@pytest.mark.kernels
def test_the_report_says_it_selected_on_validation(tmp_path) -> None:
    root = make_sweep(tmp_path / "s", validation=True)
    html = export.build_report(root, timeout=180).read_text()
    assert "validation splits" in html and "optimistic" not in html
    assert VAL_BEST["fedlora"] in html
