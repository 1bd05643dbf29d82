"""Plotly figures of runs and sweeps: accuracy curves with seed bands, small multiples, per-client
accuracy, and the look every report figure shares (template, colours, bands, notes, axes).
Accuracy against cost: `workbench.lab.report.cost_figures`; knob heatmaps:
`workbench.lab.report.heatmaps`.

Every figure reads the tidy tables of `workbench.lab.report.sweep_tables` (pandas + plotly; never torch).
Curves show each configuration's mean over its seeds with a 95% Student-t band; a configuration
keeps one colour in every figure; costs are written in GFLOP and MB (10⁶ bytes), on a linear
axis unless they span more than a factor `LOG_SPAN`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.core.facts import REFERENCE_METHOD
from workbench.lab.report.stats import interval_columns, seed_phrase
from workbench.lab.report.sweep_tables import (
    algorithm_order,
    best_per_algorithm,
    per_round,
    with_points,
)

TEMPLATE = "plotly_white"
Stat = Literal["final", "best"]
LOG_SPAN = 30  # a cost axis turns logarithmic only when its values span more than this factor
PALETTE = list(dict.fromkeys(plotly.colors.qualitative.T10 + plotly.colors.qualitative.Alphabet))


def colours(labels: Sequence[str]) -> dict[str, str]:
    """One distinct colour per label, in order (cycling only beyond the palette's 35)."""
    unique = list(dict.fromkeys(labels))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(unique)}


def _rgba(colour: str, alpha: float) -> str:
    """A hex colour as an rgba() string with the given opacity."""
    r, g, b = plotly.colors.hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def percent_ticks(low: float, high: float, count: int = 5) -> tuple[list[float], list[str]]:
    """Evenly spaced colour-bar ticks from low to high, with the fewest decimals that keep
    every label distinct."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low], [f"{low:.1%}"]
    values = [float(v) for v in np.linspace(low, high, count)]
    for decimals in range(5):
        texts = [f"{v:.{decimals}%}" for v in values]
        if len(set(texts)) == count:
            break
    return values, texts


def axis_type(values: Sequence[float]) -> str:
    """'log' when the positive values span more than LOG_SPAN, else 'linear'."""
    positive = [v for v in values if v > 0]
    return "log" if positive and max(positive) / min(positive) > LOG_SPAN else "linear"


def layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    """Shared look: white template, titles, accuracy as a percentage on y."""
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        legend_title_text="configuration",
        hovermode="closest",
    )
    # an interval may pass 100%; accuracy cannot, so the axis stops there
    return fig.update_yaxes(tickformat=".0%", autorangeoptions={"clipmin": 0, "clipmax": 1})


def note(fig: go.Figure, text: str, y: float = 0.5) -> go.Figure:
    """Add a centred annotation (used for empty or partial figures)."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=y, showarrow=False, font={"size": 13})
    return fig


def band_traces(
    x: pd.Series,
    rows: pd.DataFrame,
    name: str,
    colour: str,
    hover: str,
    custom: pd.Series,
    opacity: float = 0.18,
) -> list[go.Scatter]:
    """A configuration's mean line and, where it has ≥ 2 seeds, its shaded 95% interval."""
    traces = []
    band = rows["accuracy_low"].notna()
    if band.any():
        bx, low, high = (
            x[band].tolist(),
            rows.loc[band, "accuracy_low"].tolist(),
            rows.loc[band, "accuracy_high"].tolist(),
        )
        traces.append(
            go.Scatter(
                x=bx + bx[::-1],
                y=high + low[::-1],
                fill="toself",
                mode="lines",
                fillcolor=_rgba(colour, opacity),
                line={"width": 0},
                name=f"{name} · 95% CI",
                legendgroup=name,
                showlegend=False,
                hoverinfo="skip",
            )
        )
    traces.append(
        go.Scatter(
            x=x,
            y=rows["accuracy"],
            mode="lines+markers",
            name=name,
            legendgroup=name,
            line={"color": colour},
            marker={"size": 5},
            customdata=custom,
            hovertemplate=hover,
        )
    )
    return traces


def opacity(names: Sequence[str]) -> float:
    """Band opacity: fainter when many bands overlap in one chart."""
    return 0.18 if len(names) <= 3 else 0.07


def _round_axis(fig: go.Figure, curves: pd.DataFrame) -> go.Figure:
    """Rounds as integer ticks, at most about ten of them."""
    last = int(curves["round"].max()) if len(curves) else 1
    return fig.update_xaxes(tickformat="d", tick0=0, dtick=max(1, math.ceil(last / 10)))


def seeds_title(curves: pd.DataFrame) -> str:
    """'(mean of 3 seeds, 95% Student-t interval)' from the most seeds any configuration has."""
    most = int(curves["seeds"].max()) if len(curves) else 1
    fewest = int(curves["seeds"].min()) if len(curves) else 1
    phrase = seed_phrase(most)
    return f"({phrase}" + (f"; some configurations have {fewest})" if fewest < most else ")")


