"""Accuracy against ε: the report's figures for runs that add client-level DP noise
(`workbench.loop.privacy` writes the `epsilon` column). Never imports torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from workbench.core.facts import EPSILON
from workbench.lab.report.figures import TEMPLATE, colours, note
from workbench.lab.report.stats import interval_columns
from workbench.lab.report.sweep_tables import SEPARATOR, with_points

NOISE = "dp_noise_multiplier"


def has_epsilon(table: pd.DataFrame) -> bool:
    """Whether some run of the table added DP noise (its rows carry ε)."""
    return EPSILON in table.columns and bool(table[EPSILON].notna().any())


def series_name(configuration: str) -> str:
    """A configuration's label without its noise multiplier: the points one curve joins."""
    parts = [p for p in configuration.split(SEPARATOR) if not p.startswith(f"{NOISE}=")]
    return SEPARATOR.join(parts) or "all"


def privacy_table(table: pd.DataFrame, summary: pd.DataFrame, stat: str = "final") -> pd.DataFrame:
    """Per configuration: the ε its runs spent by their last round (inf: no noise), its mean
    accuracy over seeds with a 95% interval, and the series (configuration less the noise)."""
    table = with_points(table)
    last = table.sort_values("round").groupby("point").tail(1)
    spent = (last.set_index("point")[EPSILON] if EPSILON in last else pd.Series(dtype=float)).rename(EPSILON)
    points = summary.merge(spent, left_on="point", right_index=True, how="left")
    points[EPSILON] = points[EPSILON].fillna(math.inf)  # a run without noise promises nothing
    value = f"{stat}_accuracy"
    out = interval_columns(points, ["configuration", "algorithm"], value)
    eps = points.groupby("configuration")[EPSILON].max()  # ε does not depend on the seed
    out[EPSILON] = out["configuration"].map(eps)
    out["series"] = out["configuration"].map(series_name)
    return out.sort_values(["series", EPSILON], kind="stable").reset_index(drop=True)


def epsilon_figure(table: pd.DataFrame, summary: pd.DataFrame, stat: str = "final") -> go.Figure:
    """Mean accuracy (95% interval over seeds) against ε spent, one line per configuration less
    its noise; a configuration without noise (ε = ∞) is its series' dashed line."""
    title = f"{stat.capitalize()} mean accuracy against ε spent (client-level DP)"
    fig = go.Figure().update_layout(template=TEMPLATE, title=title)
    if not has_epsilon(table):
        return note(fig, "No run of this sweep adds DP noise (dp_noise_multiplier 0)")
    rows = privacy_table(table, summary, stat)
    value = f"{stat}_accuracy"
    palette = colours(list(dict.fromkeys(rows["series"])))
    for series, part in rows.groupby("series", sort=False):
        finite = part[part[EPSILON].map(math.isfinite)]
        fig.add_trace(
            go.Scatter(
                x=finite[EPSILON],
                y=finite[value],
                mode="lines+markers",
                name=series,
                line={"color": palette[series]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (finite[f"{value}_high"] - finite[value]).fillna(0),
                    "arrayminus": (finite[value] - finite[f"{value}_low"]).fillna(0),
                },
                customdata=finite[["configuration", "seeds"]].to_numpy(),
                hovertemplate="%{customdata[0]}<br>ε %{x:.3g}<br>accuracy %{y:.2%}<br>"
                "%{customdata[1]} seed(s)<extra></extra>",
            )
        )
        for _, free in part[~part[EPSILON].map(math.isfinite)].iterrows():
            fig.add_hline(
                y=free[value],
                line={"dash": "dash", "color": palette[series]},
                annotation_text=f"{series}: no noise (ε = ∞)",
                annotation_position="bottom right",
            )
    fig.update_xaxes(type="log", title="ε spent at dp_delta (log scale; smaller is more private)")
    return fig.update_yaxes(title="mean client accuracy", tickformat=".0%")


def epsilon_curves(table: pd.DataFrame, by: Sequence[str] = ("algorithm",)) -> go.Figure:
    """One run's (or a few runs') mean accuracy per evaluated round against the ε spent so far."""
    fig = go.Figure().update_layout(template=TEMPLATE, title="Mean accuracy against ε spent per round")
    if not has_epsilon(table):
        return note(fig, "This run adds no DP noise (dp_noise_multiplier 0)")
    keys = list(by)
    curves = table.groupby([*keys, "round"], sort=True).agg(
        accuracy=("accuracy", "mean"), **{EPSILON: (EPSILON, "max")}
    )
    for name, part in curves.reset_index().groupby(keys, sort=True):
        label = SEPARATOR.join(str(v) for v in (name if isinstance(name, tuple) else (name,)))
        fig.add_trace(
            go.Scatter(
                x=part[EPSILON],
                y=part["accuracy"],
                mode="lines+markers",
                name=label,
                customdata=part["round"],
                hovertemplate="round %{customdata}<br>ε %{x:.3g}<br>accuracy %{y:.2%}<extra></extra>",
            )
        )
    fig.update_xaxes(title="ε spent at dp_delta")
    return fig.update_yaxes(title="mean client accuracy", tickformat=".0%")
