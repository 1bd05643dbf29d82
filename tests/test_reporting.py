"""Reporting on synthetic sweep folders: statistics and verdict by hand, figures, HTML export."""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from workbench.config import build_config
from workbench.lab.report import (
    cost_figures,
    diagnostics_view,
    export,
    figures,
    heatmaps,
    provenance,
    stats,
    sweep_tables,
    verdict,
)
from workbench.lab.report.html_tables import configuration_rows, cost_rows, ratio_rows

ROUNDS, CLIENTS, MODELS = 3, 3, ("cnn1", "cnn2", "cnn3")
FEDLORA = {"algorithm": ["fedlora"], "rank": [1, 4], "mu": [0.2, 0.8]}
BASELINES = {"algorithm": ["lg_fedavg", "fedproto"]}
FAILED = {"algorithm": "fedlora", "rank": 1, "mu": 0.2, "seed": 1}
# Final mean accuracy per seed 0, 1, 2 of the three configurations the verdict compares.
FINAL = {"lg_fedavg": [0.62, 0.65, 0.65], "fedproto": [0.61, 0.60, 0.65]}
BEST = "fedlora · rank=4 · mu=0.8"
T975 = {2: 0.95 * math.sqrt(2) / math.sqrt(1 - 0.95**2)}  # Student-t quantile, df = 2, closed form
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def final_accuracy(p: dict) -> float:
    """Designed final mean accuracy: FedLoRA rank 4, μ 0.8 is best at 0.70 + 0.02·seed."""
    if p["algorithm"] != "fedlora":
        return FINAL[p["algorithm"]][p["seed"]]
    return 0.5 + 0.25 * p["mu"] + 0.02 * p["seed"] - (0.0 if p["rank"] == 4 else 0.1)


def mean_acc(p: dict, round_: int) -> float:
    """Rises by 0.15 a round to the final value; FedLoRA rank 1 instead peaks at round 1."""
    if p["algorithm"] == "fedlora" and p["rank"] == 1:
        return final_accuracy(p) + (0.05 if round_ == 1 else 0.0)
    return final_accuracy(p) - 0.15 * (ROUNDS - round_)


def diagnostic_columns(p: dict) -> dict:
    """Designed diagnostics: FedLoRA's rank-1 adapter is inert (0.2% of the output), LG-FedAvg's
    clients take 3 steps per round (undertrained), everything else is healthy."""
    steps = 3 if p["algorithm"] == "lg_fedavg" else 12
    phases = {"steps_model": steps, **({"steps_adapter": 12} if p["algorithm"] == "fedlora" else {})}
    columns = {"local_rounds": 1, "local_steps": sum(phases.values()), "update_norm": 0.5, **phases}
    if p["algorithm"] == "fedlora":
        columns["adapter_contribution"] = 0.002 if p["rank"] == 1 else 0.05
        columns["adapter_weight_norm"] = 0.01 * p["rank"]
    return columns


def point_rows(pid: str, p: dict) -> list[dict]:
    """One point's tidy rows (client offsets -0.1, 0, +0.1 keep the mean exact)."""
    rows, fed = [], p["algorithm"] == "fedlora"
    for round_, client in itertools.product(range(1, ROUNDS + 1), range(CLIENTS)):
        flops = int(1e9) * (client + 1) * (1 if fed else 2)
        sent = 1000 * p["rank"] if fed else {"lg_fedavg": 50_000, "fedproto": 20_000}[p["algorithm"]]
        rows.append(
            {
                "round": round_,
                "client": client,
                "model": MODELS[client],
                "algorithm": p["algorithm"],
                "participated": True,
                "accuracy": mean_acc(p, round_) + 0.1 * (client - 1),
                "loss": 1.0,
                "train_loss": 1.0,
                "train_flops": flops,
                "bytes_up": sent,
                "bytes_down": sent,
                "num_train": 100,
                "num_test": 50,
                **diagnostic_columns(p),
            }
        )
    frame = pd.DataFrame(rows)
    for c in ("train_flops", "bytes_up", "bytes_down"):
        frame[f"cum_{c}"] = frame.groupby("client")[c].cumsum()
    swept = {k: p.get(k) for k in ("rank", "mu", "seed")}  # algorithm is already a column
    return frame.assign(point=pid, **swept).to_dict("records")


