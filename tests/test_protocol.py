"""The protocol table and note from a synthetic sweep folder (no training)."""

import json

import pandas as pd
import pytest
from helpers import table_row
from scipy import stats

from workbench.lab.report.protocol_table import interval, paired_gaps, protocol_table
from workbench.tools.protocol_note import main

SWEPT = ["seed", "partition", "algorithm", "adapter_placement"]
# final accuracy of each configuration per seed; fedlora-fc2 is Standalone + 0.05 on every seed
FINALS = {
    ("standalone", None): [0.80, 0.70, 0.75],
    ("fd", None): [0.82, 0.71, 0.78],
    ("fedlora", "fc2"): [0.85, 0.75, 0.80],
    ("fedlora", "head"): [0.81, 0.69, 0.77],
}


def rows(point, seed, partition, algorithm, placement, final):
    """Two clients, two rounds: round 1 at final - 0.1, round 2 at final."""
    out = []
    for round_, acc in ((1, final - 0.1), (2, final)):
        for client in (0, 1):
            out.append(
                table_row(
                    round=round_,
                    client=client,
                    algorithm=algorithm,
                    accuracy=acc,
                    point=point,
                    seed=seed,
                    partition=partition,
                    adapter_placement=placement,
                )
            )
    return out


@pytest.fixture
def sweep_dir(tmp_path):
    records, points = [], []
    for partition in ("pathological", "dirichlet"):
        for (algorithm, placement), finals in FINALS.items():
            for seed, final in enumerate(finals):
                point = f"p{len(points):03d}"
                params = {
                    "seed": seed,
                    "partition": partition,
                    "algorithm": algorithm,
                    **({"adapter_placement": placement} if placement else {}),
                }
                points.append({"id": point, "params": params, "state": "done", "error": None})
                records += rows(point, seed, partition, algorithm, placement, final)
    points.append(
        {
            "id": "p999",
            "params": {"seed": 3, "partition": "dirichlet", "algorithm": "fml"},
            "state": "failed",
            "error": "killed",
        }
    )
    spec = {"parameters": {"rounds": 2}, "grid": {k: [] for k in SWEPT}, "spec": {}, "points": points}
    (tmp_path / "sweep.json").write_text(json.dumps(spec))
    pd.DataFrame(records).to_csv(tmp_path / "results.csv", index=False)
    return tmp_path


def test_interval_is_the_student_t_interval():
    values = [0.8, 0.7, 0.75]
    mean, half = interval(values)
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert mean == pytest.approx(0.75) and half == pytest.approx((high - low) / 2)


def test_protocol_table_has_every_seed_and_the_cost_to_target(sweep_dir):
    table = pd.read_csv(sweep_dir / "results.csv")
    protocol = protocol_table(table, SWEPT, {"pathological": 0.76, "dirichlet": 0.76})
    row = protocol[
        (protocol["partition"] == "dirichlet")
        & (protocol["configuration"] == "fedlora · adapter_placement=fc2")
    ].iloc[0]
    assert row["seeds"] == 3 and row["final_per_seed"] == "0.850 / 0.750 / 0.800"
    assert row["final_mean"] == pytest.approx(0.8)
    assert row["reached"] == "2/3"  # seed 1 peaks at 0.75 < 0.76
    assert row["train_flops"] == 400 and row["bytes"] == 80
    assert row["flops_to_target"] == 400  # seeds 0 and 2 reach it in round 2: 2 clients × 2 × 100


def test_paired_gap_is_beyond_noise_only_when_every_seed_agrees(sweep_dir):
    table = pd.read_csv(sweep_dir / "results.csv")
    gaps = paired_gaps(table, SWEPT, "standalone").set_index(["partition", "configuration"])
    fc2 = gaps.loc[("pathological", "fedlora · adapter_placement=fc2")]
    assert fc2["gap_mean"] == pytest.approx(0.05) and fc2["beyond_noise"]
    head = gaps.loc[("pathological", "fedlora · adapter_placement=head")]
    assert not head["beyond_noise"]  # +0.01, -0.01, +0.02


