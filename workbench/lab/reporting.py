"""Sweep reports: load a finished sweep folder, summarise its points, draw Plotly figures.

Reads only the tidy tables that `workbench.core.results` defines (pandas + plotly; never torch).
A *configuration* is one combination of the `by` columns (default: the algorithm and every swept
parameter except `seed`); curves of a configuration average its points (seeds) round by round.
Accuracy is the mean over all clients of each client's local test accuracy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from workbench.core.results import Row, mean_accuracy, summarize

SPEC_FILE, TABLE_FILE = "sweep.json", "results.csv"
RESULT_COLUMNS = (*Row.__dataclass_fields__, "cum_train_flops", "cum_bytes_up", "cum_bytes_down")
TEMPLATE = "plotly_white"
Cost = Literal["flops", "bytes"]
Stat = Literal["final", "best"]
SUMMARY_VALUES = ("algorithm", "final_accuracy", "best_accuracy", "best_round", "rounds",
                  "total_train_flops", "total_bytes_up", "total_bytes_down", "total_bytes")
COST_AXIS = {"flops": ("train_flops", "training FLOPs"), "bytes": ("bytes", "bytes (up + down)")}


@dataclass(frozen=True)
class Sweep:
    """A finished sweep: its spec (sweep.json), one row per point, and all results."""

    spec: dict[str, Any]
    points: pd.DataFrame
    table: pd.DataFrame

    @property
    def swept(self) -> list[str]:
        """Names of the swept parameters, in grid order."""
        return list(self.spec.get("grid", {}))

    @property
    def failed(self) -> pd.DataFrame:
        """Points that did not finish, with their error."""
        return self.points[self.points["state"] != "done"].reset_index(drop=True)


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read sweep.json and results.csv of a sweep folder."""
    sweep_dir = Path(sweep_dir)
    spec = json.loads((sweep_dir / SPEC_FILE).read_text())
    records = [{"id": p["id"], "state": p.get("state"), "error": p.get("error"),
                **p.get("params", {})} for p in spec.get("points", [])]
    points = pd.DataFrame(records, columns=["id", "state", "error", *spec.get("grid", {})])
    try:
        table = pd.read_csv(sweep_dir / TABLE_FILE)
    except (FileNotFoundError, pd.errors.EmptyDataError):  # no point finished
        table = pd.DataFrame(columns=[*RESULT_COLUMNS, "point", *spec.get("grid", {})])
    return Sweep(spec=spec, points=points, table=table)


def swept_columns(table: pd.DataFrame) -> list[str]:
    """Columns a sweep added to the results table (besides `point`)."""
    return [c for c in table.columns if c not in RESULT_COLUMNS and c != "point"]


