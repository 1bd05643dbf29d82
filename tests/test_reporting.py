"""Reporting on a synthetic sweep folder: summaries by hand, figures, self-contained HTML export."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from workbench.lab import export, reporting

ROUNDS, CLIENTS, MODELS = 2, 3, ("cnn1", "cnn2", "cnn3")
GRID = {"algorithm": ["fedlora", "lg_fedavg"], "rank": [1, 4], "mu": [0.2, 0.8], "seed": [0, 1]}
FAILED = {"algorithm": "lg_fedavg", "rank": 4, "mu": 0.8, "seed": 1}
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def mean_acc(p: dict, round_: int) -> float:
    """Designed mean accuracy: FedLoRA rank 1 peaks at round 1 (best ≠ final), rank 4 later."""
    if p["algorithm"] == "fedlora":
        first = 0.5 + 0.1 * p["mu"] + 0.01 * p["seed"]
        return first if round_ == 1 else first + (0.1 if p["rank"] == 4 else -0.05)
    return 0.4 if round_ == 1 else 0.45 + 0.01 * p["seed"]


def point_rows(pid: str, p: dict) -> list[dict]:
    """One point's tidy rows (client offsets -0.1, 0, +0.1 keep the mean exact)."""
    rows = []
    for round_, client in itertools.product(range(1, ROUNDS + 1), range(CLIENTS)):
        fed = p["algorithm"] == "fedlora"
        flops = int(1e9) * (client + 1) * (1 if fed else 2)
        sent = 1000 * p["rank"] if fed else 50_000
        rows.append({"round": round_, "client": client, "model": MODELS[client],
                     "algorithm": p["algorithm"], "participated": True,
                     "accuracy": mean_acc(p, round_) + 0.1 * (client - 1), "loss": 1.0,
                     "train_loss": 1.0, "train_flops": flops, "bytes_up": sent, "bytes_down": sent,
                     "num_train": 100, "num_test": 50})
    frame = pd.DataFrame(rows)
    for c in ("train_flops", "bytes_up", "bytes_down"):
        frame[f"cum_{c}"] = frame.groupby("client")[c].cumsum()
    swept = {k: v for k, v in p.items() if k != "algorithm"}  # algorithm is already a column
    return frame.assign(point=pid, **swept).to_dict("records")


def make_sweep(root: Path) -> Path:
    """A finished sweep folder (sweep.json, results.csv) with one failed point; no torch runs."""
    root.mkdir(parents=True, exist_ok=True)
    points, rows = [], []
    for i, values in enumerate(itertools.product(*GRID.values())):
        p = dict(zip(GRID, values))
        pid = f"p{i:03d}-" + "-".join(f"{k}{v}" for k, v in p.items())
        failed = p == FAILED
        points.append({"id": pid, "params": p, "state": "failed" if failed else "done",
                       "error": "RuntimeError: synthetic failure" if failed else None})
        rows += [] if failed else point_rows(pid, p)
    spec = {"parameters": {"dataset": "digits", "num_clients": CLIENTS, "rounds": ROUNDS},
            "grid": GRID, "points": points}
    (root / "sweep.json").write_text(json.dumps(spec, indent=2))
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    return root