def make_sweep(root: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """A finished sweep folder (sweep.json with resolved parameters and provenance, results.csv)
    with one failed point when seed 1 is present; no torch runs."""
    root.mkdir(parents=True, exist_ok=True)
    grids = [{**FEDLORA, "seed": list(seeds)}, {**BASELINES, "seed": list(seeds)}]
    points, rows = [], []
    combos = [dict(zip(g, v)) for g in grids for v in itertools.product(*g.values())]
    for i, p in enumerate(combos):
        pid = f"p{i:03d}-" + "-".join(f"{k}{v}" for k, v in p.items())
        failed = p == FAILED
        resolved = build_config(
            {"dataset": "digits", "num_clients": CLIENTS, "rounds": ROUNDS, "models": ",".join(MODELS), **p}
        ).to_flat()
        points.append(
            {
                "id": pid,
                "params": p,
                "state": "failed" if failed else "done",
                "error": "RuntimeError: synthetic failure" if failed else None,
                "seconds": 10.0 + i,
                "resolved": resolved,
            }
        )
        rows += [] if failed else point_rows(pid, {"rank": None, "mu": None, **p})
    spec = {
        "parameters": {"dataset": "digits", "num_clients": CLIENTS, "rounds": ROUNDS},
        "grid": {
            "algorithm": ["fedlora", *BASELINES["algorithm"]],
            "rank": [1, 4],
            "mu": [0.2, 0.8],
            "seed": list(seeds),
        },
        "points": points,
        "provenance": provenance.record(None, time.time() - 60, time.time(), len(points)),
    }
    (root / "sweep.json").write_text(json.dumps(spec, indent=2))
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    return root


def figures_shown(executed: nbformat.NotebookNode) -> int:
    """How many Plotly figures an executed notebook displayed."""
    return sum(
        PLOTLY_MIME in out.get("data", {}) for cell in executed.cells for out in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> sweep_tables.Sweep:
    return sweep_tables.load_sweep(make_sweep(tmp_path_factory.mktemp("sweep3")))


@pytest.fixture(scope="module")
def summary(sweep: sweep_tables.Sweep) -> pd.DataFrame:
    return sweep_tables.point_summary(sweep.table, sweep.swept)


@pytest.fixture(scope="module")
def configs(summary: pd.DataFrame) -> pd.DataFrame:
    return sweep_tables.configurations(summary)


def row(frame: pd.DataFrame, **params) -> pd.Series:
    hit = frame[(frame[list(params)] == pd.Series(params)).all(axis=1)]
    assert len(hit) == 1, params
    return hit.iloc[0]


def test_t_interval_by_hand() -> None:
    est = stats.t_interval([0.5, 0.6, 0.7])  # s = 0.1
    half = T975[2] * 0.1 / math.sqrt(3)
    assert T975[2] == pytest.approx(4.302652729911275)
    assert (est.mean, est.n) == (pytest.approx(0.6), 3)
    assert (est.low, est.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    one = stats.t_interval([0.4, float("nan")])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    assert stats.t_interval([]).n == 0


def test_paired_test_by_hand() -> None:
    a = {0: 0.70, 1: 0.72, 2: 0.74}
    b = {0: 0.61, 1: 0.60, 2: 0.65, 3: 0.99}  # seed 3 has no partner: left out
    test = stats.paired_test(a, b)  # differences 0.09, 0.12, 0.09: mean 0.1, s/√n = 0.01
    assert test.seeds == (0, 1, 2)
    assert test.difference.mean == pytest.approx(0.1)
    assert test.difference.low == pytest.approx(0.1 - T975[2] * 0.01)
    assert test.statistic == pytest.approx(10.0)
    assert test.p_value == pytest.approx(1 - 10 / math.sqrt(102))  # df = 2: p = 1 − t/√(t²+2)
    lone = stats.paired_test({0: 0.7}, {0: 0.6})
    assert math.isnan(lone.p_value) and lone.difference.mean == pytest.approx(0.1)


def test_load_sweep(sweep: sweep_tables.Sweep) -> None:
    assert sweep.swept == ["algorithm", "rank", "mu", "seed"]
    assert len(sweep.points) == 18 and len(sweep.failed) == 1
    assert sweep.failed.loc[0, "error"].startswith("RuntimeError")
    assert len(sweep.table) == 17 * ROUNDS * CLIENTS
    assert sweep.resolved.loc[0, "lr"] == 0.01 and sweep.points.loc[0, "seconds"] == 10.0
    assert sweep.provenance["packages"]["torch"] and sweep.provenance["commit"]


def test_point_summary_by_hand(summary: pd.DataFrame) -> None:
    assert len(summary) == 17
    low = row(summary, algorithm="fedlora", rank=1, mu=0.2, seed=0)  # peaks at round 1
    assert low["configuration"] == "fedlora · rank=1 · mu=0.2"
    assert low["final_accuracy"] == pytest.approx(0.45)
    assert low["best_accuracy"] == pytest.approx(0.50) and low["best_round"] == 1
    assert low["total_train_flops"] == 3 * (1 + 2 + 3) * 10**9
    assert low["total_bytes"] == 2 * 3 * 3 * 1000 and low["bytes_per_round"] == 6000
    base = row(summary, algorithm="fedproto", seed=1)
    assert base["configuration"] == "fedproto" and base["final_accuracy"] == pytest.approx(0.60)
    assert base["flops_per_round"] == 12e9


def test_configurations_and_bands_by_hand(configs: pd.DataFrame, sweep) -> None:
    assert configs["configuration"].tolist() == [
        BEST,
        "fedlora · rank=1 · mu=0.8",
        "fedlora · rank=4 · mu=0.2",
        "fedlora · rank=1 · mu=0.2",
        "lg_fedavg",
        "fedproto",
    ]
    best = row(configs, configuration=BEST)  # finals 0.70, 0.72, 0.74: s = 0.02
    half = T975[2] * 0.02 / math.sqrt(3)
    assert best["final_accuracy"] == pytest.approx(0.72) and best["seeds"] == 3
    assert best["final_accuracy_low"] == pytest.approx(0.72 - half)
    assert row(configs, configuration="fedlora · rank=1 · mu=0.2")["seeds"] == 2
    curves = sweep_tables.per_round(sweep.table)
    first = row(curves, configuration=BEST, round=1)  # 0.40, 0.42, 0.44
    assert first["accuracy"] == pytest.approx(0.42)
    assert first["accuracy_high"] == pytest.approx(0.42 + half)


def test_verdict_numbers_by_hand(summary, configs, sweep) -> None:
    curves = sweep_tables.seed_curves(sweep.table)
    found = verdict.decide(summary, configs, curves, "digits", target_fraction=0.9)
    vs_best, vs_proto = found.comparisons
    assert (vs_best.role, vs_best.ours, vs_best.other) == ("best baseline", BEST, "lg_fedavg")
    t = 0.08 / (0.01 / math.sqrt(3))  # differences 0.08, 0.07, 0.09
    assert vs_best.final.difference.mean == pytest.approx(0.08)
    assert vs_best.final.statistic == pytest.approx(t)
    assert vs_best.final.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert vs_best.final.difference.high == pytest.approx(0.08 + T975[2] * 0.01 / math.sqrt(3))
    assert vs_proto.other == "fedproto" and vs_proto.final.statistic == pytest.approx(10.0)
    assert vs_proto.best.difference.mean == pytest.approx(0.1)  # best = final for these
    assert found.target.accuracy == pytest.approx(0.9 * 0.72)
    costs = found.costs.set_index("configuration")
    assert costs.loc[BEST, "rounds"] == 3 and costs.loc[BEST, "seed_rounds"] == [3, 3, 3]
    assert costs.loc["lg_fedavg", "seed_rounds"] == [3, 3]  # seed 0 ends at 0.62 < 0.648
    assert math.isnan(costs.loc["lg_fedavg", "rounds"])  # the seed-mean curve ends at 0.64
    assert math.isnan(verdict.ratios(found.costs, vs_best)["flops"])
    assert found.sentence.startswith(
        "At this setting (digits), FedLoRA wins on final accuracy: "
        f"FedLoRA's best configuration ({BEST}) beats the best "
        "baseline (lg_fedavg), difference +8.0 points (95% CI"
    )
    assert "exceeds the seed noise" in found.sentence
    assert "p = 0.005, 3 seeds" in found.sentence


def test_a_difference_within_the_seed_noise_names_no_winner() -> None:
    final = stats.paired_test({0: 0.70, 1: 0.80, 2: 0.75}, {0: 0.74, 1: 0.76, 2: 0.77})
    assert final.difference.low < 0 < final.difference.high
    comparison = verdict.Comparison("best baseline", "fedlora · rank=2", "fedkd", final, final)
    text = verdict.sentence(comparison, "digits", True)
    assert text.startswith("At this setting (digits), no method wins beyond the seed noise: fedkd has")
    assert "trails the best baseline (fedkd)" in text and "3 seeds" in text and "wins on" not in text


def test_cost_to_target_by_hand(summary, configs, sweep) -> None:
    curves = sweep_tables.seed_curves(sweep.table)
    found = verdict.decide(summary, configs, curves, "digits", target_accuracy=0.52)
    costs = found.costs.set_index("configuration")
    assert costs.loc[BEST, "rounds"] == 2 and costs.loc["lg_fedavg", "rounds"] == 3  # 0.57, 0.64
    assert costs.loc[BEST, "flops"] == 2 * 6e9 and costs.loc[BEST, "bytes"] == 2 * 24_000
    assert costs.loc["lg_fedavg", "seed_rounds"] == [3, 3, 3]  # round 2: 0.47, 0.50, 0.50
    r = verdict.ratios(found.costs, found.comparisons[0])
    assert r["rounds"] == pytest.approx(2 / 3) and r["flops"] == pytest.approx(12e9 / 36e9)
    assert r["bytes"] == pytest.approx(2 * 24_000 / (3 * 300_000))
    assert r["flops_per_round"] == pytest.approx(0.5) and r["bytes_per_round"] == pytest.approx(0.08)
    shown = ratio_rows(found).iloc[0]
    assert shown["rounds to target"] == "0.667×" and shown["bytes per round"] == "0.08×"
    assert cost_rows(found).iloc[0]["single seeds reaching it"] == "3 of 3 (rounds 2, 2, 2)"
    claims = verdict.claims(found)
    assert "0.333× to reach 52.0%, 0.5× per round" in claims[1]
    assert "0.0533× to reach 52.0%, 0.08× per round" in claims[2]
    with pytest.raises(ValueError, match="target accuracy=1.5"):
        verdict.choose_target(configs, accuracy=1.5)


def test_one_seed_verdict_says_so(tmp_path: Path) -> None:
    sweep = sweep_tables.load_sweep(make_sweep(tmp_path, seeds=(0,)))
    summary = sweep_tables.point_summary(sweep.table, sweep.swept)
    configs = sweep_tables.configurations(summary)
    found = verdict.decide(summary, configs, sweep_tables.seed_curves(sweep.table), "x")
    assert "1 seed" in found.sentence and "cannot be judged" in found.sentence
    assert "(1 seed (no interval))" in figures.accuracy_curves(sweep.table).layout.title.text


def test_curves_have_bands_and_distinct_colours(sweep, configs) -> None:
    palette = figures.colours(configs["configuration"])
    assert len(set(palette.values())) == len(configs) == 6
    fig = figures.best_per_method(sweep.table, configs, palette)
    lines = [t for t in fig.data if t.fill != "toself"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == [BEST, "lg_fedavg", "fedproto"] and len(bands) == 3
    assert bands[0].name == f"{BEST} · 95% CI"
    half = T975[2] * 0.02 / math.sqrt(3)
    assert list(bands[0].y) == pytest.approx(
        [0.42 + half, 0.57 + half, 0.72 + half, 0.72 - half, 0.57 - half, 0.42 - half]
    )
    assert lines[0].line.color == palette[BEST] and "mean of 3 seeds" in fig.layout.title.text
    multiples = figures.small_multiples(sweep.table, palette, reference=BEST)
    assert [a.text for a in multiples.layout.annotations] == ["fedlora", "lg_fedavg", "fedproto"]
    assert len([t for t in multiples.data if t.fill != "toself"]) == 6 + 2  # + 2 reference lines
    reference = [t for t in multiples.data if t.name == f"{BEST} (reference)"]
    assert [t.xaxis for t in reference] == ["x2", "x3"] and list(reference[0].y) == list(lines[0].y)


def test_plain_run_tables_are_one_point_per_algorithm(sweep) -> None:
    plain = sweep.table[sweep.table["seed"] == 0].drop(columns=["point", "rank", "mu", "seed"])
    plain = plain[plain["algorithm"].isin(["lg_fedavg", "fedproto"])]
    fig = figures.accuracy_curves(plain, ["algorithm"])
    assert sorted(t.name for t in fig.data) == ["fedproto", "lg_fedavg"]
    assert "1 seed" in fig.layout.title.text
    assert {t.name for t in figures.per_client_accuracy(plain).data} == {"fedproto", "lg_fedavg"}


def test_per_client_accuracy_with_seed_interval(sweep, summary) -> None:
    points = summary.loc[summary["configuration"] == BEST, "point"]
    fig = figures.per_client_accuracy(sweep.table[sweep.table["point"].isin(points)])
    assert [t.name for t in fig.data] == list(MODELS)
    assert [t.y[0] for t in fig.data] == pytest.approx([0.62, 0.72, 0.82])
    assert fig.data[0].error_y.array[0] == pytest.approx(T975[2] * 0.02 / math.sqrt(3))


@pytest.mark.parametrize("cost, kind, unit", [("flops", "linear", "GFLOP"), ("bytes", "log", "MB")])
def test_accuracy_vs_cost_units_and_axes(sweep, cost: str, kind: str, unit: str) -> None:
    fig = cost_figures.accuracy_vs_cost(sweep.table, cost=cost)
    assert fig.layout.xaxis.type == kind and unit in fig.layout.xaxis.title.text
    assert ("log scale" in fig.layout.xaxis.title.text) == (kind == "log")
    line = next(t for t in fig.data if t.name == "fedlora · rank=4 · mu=0.2")
    expected = [6, 12, 18] if cost == "flops" else [0.024, 0.048, 0.072]
    assert list(line.x) == pytest.approx(expected)


@pytest.mark.parametrize("cost", ["flops", "bytes"])
def test_pareto_per_configuration(configs: pd.DataFrame, cost: str) -> None:
    fig = cost_figures.pareto(configs, cost=cost)
    assert [t.name for t in fig.data][:-1] == configs["configuration"].tolist()
    assert fig.data[-1].name == "Pareto front"
    assert fig.layout.xaxis.type == ("linear" if cost == "flops" else "log")
    x = "total_train_flops" if cost == "flops" else "total_bytes"
    scale = 1e9 if cost == "flops" else 1e6
    for fx, fy in zip(fig.data[-1].x, fig.data[-1].y):  # nothing beats a front point on both
        assert not ((configs[x] / scale <= fx) & (configs["final_accuracy"] > fy + 1e-12)).any()
    assert fig.data[0].error_y.array[0] == pytest.approx(T975[2] * 0.02 / math.sqrt(3))


def test_an_accuracy_interval_is_shown_within_0_and_100_percent() -> None:
    from workbench.lab.report.html_tables import percent

    assert percent(0.78, 0.478, 1.082) == "78.0% [47.8%, 100.0%]"
    assert percent(0.05, -0.02, 0.12) == "5.0% [0.0%, 12.0%]"
    assert percent(0.5) == "50.0%"


def test_axis_type_and_percent_ticks() -> None:
    assert figures.axis_type([60.880e9, 60.889e9]) == "linear"
    assert figures.axis_type([480, 2.7e6]) == "log"
    values, labels = figures.percent_ticks(0.91, 0.93)
    assert labels == ["91.0%", "91.5%", "92.0%", "92.5%", "93.0%"]
    assert figures.percent_ticks(0.2, 0.6)[1] == ["20%", "30%", "40%", "50%", "60%"]


@pytest.mark.parametrize("stat", ["final", "best"])
def test_rank_mu_heatmap_by_hand(summary: pd.DataFrame, stat: str) -> None:
    (heat,) = heatmaps.knob_heatmap(summary, "fedlora", stat=stat).data
    assert list(heat.y) == ["1", "4"] and list(heat.x) == ["0.2", "0.8"]
    assert heat.z[1][1] == pytest.approx(0.72)
    assert heat.text[1][1] == f"72.0%<br>± {T975[2] * 0.02 / math.sqrt(3):.1%}"
    # rank 1, μ 0.2 lost seed 1: seeds 0 and 2 differ by 0.04, so s/√n = 0.02, df = 1
    assert heat.text[0][0] == (
        f"{0.47 if stat == 'final' else 0.52:.1%}<br>± {math.tan(0.475 * math.pi) * 0.02:.1%}"
    )
    assert len(set(heat.colorbar.ticktext)) == len(heat.colorbar.ticktext)
    means = summary.groupby("configuration")[f"{stat}_accuracy"].mean()  # all methods' span
    assert (heat.zmin, heat.zmax) == (pytest.approx(means.min()), pytest.approx(means.max()))


def test_rank_mu_heatmap_without_grid(summary: pd.DataFrame) -> None:
    for frame in (summary.drop(columns=["mu"]), summary[summary["algorithm"] != "fedlora"]):
        fig = heatmaps.knob_heatmap(frame, "fedlora")
        assert len(fig.data) == 0 and "No rank × μ grid" in fig.layout.annotations[0].text


def test_heatmaps_follow_each_methods_declared_knob_grid(summary: pd.DataFrame) -> None:
    from workbench.algorithms import REGISTRY

    grid = REGISTRY["fedlora"].heatmap
    assert heatmaps.knob_grids(summary) == {"fedlora": grid} and heatmaps.grid_note(summary) == ""
    assert heatmaps.knob_heading("fedlora", grid).startswith(
        "## FedLoRA: adapter rank × μ\n\nμ weighs the adapter branch in the private model's loss"
    )
    fig = heatmaps.knob_heatmap(summary, "fedlora", stat="best")
    assert fig.layout.title.text.startswith("FedLoRA best mean accuracy over rank × μ (mean of 3 seeds")
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("μ", "LoRA rank r")
    assert fig.data[0].hovertemplate.startswith("rank %{y}, μ %{x}<br>")
    unswept = summary.drop(columns=["mu"])
    assert heatmaps.knob_grids(unswept) == {}
    assert (
        heatmaps.grid_note(unswept) == "No FedLoRA heatmap: it needs fedlora points with swept rank and mu."
    )
    ghost = summary.assign(algorithm=summary["algorithm"].replace("fedproto", "ghost"))
    assert heatmaps.grid_note(ghost).startswith("Not registered in this report's kernel: ghost;")
    with pytest.raises(ValueError, match=r"'fedproto' declares no knob grid .* those that do: \['fedlora'\]"):
        heatmaps.knob_heatmap(summary, "fedproto")


def test_the_report_parameters_default_to_the_facts() -> None:
    from workbench.core.facts import REFERENCE_METHOD, RIVAL_METHOD

    cell = nbformat.read(export.REPORT_NOTEBOOK, as_version=4).cells[0]
    assert "parameters" in cell.metadata["tags"]
    lines = ast.parse(cell.source).body  # literal assignments, as papermill requires
    defaults = {line.target.id: ast.literal_eval(line.value) for line in lines}
    assert (defaults["reference"], defaults["rival"]) == (REFERENCE_METHOD, RIVAL_METHOD)
    assert set(export.REPORT_PARAMETERS) == set(defaults) - {"sweep_dir"}


def test_a_verdict_about_another_method_names_it_by_its_title(summary, configs, sweep) -> None:
    curves = sweep_tables.seed_curves(sweep.table)
    found = verdict.decide(summary, configs, curves, "digits", reference="lg_fedavg", rival="fedlora")
    vs_best, vs_rival = found.comparisons
    assert (vs_best.ours, vs_best.other, vs_rival.role) == ("lg_fedavg", BEST, "FedLoRA")
    assert found.sentence.startswith(
        f"At this setting (digits), {BEST} wins on final accuracy: LG-FedAvg's best configuration "
        f"(lg_fedavg) trails the best baseline ({BEST}), difference -8.0 points"
    )
    assert verdict.introduction("lg_fedavg", "fedlora").startswith("LG-FedAvg's best configuration")
    assert all("LG-FedAvg ÷ " in claim for claim in verdict.claims(found)[1:])
    missing = verdict.decide(summary, configs, curves, "digits", reference="fedavg")
    assert missing.sentence == "No verdict at this setting (digits): no FedAvg configuration finished."


def test_configuration_table(configs: pd.DataFrame) -> None:
    shown = configuration_rows(sweep_tables.cost_table(configs)).set_index("configuration")
    assert shown.loc[BEST, "seeds"] == 3 and shown.loc[BEST, "FLOPs ÷ best fedlora"] == "1×"
    assert shown.loc["lg_fedavg", "bytes ÷ best fedlora"] == "12.5×"
    assert shown.loc["lg_fedavg", "total GFLOP"] == "36" and shown.loc[BEST, "total MB"] == "0.072"
    assert shown.loc["fedlora · rank=1 · mu=0.2", "final accuracy"].startswith("47.0% [")


def test_diagnostics_per_configuration_by_hand(sweep) -> None:
    found = diagnostics_view.configuration_diagnostics(sweep.table).set_index("configuration")
    assert "rank" not in found.columns and "steps_model" not in sweep.swept  # results, not knobs
    inert = found.loc["fedlora · rank=1 · mu=0.8"]
    assert inert["seeds"] == 3 and inert["contribution_final"] == pytest.approx(0.002)
    assert (
        inert["contribution_peak"] == pytest.approx(0.002)
        and inert["warnings"] == "adapter inert (3 of 3 seeds)"
    )
    assert (
        found.loc["fedlora · rank=1 · mu=0.2", "warnings"] == "adapter inert (2 of 2 seeds)"
    )  # seed 1 failed
    assert found.loc["fedlora · rank=4 · mu=0.8", "warnings"] == ""
    assert found.loc["lg_fedavg", "warnings"] == "undertrained (3 of 3 seeds)"
    assert found.loc["lg_fedavg", "steps_per_round_model"] == 3
    assert pd.isna(found.loc["fedproto", "contribution_final"]) and pd.isna(
        found.loc["fedproto", "steps_per_round_adapter"]
    )
    text = diagnostics_view.diagnostics_rows(found.reset_index()).set_index("configuration")
    assert text.loc["fedlora · rank=4 · mu=0.8", "adapter contribution, final (peak)"] == "5.00% (5.00%)"
    assert text.loc["fedlora · rank=4 · mu=0.8", "steps per round (median client)"] == "model 12 · adapter 12"
    assert text.loc["fedproto", "adapter contribution, final (peak)"] == "—"
    box = diagnostics_view.warnings_html(found.reset_index())
    assert "3 of 6 configurations" in box and "fedproto" not in box


def test_diagnostics_figure_draws_thresholds_and_names_warnings(sweep, configs) -> None:
    names = ["fedlora · rank=1 · mu=0.8", "lg_fedavg", "fedproto"]
    fig = diagnostics_view.diagnostics_figure(sweep.table, configurations=names)
    assert fig.layout.title.text.startswith(
        "Diagnostics per round — ⚠ fedlora · rank=1 · mu=0.8: adapter inert"
    )
    assert "lg_fedavg: undertrained" in fig.layout.title.text and "fedproto:" not in fig.layout.title.text
    contribution = [t for t in fig.data if t.xaxis == "x"]
    assert [t.name for t in contribution] == ["fedlora · rank=1 · mu=0.8"]  # the others have no adapter
    assert list(contribution[0].y) == pytest.approx([0.002] * ROUNDS)
    steps = {t.name: list(t.y) for t in fig.data if t.xaxis == "x2"}
    assert steps["lg_fedavg · model"] == [3] * ROUNDS and "fedproto · adapter" not in steps
    lines = {(s.yref, s.y0) for s in fig.layout.shapes}
    assert lines >= {("y", diagnostics_view.MIN_CONTRIBUTION), ("y2", diagnostics_view.MIN_STEPS)}


def test_provenance_tables(sweep) -> None:
    names = sweep_tables.point_labels(sweep)
    assert names[sweep.failed.loc[0, "id"]] == "fedlora · rank=1 · mu=0.2"
    shared, per_point = provenance.parameter_tables(sweep.resolved, sweep.points, names)
    assert {"lr", "batch_size", "models"} <= set(shared["parameter"])
    assert {"algorithm", "rank", "mu", "seed"} <= set(per_point.columns)
    env = provenance.environment_table(sweep.provenance, sweep.points["seconds"]).set_index("item")
    assert env.loc["git commit", "value"].startswith(provenance.git_state()["commit"])
    assert env.loc["wall time of all points, summed", "value"] == "5 min 33 s (18 points timed)"
    (efficiency,) = [v for k, v in env["value"].items() if k.startswith("sweep efficiency")]
    assert efficiency == "not recorded (the sweep predates it)"  # this fixture's sweep.json has none
    git = provenance.git_state()
    assert env.loc["sweep run 1", "value"].endswith(
        f"18 points in 1 min 00 s (commit {git['commit'][:12]}{', dirty' if git['dirty'] else ''})"
    )
    record = {"efficiency": 0.9, "experiment_s": 90.0, "wall_s": 50.0, "workers": 2, "points_run": 4}
    record |= {"executor": "local", "kernels": "warm"}
    recorded = provenance.environment_table(sweep.provenance, sweep.points["seconds"], record)
    assert (
        recorded["value"]
        .iloc[-1]
        .startswith("sweep efficiency 90.0%: 90.0 s of experiments in 4 points / (50.0 s wall x 2 workers")
    )
    assert provenance.duration(3725) == "1 h 02 min" and provenance.duration(65) == "1 min 05 s"


def test_empty_sweep(tmp_path: Path) -> None:
    point = {"id": "p000", "params": {"rank": 1}, "state": "failed", "error": "boom"}
    spec = {"parameters": {}, "grid": {"rank": [1]}, "points": [point]}
    (tmp_path / "sweep.json").write_text(json.dumps(spec))  # no results.csv at all
    assert sweep_tables.load_sweep(tmp_path).table.empty
    pd.DataFrame().to_csv(tmp_path / "results.csv", index=False)  # what an empty sweep writes
    sweep = sweep_tables.load_sweep(tmp_path)
    summary = sweep_tables.point_summary(sweep.table, sweep.swept)
    configs = sweep_tables.configurations(summary)
    assert summary.empty and configs.empty and len(sweep.failed) == 1
    assert len(figures.accuracy_curves(sweep.table).data) == 0
    found = verdict.decide(summary, configs, sweep_tables.seed_curves(sweep.table), "x")
    assert found.sentence.startswith("No verdict") and found.comparisons == []


def test_reporting_never_imports_torch() -> None:
    code = (
        "import sys, workbench.lab.report.figures, workbench.lab.report.cost_figures, "
        "workbench.lab.report.heatmaps, workbench.lab.report.export, "
        "workbench.lab.report.verdict, workbench.lab.report.html_tables, workbench.lab.report.provenance; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.kernels
def test_papermill_kernel_is_this_environment(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("prefix = ''", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("import sys; assert sys.prefix == prefix, (sys.prefix, prefix)"),
        ]
    )
    nbformat.write(nb, tmp_path / "t.ipynb")
    export.execute_notebook(tmp_path / "t.ipynb", tmp_path / "out.ipynb", {"prefix": sys.prefix}, timeout=60)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-seed synthetic sweep with its built report."""
    sweep_dir = make_sweep(tmp_path_factory.mktemp("sweep2"), seeds=(0, 1))
    record = json.loads((sweep_dir / "sweep.json").read_text())
    record["efficiency"] = {"efficiency": 0.875, "experiment_s": 70.0, "wall_s": 40.0, "workers": 2}
    record["efficiency"] |= {"points_run": 6, "executor": "local", "kernels": "warm"}
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    export.build_report(sweep_dir, timeout=180)
    return sweep_dir


@pytest.mark.kernels
def test_two_seed_report_states_verdict_bands_and_provenance(two_seeds: Path) -> None:
    html = (two_seeds / "report.html").read_text(encoding="utf-8")
    assert html.count("* plotly.js v") == 1  # the library, embedded once
    assert not re.search(r"<script[^>]*\bsrc=[\"']https?:", html)
    assert "figures.best_per_method" not in html and "pio.renderers.default" not in html
    shown = figures_shown(nbformat.read(two_seeds / "report.ipynb", as_version=4))
    assert shown == 10 and html.count('class="plotly-graph-div"') == shown
    assert [f"plot-{i}" for i in range(1, shown + 1)] == re.findall(r'id="(plot-\d+)" style', html)
    assert html.index(">Verdict<") < html.index(">Accuracy per round<")
    assert "Under attack" not in html  # a section only for sweeps that vary the aggregator or attack
    assert "FedLoRA wins on final accuracy" in html and "paired t-test" in html
    assert '"fill":"toself"' in html and "95% CI" in html and "mean of 2 seeds" in html
    assert provenance.git_state()["commit"] in html
    assert "sweep efficiency 87.5%: 70.0 s of experiments in 6 points / (40.0 s wall x 2 workers" in html
    assert provenance.package_versions(("torch",))["torch"] in html
    assert 'id="T_verdict-accuracy"' in html and 'id="T_configurations"' in html
    executed = nbformat.read(two_seeds / "report.ipynb", as_version=4)
    traces = [
        t["type"]
        for cell in executed.cells
        for out in cell.get("outputs", [])
        for t in out.get("data", {}).get(PLOTLY_MIME, {}).get("data", [])
    ]
    assert "table" not in traces and "heatmap" in traces  # tables are HTML, not Plotly tables
    assert "p001-" not in html.split(">Provenance<")[0]  # configurations named, not point ids
    assert "synthetic failure" in html and "cell-id=injected-parameters" in html
    # the warnings stand beside the verdict, the diagnostics table and figure in their section
    box = html[html.index("workbench-warnings") : html.index(">Accuracy per round<")]
    assert (
        "3 of 6 configurations" in box
        and "fedlora · rank=1 · mu=0.8</b>: adapter inert (2 of 2 seeds)" in box
    )
    assert "lg_fedavg</b>: undertrained (2 of 2 seeds)" in box and "fedproto" not in box
    assert html.index(">Verdict<") < html.index("workbench-warnings") < html.index(">Diagnostics: is")
    assert (
        'id="T_diagnostics"' in html
        and "Diagnostics per round \\u2014 \\u26a0 lg_fedavg: undertrained" in html
    )


@pytest.mark.kernels
def test_one_seed_report_says_one_seed(tmp_path: Path) -> None:
    html = export.build_report(make_sweep(tmp_path, seeds=(0,)), timeout=180, target_fraction=0.8).read_text(
        encoding="utf-8"
    )
    assert "<strong>1 seed</strong> per configuration" in html and "mean of" not in html
    assert "80% of the best configuration" in html


@pytest.mark.kernels
def test_build_report_refuses_unknown_parameters(two_seeds: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown report parameter\(s\) \['target'\]"):
        export.build_report(two_seeds, target=0.5)


@pytest.mark.kernels
@pytest.mark.kernels  # its fixture builds a report; the refusal itself comes before any kernel
def test_build_report_refuses_a_reference_that_is_no_method_of_the_sweep(two_seeds: Path) -> None:
    with pytest.raises(
        ValueError, match=r"reference='fedavg' is no method of this sweep; its methods: \['fedlora'"
    ):
        export.build_report(two_seeds, reference="fedavg")
    with pytest.raises(ValueError, match=r"rival='fedkd' is no method"):
        export.build_report(two_seeds, rival="fedkd")


@pytest.mark.kernels
def test_point_pages_share_one_plotly_library(two_seeds: Path, tmp_path: Path) -> None:
    library = tmp_path / "points" / "plotly.min.js"
    pages = [
        export.notebook_to_html(
            two_seeds / "report.ipynb", tmp_path / "points" / name / "p.html", shared_plotlyjs=library
        )
        for name in ("a", "b")
    ]
    assert library.read_text(encoding="utf-8").startswith("/**\n* plotly.js v")
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "* plotly.js v" not in html and '<script src="../plotly.min.js"></script>' in html
        assert len(html) < 1_000_000


@pytest.mark.kernels
def test_sweep_records_resolved_parameters_and_provenance(tmp_path: Path) -> None:
    from workbench.lab.sweep.run import run_sweep

    tiny = {"dataset": "digits", "num_clients": 2, "rounds": 1, "device": "cpu", "batch_size": 64}
    run_sweep({"parameters": tiny, "grid": {"rank": [2]}}, tmp_path, report=False)
    record = json.loads((tmp_path / "sweep.json").read_text())
    (point,) = record["points"]
    assert point["state"] == "done" and point["seconds"] > 0
    assert point["resolved"] == build_config({**tiny, "rank": 2}).to_flat()
    found = record["provenance"]
    assert found["commit"] == provenance.git_state()["commit"] and isinstance(found["dirty"], bool)
    assert found["packages"]["torch"] == provenance.package_versions(("torch",))["torch"]
    (run,) = found["runs"]
    assert run["wall_seconds"] >= point["seconds"] and run["points_run"] == 1 and found["cpu"]
    loaded = sweep_tables.load_sweep(tmp_path)
    assert loaded.resolved.loc[0, "lr"] == 0.01 and loaded.provenance == found
    run_sweep({"parameters": tiny, "grid": {"rank": [2]}}, tmp_path, report=False)  # nothing to run
    assert json.loads((tmp_path / "sweep.json").read_text())["provenance"] == found


def test_the_detectable_difference_has_the_stated_power_by_scipys_noncentral_t():
    """statsmodels' answer checked against the paired t-test's power computed with scipy."""
    from scipy import stats as sp

    test = stats.paired_test({0: 0.70, 1: 0.72, 2: 0.74}, {0: 0.61, 1: 0.60, 2: 0.65})
    assert test.spread == pytest.approx(np.std([0.09, 0.12, 0.09], ddof=1))
    found = stats.detectable(test)
    n, effect = 3, found.difference / test.spread
    critical = sp.t.ppf(0.975, n - 1)
    shift = effect * math.sqrt(n)
    power = sp.nct.sf(critical, n - 1, shift) + sp.nct.cdf(-critical, n - 1, shift)
    assert power == pytest.approx(stats.POWER, abs=1e-4)
    # the seeds that resolve the observed gap reach the power there, one seed fewer does not
    close = stats.paired_test({0: 0.70, 1: 0.80, 2: 0.75}, {0: 0.74, 1: 0.76, 2: 0.77})
    k = stats.detectable(close).seeds_needed
    gap = abs(close.difference.mean) / close.spread

    def power_at(seeds: float) -> float:
        c, nc = sp.t.ppf(0.975, seeds - 1), gap * math.sqrt(seeds)
        return sp.nct.sf(c, seeds - 1, nc) + sp.nct.cdf(-c, seeds - 1, nc)

    assert power_at(k) >= stats.POWER > power_at(k - 1)
    assert math.isnan(stats.detectable(stats.paired_test({0: 0.7}, {0: 0.6})).difference)


def test_the_verdict_says_what_the_sweep_could_have_detected():
    beyond = stats.paired_test({0: 0.70, 1: 0.72, 2: 0.74}, {0: 0.61, 1: 0.60, 2: 0.65})
    text = verdict.sentence(verdict.Comparison("best baseline", "a", "b", beyond, beyond), "x", True)
    smallest = stats.detectable(beyond).difference * 100
    assert f"At 3 seeds and this spread it resolves a true difference of {smallest:.1f} points" in text
    assert "(80% power)" in text and "would take" not in text
    within = stats.paired_test({0: 0.70, 1: 0.80, 2: 0.75}, {0: 0.74, 1: 0.76, 2: 0.77})
    text = verdict.sentence(verdict.Comparison("best baseline", "a", "b", within, within), "x", True)
    needed = int(stats.detectable(within).seeds_needed)
    assert needed == 309 and f"resolving the observed -0.7 points would take {needed} seeds" in text


def test_a_sweep_on_the_simulated_clock_gets_time_to_target(summary, configs, sweep) -> None:
    """Timing columns are results, never configuration keys; the clock's reading at the first
    round on target is the time to target, in the tables and on the time axis."""
    seconds = sweep.table["algorithm"].map(lambda a: 10.0 if a == "fedlora" else 30.0)
    timed = sweep.table.assign(sim_time=sweep.table["round"] * seconds, sim_seconds=1.0, missed=0)
    assert sweep_tables.config_keys(timed) == sweep_tables.config_keys(sweep.table)
    curves = sweep_tables.seed_curves(timed)
    found = verdict.decide(summary, configs, curves, "digits", target_accuracy=0.52)
    costs = found.costs.set_index("configuration")
    assert costs.loc[BEST, "time"] == 2 * 10.0 and costs.loc["lg_fedavg", "time"] == 3 * 30.0
    assert cost_rows(found).iloc[0]["simulated s to target"] == "20"
    assert ratio_rows(found).iloc[0]["simulated time to target"] == f"{20 / 90:.3g}×"
    fig = cost_figures.accuracy_vs_cost(timed, cost="time", configurations=[BEST])
    assert list(fig.data[-1].x) == [10.0 * r for r in range(1, ROUNDS + 1)]
    assert fig.layout.xaxis.title.text.startswith("simulated seconds")
    assert (
        "time" not in verdict.decide(summary, configs, sweep_tables.seed_curves(sweep.table), "digits").costs
    )