def _by(table: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    """Default configuration columns: algorithm plus every swept column except seed."""
    if by is not None:
        return list(by)
    return ["algorithm", *[c for c in swept_columns(table) if c not in ("seed", "algorithm")]]


def _points(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a `point` column (a plain run's table counts as one point)."""
    return table if "point" in table.columns else table.assign(point="run")


def label(values: dict[str, Any]) -> str:
    """A configuration's legend label, e.g. 'fedlora · rank=4 · mu=0.2'."""
    parts = [str(v) if k == "algorithm" else f"{k}={_tick(v)}" for k, v in values.items()
             if pd.notna(v)]
    return " · ".join(parts) or "all"


def per_round(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean accuracy and cumulative costs per configuration and round, averaged over its points."""
    table, keys = _points(table), _by(table, by)
    frames = []
    for point, rows in table.groupby("point", sort=True):
        curve = mean_accuracy(rows)
        frames.append(curve.assign(point=point, **{k: rows[k].iloc[0] for k in keys}))
    value_columns = ["accuracy", "cum_train_flops", "cum_bytes_up", "cum_bytes_down", "cum_bytes"]
    if not frames:
        return pd.DataFrame(columns=[*keys, "round", *value_columns, "points"])
    curves = pd.concat(frames, ignore_index=True)
    grouped = curves.groupby([*keys, "round"], dropna=False, sort=True)
    out = grouped[value_columns].mean().join(grouped["point"].nunique().rename("points"))
    return out.reset_index()


def point_summary(table: pd.DataFrame, swept: Sequence[str]) -> pd.DataFrame:
    """Per point: swept params, algorithm, final/best mean accuracy, best round, total costs."""
    keys = [k for k in swept if k != "algorithm"]
    rows = []
    for point, frame in _points(table).groupby("point", sort=True):
        summary = summarize(frame)
        rows.append({"point": point, **{k: frame[k].iloc[0] for k in keys},
                     "algorithm": frame["algorithm"].iloc[0], **summary})
    return pd.DataFrame(rows, columns=["point", *keys, *SUMMARY_VALUES])


def _layout(fig: go.Figure, title: str, x: str, y: str, log_x: bool = False) -> go.Figure:
    """Shared look: white template, titles, accuracy as a percentage on y."""
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=x, yaxis_title=y,
                      legend_title_text="configuration", hovermode="closest")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _note(fig: go.Figure, text: str) -> go.Figure:
    """Add a centred annotation (used for empty or partial figures)."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 14})
    return fig


def accuracy_curves(table: pd.DataFrame, by: Sequence[str] | None = None) -> go.Figure:
    """Mean client accuracy per round, one line per configuration (mean over its seeds)."""
    curves, keys = per_round(table, by), _by(table, by)
    fig = go.Figure()
    for values, rows in curves.groupby(keys, dropna=False, sort=True):
        hover = "round %{x}<br>accuracy %{y:.2%}<br>%{customdata} point(s)"
        fig.add_trace(go.Scatter(x=rows["round"], y=rows["accuracy"], mode="lines+markers",
                                 name=label(dict(zip(keys, values))), customdata=rows["points"],
                                 hovertemplate=hover))
    last = int(curves["round"].max()) if len(curves) else 1
    fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil(last / 10)))
    return _layout(fig, "Mean client accuracy per round", "round", "mean accuracy")


def per_client_accuracy(table: pd.DataFrame) -> go.Figure:
    """Final-round accuracy of each client (mean over the table's points), coloured by model."""
    table = _points(table)
    last = table.groupby("point")["round"].transform("max")
    final = table[table["round"] == last].groupby(["client", "model"], sort=True)["accuracy"].mean()
    fig = go.Figure()
    for model, rows in final.reset_index().groupby("model", sort=True):
        fig.add_trace(go.Bar(x=rows["client"].astype(str), y=rows["accuracy"], name=str(model),
                             hovertemplate="client %{x}<br>accuracy %{y:.2%}"))
    count = table["point"].nunique()
    title = "Final-round accuracy per client" + (f" (mean over {count} points)" * (count > 1))
    fig.update_xaxes(type="category", categoryorder="array",
                     categoryarray=[str(c) for c in sorted(final.index.get_level_values("client"))])
    return _layout(fig, title, "client", "test accuracy").update_layout(legend_title_text="model")


def accuracy_vs_cost(table: pd.DataFrame, by: Sequence[str] | None = None,
                     cost: Cost = "flops") -> go.Figure:
    """Mean accuracy against cumulative cost (all clients), one line per configuration."""
    column, unit = COST_AXIS[cost]
    curves, keys, skipped = per_round(table, by), _by(table, by), []
    fig = go.Figure()
    for values, rows in curves.groupby(keys, dropna=False, sort=True):
        name, rows = label(dict(zip(keys, values))), rows[rows[f"cum_{column}"] > 0]
        if rows.empty:
            skipped.append(name)
            continue
        hover = f"%{{x:.3s}} {cost}<br>accuracy %{{y:.2%}}<br>round %{{customdata}}"
        fig.add_trace(go.Scatter(x=rows[f"cum_{column}"], y=rows["accuracy"], name=name,
                                 mode="lines+markers", customdata=rows["round"],
                                 hovertemplate=hover))
    if skipped:
        _note(fig, f"zero {cost} (not drawn on a log axis): " + ", ".join(skipped))
    title = f"Mean accuracy vs cumulative {unit}"
    return _layout(fig, title, f"cumulative {unit}, all clients (log)", "mean accuracy", log_x=True)


def pareto_front(summary: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (lower or equal x with higher y), sorted by x."""
    front, best = [], float("-inf")
    for _, row in summary.sort_values([x, y], ascending=[True, False], kind="stable").iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def pareto(summary: pd.DataFrame, cost: Cost = "flops", stat: Stat = "final") -> go.Figure:
    """Accuracy vs total cost of every point, markers by algorithm, with the Pareto front."""
    x, unit, y = f"total_{COST_AXIS[cost][0]}", COST_AXIS[cost][1], f"{stat}_accuracy"
    drawn = summary[summary[x] > 0]
    fig = go.Figure()
    for algorithm, rows in drawn.groupby("algorithm", sort=True):
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], mode="markers", name=str(algorithm),
                                 text=rows["point"], marker={"size": 10},
                                 hovertemplate="%{text}<br>%{x:.3s}<br>accuracy %{y:.2%}"))
    front = pareto_front(drawn, x, y)
    if not front.empty:
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", name="Pareto front",
                                 line={"dash": "dash", "color": "black"}, hoverinfo="skip"))
    if len(drawn) < len(summary):
        _note(fig, f"zero {cost} (not drawn): " + ", ".join(summary.loc[summary[x] <= 0, "point"]))
    fig = _layout(fig, f"{stat.capitalize()} mean accuracy vs total {unit}, every point",
                  f"total {unit}, all clients and rounds (log)", f"{stat} mean accuracy",
                  log_x=True)
    return fig.update_layout(legend_title_text="algorithm")


def _tick(value: Any) -> str:
    """A grid value as a category label: 4.0 → '4', 0.2 → '0.2'."""
    numeric = isinstance(value, (int, float)) or hasattr(value, "dtype")
    return f"{value:g}" if numeric else str(value)


def rank_mu_heatmap(summary: pd.DataFrame, stat: Stat = "final") -> go.Figure:
    """FedLoRA mean accuracy over the rank × μ grid (mean over seeds and other swept values)."""
    title = f"FedLoRA {stat} mean accuracy over rank × μ"
    fed = summary[summary["algorithm"] == "fedlora"] if "algorithm" in summary else summary.iloc[:0]
    if not {"rank", "mu"} <= set(summary.columns) or fed.empty:
        fig = _note(go.Figure(), "No rank × μ grid in this sweep "
                                 "(needs fedlora points with swept rank and mu)")
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        return fig.update_layout(template=TEMPLATE, title=title)
    grid = fed.pivot_table(index="rank", columns="mu", values=f"{stat}_accuracy", aggfunc="mean")
    counts = fed.pivot_table(index="rank", columns="mu", values="point", aggfunc="count")
    hover = "rank %{y}, μ %{x}<br>accuracy %{z:.2%}<br>%{customdata} point(s)"
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=[_tick(m) for m in grid.columns], y=[_tick(r) for r in grid.index],
        customdata=counts.to_numpy(), colorscale="Viridis", texttemplate="%{z:.1%}",
        colorbar={"title": {"text": "accuracy"}, "tickformat": ".0%"}, hovertemplate=hover))
    fig.update_layout(template=TEMPLATE, title=f"{title} (mean over seeds)", xaxis_title="μ",
                      yaxis_title="LoRA rank r")
    return fig.update_xaxes(type="category").update_yaxes(type="category")


def cost_table(summary: pd.DataFrame, reference: str = "fedlora") -> pd.DataFrame:
    """Per configuration (mean over seeds): accuracy, total FLOPs and bytes, ratios to `reference`.

    Ratios divide by the `reference` configuration with the highest final accuracy.
    """
    other = (*SUMMARY_VALUES, "point", "seed")
    keys = ["algorithm", *[c for c in summary.columns if c not in other]]
    table = summary.groupby(keys, dropna=False, sort=True).agg(
        points=("point", "count"), final_accuracy=("final_accuracy", "mean"),
        best_accuracy=("best_accuracy", "mean"), total_train_flops=("total_train_flops", "mean"),
        total_bytes_up=("total_bytes_up", "mean"), total_bytes_down=("total_bytes_down", "mean"),
        total_bytes=("total_bytes", "mean")).reset_index()
    ref = table[table["algorithm"] == reference].sort_values("final_accuracy", ascending=False)
    if not ref.empty:
        for column, name in (("total_train_flops", "flops"), ("total_bytes", "bytes")):
            table[f"{name}_vs_{reference}"] = table[column] / ref.iloc[0][column]
    return table


def si(value: float, unit: str) -> str:
    """A number with an SI prefix, e.g. si(1.2e10, "FLOPs") == "12 GFLOPs"."""
    exponent = min(max(int(math.floor(math.log10(abs(value)) / 3)), 0), 6) if value else 0
    return f"{value / 1000 ** exponent:.3g} {' kMGTPE'[exponent].strip()}{unit}"


def _cell(column: str, value: Any) -> str:
    """Format one cost-table cell for display."""
    if pd.isna(value):
        return ""
    if column.endswith("accuracy"):
        return f"{value:.2%}"
    if column.startswith("total_"):
        return si(value, "FLOPs" if "flops" in column else "B")
    return f"{value:.3g}×" if "_vs_" in column else str(value)


def cost_table_figure(summary: pd.DataFrame, reference: str = "fedlora") -> go.Figure:
    """The cost table as a Plotly table."""
    table = cost_table(summary, reference)
    cells = [[_cell(c, v) for v in table[c]] for c in table.columns]
    headers = [c.replace("total_", "").replace("_", " ") for c in table.columns]
    fig = go.Figure(go.Table(header={"values": headers, "align": "left", "fill_color": "#eef"},
                             cells={"values": cells, "align": "left"}))
    title = f"Cost per configuration (mean over seeds; ratios to the best {reference} one)"
    return fig.update_layout(template=TEMPLATE, title=title,
                             height=max(300, 120 + 28 * len(table)))