def figures_shown(executed: nbformat.NotebookNode) -> int:
    """How many Plotly figures an executed notebook displayed."""
    return sum(PLOTLY_MIME in out.get("data", {}) for cell in executed.cells
               for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def sweep(sweep_dir: Path) -> reporting.Sweep:
    return reporting.load_sweep(sweep_dir)


@pytest.fixture(scope="module")
def summary(sweep: reporting.Sweep) -> pd.DataFrame:
    return reporting.point_summary(sweep.table, sweep.swept)


def row(summary: pd.DataFrame, **params) -> pd.Series:
    hit = summary[(summary[list(params)] == pd.Series(params)).all(axis=1)]
    assert len(hit) == 1, params
    return hit.iloc[0]


def test_load_sweep(sweep: reporting.Sweep) -> None:
    assert sweep.swept == ["algorithm", "rank", "mu", "seed"]
    assert len(sweep.points) == 16 and len(sweep.failed) == 1
    assert sweep.failed.loc[0, "error"].startswith("RuntimeError")
    assert len(sweep.table) == 15 * ROUNDS * CLIENTS
    assert reporting.swept_columns(sweep.table) == ["rank", "mu", "seed"]


def test_point_summary_by_hand(summary: pd.DataFrame) -> None:
    assert len(summary) == 15
    low = row(summary, algorithm="fedlora", rank=1, mu=0.2, seed=0)  # peaks at round 1
    assert low["final_accuracy"] == pytest.approx(0.47)
    assert low["best_accuracy"] == pytest.approx(0.52) and low["best_round"] == 1
    assert low["total_train_flops"] == 2 * (1 + 2 + 3) * 10**9
    assert low["total_bytes_up"] == low["total_bytes_down"] == 6000 and low["total_bytes"] == 12000
    high = row(summary, algorithm="fedlora", rank=4, mu=0.8, seed=1)  # peaks at round 2
    assert high["final_accuracy"] == pytest.approx(0.69) == high["best_accuracy"]
    assert high["best_round"] == 2 and high["total_bytes"] == 2 * 2 * 3 * 4000
    base = row(summary, algorithm="lg_fedavg", rank=1, mu=0.2, seed=1)
    assert base["final_accuracy"] == pytest.approx(0.46) and base["best_round"] == 2
    assert base["total_train_flops"] == 2 * 2 * 6 * 10**9


def test_accuracy_curves(sweep: reporting.Sweep) -> None:
    fig = reporting.accuracy_curves(sweep.table)
    assert len(fig.data) == 8  # algorithm × rank × mu; seeds averaged
    assert fig.layout.title.text == "Mean client accuracy per round"
    assert fig.layout.xaxis.title.text == "round" and fig.layout.yaxis.title.text == "mean accuracy"
    trace = next(t for t in fig.data if t.name == "fedlora · rank=1 · mu=0.2")
    assert list(trace.x) == [1, 2] and list(trace.y) == pytest.approx([0.525, 0.475])
    lone = next(t for t in fig.data if t.name == "lg_fedavg · rank=4 · mu=0.8")
    assert list(lone.y) == pytest.approx([0.4, 0.45])  # the failed seed is simply absent
    assert len(reporting.accuracy_curves(sweep.table, by=["algorithm"]).data) == 2


def test_per_client_accuracy(sweep: reporting.Sweep) -> None:
    one = sweep.table[sweep.table["point"] == sweep.table["point"].iloc[0]]
    fig = reporting.per_client_accuracy(one)
    assert [t.name for t in fig.data] == list(MODELS)
    assert fig.layout.title.text == "Final-round accuracy per client"
    assert [t.y[0] for t in fig.data] == pytest.approx([0.37, 0.47, 0.57])
    assert "mean over 15 points" in reporting.per_client_accuracy(sweep.table).layout.title.text


@pytest.mark.parametrize("cost, unit",
                         [("flops", "training FLOPs"), ("bytes", "bytes (up + down)")])
def test_accuracy_vs_cost(sweep: reporting.Sweep, cost: str, unit: str) -> None:
    fig = reporting.accuracy_vs_cost(sweep.table, cost=cost)
    assert len(fig.data) == 8 and fig.layout.xaxis.type == "log"
    assert fig.layout.title.text == f"Mean accuracy vs cumulative {unit}"
    assert unit in fig.layout.xaxis.title.text
    trace = next(t for t in fig.data if t.name == "fedlora · rank=4 · mu=0.2")
    expected = [6e9, 12e9] if cost == "flops" else [24000, 48000]
    assert list(trace.x) == pytest.approx(expected)


@pytest.mark.parametrize("cost", ["flops", "bytes"])
def test_pareto(summary: pd.DataFrame, cost: str) -> None:
    fig = reporting.pareto(summary, cost=cost)
    assert [t.name for t in fig.data] == ["fedlora", "lg_fedavg", "Pareto front"]
    assert len(fig.data[0].x) == 8 and len(fig.data[1].x) == 7
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.title.text.startswith("Final mean accuracy vs total")
    x, y = f"total_{'train_flops' if cost == 'flops' else 'bytes'}", "final_accuracy"
    front = list(zip(fig.data[2].x, fig.data[2].y))
    for fx, fy in front:  # nothing beats a front point on both axes
        assert not ((summary[x] <= fx) & (summary[y] > fy + 1e-12)).any()
    assert max(fy for _, fy in front) == pytest.approx(summary[y].max())


@pytest.mark.parametrize("stat", ["final", "best"])
def test_rank_mu_heatmap_equals_summary(summary: pd.DataFrame, stat: str) -> None:
    fig = reporting.rank_mu_heatmap(summary, stat=stat)
    (heat,) = fig.data
    assert list(heat.y) == ["1", "4"] and list(heat.x) == ["0.2", "0.8"]
    fed = summary[summary["algorithm"] == "fedlora"]
    means = fed.groupby(["rank", "mu"])[f"{stat}_accuracy"].mean()
    for (i, r), (j, m) in itertools.product(enumerate([1, 4]), enumerate([0.2, 0.8])):
        assert heat.z[i][j] == pytest.approx(means[(r, m)])
    assert fig.layout.title.text.startswith(f"FedLoRA {stat} mean accuracy over rank × μ")
    assert fig.layout.xaxis.title.text == "μ" and fig.layout.yaxis.title.text == "LoRA rank r"


def test_rank_mu_heatmap_without_grid(summary: pd.DataFrame) -> None:
    for frame in (summary.drop(columns=["mu"]), summary[summary["algorithm"] != "fedlora"]):
        fig = reporting.rank_mu_heatmap(frame)
        assert len(fig.data) == 0 and "No rank × μ grid" in fig.layout.annotations[0].text


def test_cost_table(summary: pd.DataFrame) -> None:
    table = reporting.cost_table(summary)
    assert len(table) == 8 and "seed" not in table.columns
    best = table[table["algorithm"] == "fedlora"].sort_values("final_accuracy").iloc[-1]
    assert (best["rank"], best["mu"]) == (4, 0.8)
    assert best["flops_vs_fedlora"] == pytest.approx(1) == best["bytes_vs_fedlora"]
    base = row(table.rename(columns={"points": "n"}), algorithm="lg_fedavg", rank=4, mu=0.8)
    assert base["n"] == 1 and base["flops_vs_fedlora"] == pytest.approx(2)
    assert base["bytes_vs_fedlora"] == pytest.approx(50_000 / 4000)
    fig = reporting.cost_table_figure(summary)
    assert len(fig.data) == 1 and fig.data[0].type == "table"
    assert len(fig.data[0].cells.values[0]) == 8


def test_empty_sweep_gives_empty_figures(tmp_path: Path) -> None:
    point = {"id": "p000", "params": {"rank": 1}, "state": "failed", "error": "boom"}
    spec = {"parameters": {}, "grid": {"rank": [1]}, "points": [point]}
    (tmp_path / "sweep.json").write_text(json.dumps(spec))  # no results.csv at all
    assert reporting.load_sweep(tmp_path).table.empty
    pd.DataFrame().to_csv(tmp_path / "results.csv", index=False)  # what an empty sweep writes
    sweep = reporting.load_sweep(tmp_path)
    summary = reporting.point_summary(sweep.table, sweep.swept)
    assert summary.empty and len(sweep.failed) == 1
    assert len(reporting.accuracy_curves(sweep.table).data) == 0
    assert len(reporting.pareto(summary).data) == 0


def test_a_plain_run_table_is_one_point(sweep: reporting.Sweep) -> None:
    one = sweep.table[sweep.table["point"] == sweep.table["point"].iloc[0]]
    summary = reporting.point_summary(one.drop(columns="point"), [])
    assert summary["point"].tolist() == ["run"]
    assert len(reporting.accuracy_curves(one.drop(columns=["point"])).data) == 1


def test_reporting_never_imports_torch() -> None:
    code = "import sys, workbench.lab.reporting, workbench.lab.export; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_papermill_kernel_is_this_environment(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("prefix = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import sys; assert sys.prefix == prefix, (sys.prefix, prefix)")])
    nbformat.write(nb, tmp_path / "t.ipynb")
    export.execute_notebook(tmp_path / "t.ipynb", tmp_path / "out.ipynb", {"prefix": sys.prefix},
                            timeout=60)


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> Path:
    return export.build_report(sweep_dir, timeout=120)


def test_build_report_is_self_contained(report: Path, sweep_dir: Path) -> None:
    assert report == sweep_dir.resolve() / "report.html"
    html = report.read_text(encoding="utf-8")
    assert html.count("* plotly.js v") == 1  # the library, embedded once
    assert not re.search(r"<script[^>]*\bsrc=[\"']https?:", html)
    assert "reporting.accuracy_curves" not in html and "pio.renderers.default" not in html
    executed = nbformat.read(sweep_dir / "report.ipynb", as_version=4)
    shown = figures_shown(executed)
    assert shown == 9
    assert html.count('class="plotly-graph-div"') == shown
    assert [f"plot-{i}" for i in range(1, shown + 1)] == re.findall(r'id="(plot-\d+)" style', html)
    assert "FedLoRA sweep report" in html and "synthetic failure" in html
    assert "cell-id=injected-parameters" in html  # no random ids left: same sweep, same HTML
