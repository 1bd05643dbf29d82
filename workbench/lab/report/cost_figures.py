"""Accuracy against cost: mean accuracy per round against cumulative training FLOPs, bytes sent or
the simulated clock, and each configuration's final (or best) accuracy against its total cost
with the Pareto front. Costs in GFLOP and MB (10⁶ bytes), on a linear axis unless they span more
than `figures.LOG_SPAN`; pandas + plotly, never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from workbench.lab.report.figures import (
    Stat,
    axis_type,
    band_traces,
    colours,
    layout,
    note,
    opacity,
    seeds_title,
)
from workbench.lab.report.stats import seed_phrase
from workbench.lab.report.sweep_tables import pareto_front, per_round

Cost = Literal["flops", "bytes", "time"]
COST_AXIS = {
    "flops": ("cum_train_flops", "total_train_flops", "training GFLOP", 1e9, "GFLOP"),
    "bytes": ("cum_bytes", "total_bytes", "MB sent (up + down)", 1e6, "MB"),
    # the simulated clock (device_flops): curves only; a run's total is its clock at the end
    "time": ("sim_time", "sim_time", "simulated seconds", 1.0, "s"),
}


def accuracy_vs_cost(
    table: pd.DataFrame,
    by: Sequence[str] | None = None,
    cost: Cost = "flops",
    configurations: Sequence[str] | None = None,
    palette: dict[str, str] | None = None,
) -> go.Figure:
    """Mean accuracy (95% band) against cumulative cost of all clients (or the simulated clock),
    per configuration."""
    column, _, unit, scale, short = COST_AXIS[cost]
    curves = per_round(table, by)
    names = list(configurations or dict.fromkeys(curves["configuration"]))
    palette, fig, skipped = palette or colours(names), go.Figure(), []
    kind = axis_type(curves.loc[curves["configuration"].isin(names), column])
    hover = f"%{{x:,.4g}} {short}<br>accuracy %{{y:.2%}}<br>round %{{customdata}}"
    for name in names:
        rows = curves[curves["configuration"] == name]
        rows = (rows[rows[column] > 0] if kind == "log" else rows).reset_index(drop=True)
        if rows.empty:
            skipped.append(name)
            continue
        fig.add_traces(
            band_traces(rows[column] / scale, rows, name, palette[name], hover, rows["round"], opacity(names))
        )
    if skipped:
        note(fig, f"zero {short} (not drawn on a log axis): " + ", ".join(skipped), y=0.02)
    log = " (log scale)" if kind == "log" else ""
    fig.update_xaxes(type=kind, rangemode="tozero")
    if cost == "time":
        title, x = f"Mean accuracy vs the simulated clock {seeds_title(curves)}", f"{unit}{log}"
    else:
        title, x = (
            f"Mean accuracy vs cumulative {unit} {seeds_title(curves)}",
            f"cumulative {unit}, all clients{log}",
        )
    return layout(
        fig,
        title,
        x,
        "mean accuracy",
    )


def pareto(
    configs: pd.DataFrame, cost: Cost = "flops", stat: Stat = "final", palette: dict[str, str] | None = None
) -> go.Figure:
    """Mean accuracy (95% error bar) vs total cost per configuration, with the Pareto front."""
    _, x, unit, scale, short = COST_AXIS[cost]
    y, palette = f"{stat}_accuracy", palette or colours(list(configs["configuration"]))
    kind = axis_type(configs[x])
    drawn = configs[configs[x] > 0] if kind == "log" else configs
    fig = go.Figure()
    for _, row in drawn.iterrows():
        error = (
            None
            if pd.isna(row[f"{y}_low"])
            else {
                "type": "data",
                "symmetric": False,
                "array": [row[f"{y}_high"] - row[y]],
                "arrayminus": [row[y] - row[f"{y}_low"]],
            }
        )
        fig.add_trace(
            go.Scatter(
                x=[row[x] / scale],
                y=[row[y]],
                mode="markers",
                name=row["configuration"],
                marker={"size": 11, "color": palette[row["configuration"]]},
                error_y=error,
                hovertemplate=f"%{{x:,.4g}} {short}<br>accuracy %{{y:.2%}}",
            )
        )
    front = pareto_front(drawn, x, y)
    if not front.empty:
        fig.add_trace(
            go.Scatter(
                x=front[x] / scale,
                y=front[y],
                mode="lines+markers",
                name="Pareto front",
                line={"dash": "dash", "color": "black"},
                marker={"symbol": "circle-open", "size": 18, "color": "black"},
                hoverinfo="skip",
            )
        )
    if len(drawn) < len(configs):
        zero = configs.loc[configs[x] <= 0, "configuration"]
        note(fig, f"zero {short} (not drawn on a log axis): " + ", ".join(zero), y=0.02)
    seeds = int(configs["seeds"].max()) if len(configs) else 1
    fig.update_xaxes(type=kind, rangemode="tozero")
    log = " (log scale)" if kind == "log" else ""
    return layout(
        fig,
        f"{stat.capitalize()} accuracy vs total {unit} per configuration ({seed_phrase(seeds)})",
        f"total {unit}, all clients and rounds{log}",
        f"{stat} mean accuracy",
    )