def test_note_names_the_verdict_and_lists_unfinished_points(sweep_dir, tmp_path):
    out = tmp_path / "note.md"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "24 of 25 points finished" in text and "| 3 | failed | fml | 1 | killed |" in text
    assert "best federated baseline: `fd`" in text
    assert "`fedlora · adapter_placement=fc2`: +0.0500" in text and "beyond seed noise" in text


def test_the_best_federated_baseline_is_never_a_standalone_configuration():
    from workbench.lab.report.protocol_table import KEY, best_baseline

    protocol = pd.DataFrame(
        {
            "partition": ["p"] * 4,
            "algorithm": ["standalone", "fd", "fedlora", "fedkd"],
            KEY: ["standalone · model_epochs=5", "fd", "fedlora", "fedkd"],
            "final_mean": [0.97, 0.90, 0.99, 0.91],
        }
    )
    assert best_baseline(protocol, "p") == "standalone · model_epochs=5"
    assert best_baseline(protocol, "p", exclude=("fedlora", "standalone")) == "fedkd"
    assert best_baseline(protocol, "q") is None


def test_the_protocol_spec_covers_every_method_placement_seed_and_two_partitions():
    from pathlib import Path

    from workbench.algorithms import REGISTRY
    from workbench.algorithms.fedlora.placements import PLACEMENTS
    from workbench.lab.sweep.spec import expand, load_spec

    spec = Path(__file__).resolve().parents[1] / "notebooks" / "sweeps" / "fedlora-protocol.yaml"
    points = expand(load_spec(spec))  # every point passes the strict config call
    assert len({p.id for p in points}) == len(points)
    listed = {p.flat["algorithm"] for p in points}
    assert listed == set(REGISTRY), (
        f"{spec.name} must list every built-in method; differs in {sorted(set(REGISTRY) ^ listed)}"
    )
    assert {p.flat["partition"] for p in points} == {"pathological", "dirichlet"}
    for algorithm in REGISTRY:
        seeds = {p.flat["seed"] for p in points if p.flat["algorithm"] == algorithm}
        assert len(seeds) >= 3, algorithm
    fedlora = [p.flat for p in points if p.flat["algorithm"] == "fedlora"]
    # attention needs ViTs of one width and depth: the ViT family study (fedlora-vit.yaml) runs it
    assert {f["adapter_placement"] for f in fedlora} == set(PLACEMENTS) - {"attention"}
    vit = expand(load_spec(spec.with_name("fedlora-vit.yaml")))
    assert {p.flat["adapter_placement"] for p in vit if p.flat["algorithm"] == "fedlora"} == {"attention"}
    assert len({f["rank"] for f in fedlora}) >= 2 and len({f["mu"] for f in fedlora}) >= 2


def test_a_running_sweep_is_tabulated_from_its_spec(sweep_dir, tmp_path):
    """Without sweep.json: the spec names the points, unfinished ones are counted."""
    import yaml

    from workbench.lab.sweep.spec import expand, load_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "parameters": {"rounds": 2, "classes_per_client": 3},
                "grid": {
                    "seed": [0, 1],
                    "partition": ["pathological", "dirichlet"],
                    "algorithm": ["standalone", "fd"],
                },
            },
            sort_keys=False,
        )
    )
    points = expand(load_spec(spec_file))
    table = pd.read_csv(sweep_dir / "results.csv")
    run = tmp_path / "sweep"
    for p in points[:5]:  # five of eight finished
        src = table[
            (table["seed"] == p.swept["seed"])
            & (table["partition"] == p.swept["partition"])
            & (table["algorithm"] == p.swept["algorithm"])
        ]
        folder = run / "points" / p.id
        (folder / "run").mkdir(parents=True)
        src.drop(columns=["point", "seed", "partition", "adapter_placement"]).to_csv(
            folder / "run" / "results.csv", index=False
        )
        (folder / "run" / "config.json").write_text(json.dumps(p.flat))
        (folder / "status.json").write_text(json.dumps({"state": "done", "error": None}))
    out = tmp_path / "partial.md"
    assert main([str(run), "--spec", str(spec_file), "--out", str(out)]) == 0
    text = out.read_text()
    assert "5 of 8 points finished" in text and "**Partial:** 3 points" in text
    assert "| 1 | missing | fd | 2 |" in text and "| 1 | missing | standalone | 1 |" in text
