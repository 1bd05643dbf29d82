"""The stability study's tables from a synthetic sweep folder (no training): a candidate that
diverges at rank 1, one whose adapter takes over, and a healthy one, over two seeds, plus a batch
block; every count and accuracy in the tables is the one the folder holds."""

import json
import math

import pandas as pd
import pytest
import yaml
from helpers import table_row

from workbench.lab.sweep.spec import expand, load_spec
from workbench.tools.stability_note import main, point_rows

SPEC = {
    "parameters": {"dataset": "digits", "rounds": 2, "algorithm": "fedlora", "mu": 1.0},
    "grid": {
        "use_rslora": [True],
        "lora_alpha": [2.0],
        "lora_plus_ratio": [4.0, 64.0],
        "rank": [1, 2],
        "seed": [0, 1],
        "batch_size": [10],
    },
    "also": [
        {"use_rslora": [True], "lora_alpha": [2.0], "lora_plus_ratio": [4.0], "rank": [4]}
        | {"seed": [0, 1], "batch_size": [10, 64]}
    ],
}


def story(flat: dict) -> tuple[str, list[float], list[float]]:
    """A point's state, accuracy per round and adapter contribution per round."""
    if flat["lora_plus_ratio"] == 64 and flat["rank"] == 1:
        return "failed", [0.3], [math.inf]  # stopped after round 1: non-finite uploads
    if flat["lora_plus_ratio"] == 64:
        return "done", [0.5, 0.6], [0.9, 0.8]  # finished, the adapter takes over
    base = 0.9 + 0.01 * flat["seed"] - (0.05 if flat["batch_size"] == 64 else 0)
    return "done", [base - 0.1, base], [0.3, 0.1]


@pytest.fixture
def sweep(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    for point in expand(load_spec(spec)):
        state, accuracy, contribution = story(point.flat)
        folder = tmp_path / "out" / "points" / point.id
        (folder / "run").mkdir(parents=True)
        (folder / "status.json").write_text(json.dumps({"state": state, "experiment_s": 4.0}))
        rows = [
            table_row(
                round=r,
                accuracy=a,
                algorithm="fedlora",
                adapter_contribution=c,
                update_norm=1.0,
                steps_model=12 * r,
                steps_adapter=12 * r,
                local_steps=24,
                local_rounds=r,
                refused=0,
            )
            for r, (a, c) in enumerate(zip(accuracy, contribution), start=1)
        ]
        pd.DataFrame(rows).to_csv(folder / "run" / "results.csv", index=False)
    return tmp_path / "out", spec


def test_the_rows_carry_each_points_story(sweep) -> None:
    points = point_rows(*sweep).set_index(["lora_plus_ratio", "rank", "seed", "batch_size"])
    assert len(points) == 8 + 4
    stopped = points.loc[(64.0, 1, 0, 10)]
    assert stopped["state"] == "failed" and stopped["diverged"] and math.isnan(stopped["final"])
    assert stopped["non_finite"]
    taken = points.loc[(64.0, 2, 1, 10)]
    assert taken["dominated"] and not taken["diverged"] and taken["final"] == pytest.approx(60.0)
    healthy = points.loc[(4.0, 2, 1, 10)]
    assert not healthy["dominated"] and not healthy["diverged"]
    assert healthy["final"] == pytest.approx(91.0) and healthy["peak_contribution"] == pytest.approx(0.3)
    assert healthy["seconds_per_round"] == pytest.approx(2.0)  # 4 s over 2 rounds


def test_the_note_counts_divergence_and_domination_per_candidate_and_rank(sweep, tmp_path) -> None:
    out = tmp_path / "tables.md"
    assert main([str(sweep[0]), "--spec", str(sweep[1]), "--out", str(out)]) == 0
    text = out.read_text()
    assert "(12 of 12 points ran)" in text
    lines = {
        line.split("|")[1].strip() + " r" + line.split("|")[2].strip(): line
        for line in text.splitlines()
        if line.startswith("| α/")
    }
    bad1, bad2, good1 = (
        lines["α/√r, α 2, LoRA+ 64 r1"],
        lines["α/√r, α 2, LoRA+ 64 r2"],
        lines["α/√r, α 2, LoRA+ 4 r1"],
    )
    assert "| 2/2 | 0/2 | – |" in bad1  # both seeds stopped, no accuracy to show
    assert "| 0/2 | 2/2 | 60.0 ± 0.0 |" in bad2
    assert "| 0/2 | 0/2 | 90.5 ± 6.4 |" in good1  # 90, 91: t(1) 12.71 × 0.707 / √2
    batch = text.split("## Batch size")[1]
    assert "| 10 | 4, 1 | 2 | 12 | 90.5 ± 6.4 |" in batch and "| 64 | 4, 1 | 2 | 12 | 85.5 ± 6.4 |" in batch