def accuracy_curves(
    table: pd.DataFrame,
    by: Sequence[str] | None = None,
    configurations: Sequence[str] | None = None,
    palette: dict[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Mean client accuracy per round per configuration: mean over seeds with a 95% band."""
    curves = per_round(table, by)
    if configurations is not None:
        curves = curves[curves["configuration"].isin(configurations)]
    names = list(configurations or dict.fromkeys(curves["configuration"]))
    palette = palette or colours(names)
    fig = go.Figure()
    hover = "round %{x}<br>accuracy %{y:.2%}<br>%{customdata} seed(s)"
    for name in names:
        rows = curves[curves["configuration"] == name].reset_index(drop=True)
        if len(rows):
            fig.add_traces(
                band_traces(rows["round"], rows, name, palette[name], hover, rows["seeds"], opacity(names))
            )
    _round_axis(fig, curves)
    title = title or "Mean client accuracy per round"
    return layout(fig, f"{title} {seeds_title(curves)}", "round", "mean accuracy")


def best_per_method(
    table: pd.DataFrame,
    configs: pd.DataFrame,
    palette: dict[str, str] | None = None,
    reference: str = REFERENCE_METHOD,
) -> go.Figure:
    """Accuracy per round of each method's best configuration (by mean final accuracy), the
    `reference` method's first."""
    best = best_per_algorithm(configs, reference)
    return accuracy_curves(
        table,
        configurations=best,
        palette=palette or colours(best),
        title="Best configuration of each method: mean accuracy per round",
    )


def small_multiples(
    table: pd.DataFrame, palette: dict[str, str] | None = None, reference: str | None = None, columns: int = 4
) -> go.Figure:
    """One panel per method with all its configurations (mean over seeds, 95% band), and the
    `reference` configuration's mean as a dashed line in the other methods' panels (its method's
    panel first)."""
    curves = per_round(table)
    ours = curves.loc[curves["configuration"] == reference, "algorithm"]
    first = str(ours.iloc[0]) if len(ours) else REFERENCE_METHOD
    methods = algorithm_order(with_points(table)["algorithm"], first) if len(curves) else []
    palette = palette or colours(list(dict.fromkeys(curves["configuration"])))
    columns = max(1, min(columns, len(methods)))
    rows = max(1, math.ceil(len(methods) / columns))
    fig = make_subplots(
        rows=rows,
        cols=columns,
        shared_yaxes=True,
        subplot_titles=methods,
        horizontal_spacing=0.03,
        vertical_spacing=0.14,
    )
    hover = "round %{x}<br>accuracy %{y:.2%}<br>%{customdata} seed(s)"
    for i, method in enumerate(methods):
        mine = curves[curves["algorithm"] == method]
        for name in dict.fromkeys(mine["configuration"]):
            one = mine[mine["configuration"] == name].reset_index(drop=True)
            for trace in band_traces(one["round"], one, name, palette[name], hover, one["seeds"]):
                fig.add_trace(trace, row=i // columns + 1, col=i % columns + 1)
        _reference_line(fig, curves, reference, method, i // columns + 1, i % columns + 1)
    _round_axis(fig, curves).update_xaxes(title_text="round")
    fig.update_yaxes(tickformat=".0%", autorangeoptions={"clipmin": 0, "clipmax": 1})
    title = f"Every configuration, one panel per method {seeds_title(curves)}"
    return fig.update_layout(
        template=TEMPLATE, title=title, height=280 * rows + 140, legend_title_text="configuration"
    )


def _reference_line(
    fig: go.Figure, curves: pd.DataFrame, reference: str | None, method: str, row: int, col: int
) -> None:
    """The reference configuration's mean as a dashed black line in another method's panel."""
    ref = curves[curves["configuration"] == reference]
    if ref.empty or ref["algorithm"].iloc[0] == method:
        return
    first = not any(t.name == f"{reference} (reference)" for t in fig.data)
    fig.add_trace(
        go.Scatter(
            x=ref["round"],
            y=ref["accuracy"],
            mode="lines",
            name=f"{reference} (reference)",
            legendgroup="reference",
            showlegend=first,
            line={"color": "black", "dash": "dash", "width": 1.5},
            hovertemplate="round %{x}<br>accuracy %{y:.2%}",
        ),
        row=row,
        col=col,
    )


def per_client_accuracy(table: pd.DataFrame) -> go.Figure:
    """Final-round accuracy per client: by model, mean over the table's points (seeds) with a 95%
    interval; by algorithm when the table holds several."""
    table = with_points(table)
    final = table[table["round"] == table.groupby("point")["round"].transform("max")]
    several = final["algorithm"].nunique() > 1
    colour_by = "algorithm" if several else "model"
    stats = interval_columns(final, ["client", colour_by], "accuracy")
    fig = go.Figure()
    for group, rows in stats.groupby(colour_by, sort=True):
        error = {
            "type": "data",
            "symmetric": False,
            "array": rows["accuracy_high"] - rows["accuracy"],
            "arrayminus": rows["accuracy"] - rows["accuracy_low"],
        }
        fig.add_trace(
            go.Bar(
                x=rows["client"].astype(str),
                y=rows["accuracy"],
                name=str(group),
                error_y=error if rows["accuracy_low"].notna().any() else None,
                hovertemplate="client %{x}<br>accuracy %{y:.2%}",
            )
        )
    clients = sorted(stats["client"].unique())
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[str(c) for c in clients])
    seeds = 1 if several else int(stats["seeds"].max()) if len(stats) else 1
    title = "Final-round accuracy per client" + ("" if several else f" ({seed_phrase(seeds)})")
    fig = layout(fig, title, "client", "test accuracy").update_layout(legend_title_text=colour_by)
    return fig.update_yaxes(rangemode="tozero")
