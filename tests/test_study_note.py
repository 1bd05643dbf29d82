"""The FedLoRA study's note from a synthetic sweep folder (no training): twins, matched
Standalone and spreads are found by the parameters each point ran with."""

import json

import pandas as pd
import pytest
from helpers import table_row

from workbench.config import defaults
from workbench.lab.report.study_table import local_epochs
from workbench.tools.study_note import main, points_frame

# per configuration: swept values and the final accuracy of seeds 0, 1, 2
CONFIGS = [
    ({"algorithm": "fedlora"}, [0.80, 0.70, 0.75]),
    ({"algorithm": "fedlora", "share_adapter": False}, [0.78, 0.69, 0.71]),  # twin: −0.02, −0.01, −0.04
    ({"algorithm": "fedlora", "adapter_weights": "uniform"}, [0.81, 0.71, 0.76]),
    ({"algorithm": "fedlora", "mu": 0.0}, [0.70, 0.60, 0.65]),
    ({"algorithm": "fedlora", "mu": 1.0}, [0.90, 0.80, 0.85]),
    ({"algorithm": "standalone"}, [0.79, 0.69, 0.74]),
    ({"algorithm": "standalone", "model_epochs": 2}, [0.90, 0.80, 0.85]),
]
SWEPT = ["num_clients", "seed", "algorithm", "share_adapter", "adapter_weights", "mu", "model_epochs"]


def rows(point, params, final):
    """One client, two rounds: round 1 at final − 0.1, round 2 at final."""
    return [
        table_row(
            round=r,
            accuracy=acc,
            point=point,
            **{k: params.get(k) for k in SWEPT},
        )
        for r, acc in ((1, final - 0.1), (2, final))
    ]


@pytest.fixture
def sweep_dir(tmp_path):
    records, points = [], []
    for clients in (10, 100):
        for swept, finals in CONFIGS:
            for seed, final in enumerate(finals):
                point = f"p{len(points):03d}"
                params = {**swept, "seed": seed, "num_clients": clients}
                resolved = {**defaults(), **params}
                points.append({"id": point, "params": params, "state": "done", "resolved": resolved})
                records += rows(point, params, final + (0.05 if clients == 100 else 0))
    spec = {"parameters": {"rounds": 2}, "grid": {k: [] for k in SWEPT}, "points": points}
    (tmp_path / "sweep.json").write_text(json.dumps(spec))
    pd.DataFrame(records).to_csv(tmp_path / "results.csv", index=False)
    return tmp_path


def test_local_epochs_follow_the_adapter_schedule():
    flat = {**defaults(), "model_epochs": 2, "adapter_epochs": 3}
    assert local_epochs(flat) == 5
    assert local_epochs({**flat, "adapter_schedule": "model_plus"}) == 2 + 2 + 3
    assert local_epochs({**flat, "algorithm": "standalone"}) == 2


def test_points_carry_both_accuracies_and_the_parameters_they_ran_with(sweep_dir):
    points, _ = points_frame(sweep_dir, None, "num_clients")
    row = points[(points["point"] == "p000")].iloc[0]
    assert row["final_accuracy"] == pytest.approx(0.80) and row["round_mean"] == pytest.approx(0.75)
    assert row["adapter_schedule"] == "fixed" and row["num_clients"] == 10


def test_note_pairs_twins_matched_standalone_and_reports_spreads(sweep_dir, tmp_path):
    out = tmp_path / "note.md"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Regime `num_clients=10`" in text and "## Regime `num_clients=100`" in text
    twin = next(line for line in text.splitlines() if line.startswith("| fedlora | fedlora · share"))
    assert "| 3 | +2.33 |" in twin  # (2 + 1 + 4) / 3 points over the twin
    uniform = [line for line in text.splitlines() if line.startswith("| fedlora · adapter_weights=uniform |")]
    # its twin is the same no-sharing run (weights cannot matter without sharing): +3.33 points
    assert any("fedlora · share_adapter=false | 3 | +3.33 |" in line for line in uniform)
    matched = [line for line in text.splitlines() if "| standalone · model_epochs=2 | 3 |" in line]
    assert any(line.startswith("| fedlora | ") and "-10.00" in line for line in matched)
    assert "Spread over `mu`" in text and "final accuracy 20.00 points (seed SD 5.00)" in text
    assert "per zoo model" not in text  # every client of this sweep holds one model


def test_twin_gaps_per_model_show_which_family_sharing_helps(sweep_dir, tmp_path):
    """A second client per point holding another model: sharing helps it by 5 points on every
    seed; the table names each model with its clients and the pooled note gains the section."""
    table = pd.read_csv(sweep_dir / "results.csv")
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    shared = {
        p["id"]
        for p in points
        if p["params"]["algorithm"] == "fedlora" and "share_adapter" not in p["params"]
    }
    second = table.assign(client=1, model="vit48_l2_p4_h2")
    second["accuracy"] += second["point"].isin(shared) * 0.07  # +7 on top of cnn1's +2.33
    pd.concat([table, second]).to_csv(sweep_dir / "results.csv", index=False)
    out = tmp_path / "note.md"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert any(line.startswith("The same, per zoo model") for line in lines)
    per_model = [line for line in lines if line.startswith("| fedlora | ") and "| 1 | 3 |" in line]
    assert any("| cnn1 | 1 | 3 | +2.33 |" in line for line in per_model)
    assert any("| vit48_l2_p4_h2 | 1 | 3 | +9.33 |" in line for line in per_model)
