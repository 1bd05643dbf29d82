"""Accuracy under attack per aggregator: the report's figure for sweeps that vary the server's
rule (`aggregator`) or the attack (`attack`, `malicious_clients`). Never imports torch."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.lab.report.figures import TEMPLATE, Stat, note
from workbench.lab.report.sweep_tables import tick

SETTINGS = ("attack", "malicious_clients")  # what the x axis groups by, where swept


def varies_defence_or_attack(summary: pd.DataFrame) -> bool:
    """Whether the sweep varies the aggregator or the attack (the report's section is for those)."""
    return bool({"aggregator", *SETTINGS} & set(summary.columns))


def robustness_table(summary: pd.DataFrame, stat: Stat = "final") -> pd.DataFrame:
    """Mean accuracy and refused uploads per (attack setting, aggregator), over seeds and other
    swept values; `setting` labels the attack columns the sweep varies."""
    settings = [c for c in SETTINGS if c in summary.columns]
    rows = summary.assign(
        setting=summary[settings].apply(lambda r: ", ".join(f"{k}={tick(v)}" for k, v in r.items()), axis=1)
        if settings
        else "as configured",
        aggregator=summary.get("aggregator", "as configured"),
    )
    table = rows.groupby(["setting", "aggregator"], sort=True).agg(
        accuracy=(f"{stat}_accuracy", "mean"), refused=("refused", "sum"), points=("point", "count")
    )
    return table.reset_index()


def robustness_figure(summary: pd.DataFrame, stat: Stat = "final") -> go.Figure:
    """Grouped bars: mean accuracy per attack setting (x), one bar per aggregator."""
    title = f"{stat.capitalize()} mean accuracy under attack, per aggregator"
    if not varies_defence_or_attack(summary):
        fig = note(go.Figure(), "This sweep varies neither the aggregator nor the attack")
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        return fig.update_layout(template=TEMPLATE, title=title)
    table = robustness_table(summary, stat)
    fig = go.Figure(
        [
            go.Bar(
                name=str(aggregator),
                x=part["setting"],
                y=part["accuracy"],
                customdata=part[["refused", "points"]].to_numpy(),
                hovertemplate="%{x}<br>accuracy %{y:.2%}<br>refused uploads "
                "%{customdata[0]}<br>%{customdata[1]} point(s)",
            )
            for aggregator, part in table.groupby("aggregator", sort=True)
        ]
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"{title} (mean over seeds)",
        barmode="group",
        xaxis_title="attack",
        yaxis_title="mean client accuracy",
        legend_title_text="aggregator",
    )
    return fig.update_yaxes(tickformat=".0%", rangemode="tozero")
