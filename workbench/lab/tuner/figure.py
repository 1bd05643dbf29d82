"""The tuner's figure: three linked panels sharing the accuracy axis, three traces per setting.

Panels: mean accuracy (%) per round; against cumulative training GFLOP; against cumulative MB
sent (up + down). A setting's three traces share its colour and legend group; the current
setting is drawn thick and opaque, the others thin.
"""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from workbench.lab.tuner.runs import Curve

PALETTE = qualitative.Plotly  # 10 distinct colours; the tuner shows at most 8 settings
PANELS = (
    ("round", "round"),
    ("gflop", "training GFLOP<br>cumulative, all clients (log)"),
    ("mb", "MB sent, up + down<br>cumulative, all clients (log)"),
)
_UNITS = {"gflop": "GFLOP", "mb": "MB"}


def _hover(panel: str) -> str:
    """Hover text: the setting's label, round, accuracy, and the panel's cost with its unit."""
    cost = f"<br>%{{x:.4g}} {_UNITS[panel]}" if panel in _UNITS else ""
    return f"<b>%{{fullData.name}}</b><br>round %{{customdata}}<br>accuracy %{{y:.1f}}%{cost}<extra></extra>"


def make_figure() -> go.Figure:
    """An empty three-panel figure with unambiguous axis titles and units."""
    fig = make_subplots(
        rows=1,
        cols=3,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("accuracy per round", "accuracy vs computation", "accuracy vs communication"),
    )
    fig.update_layout(
        template="plotly_white",
        height=420,
        width=1050,
        showlegend=False,
        margin={"l": 60, "r": 20, "t": 40, "b": 70},
        hovermode="closest",
        hoverlabel={"namelength": -1},
        uirevision="tuner",
        meta="workbench-tuner",
    )
    fig.add_annotation(
        name="zero",
        text="",
        xref="x3 domain",
        yref="y3 domain",
        x=0.5,
        y=0.02,
        showarrow=False,
        font={"size": 11},
    )  # names settings that send nothing
    fig.update_yaxes(title_text="mean client accuracy (%)", range=[0, 100], row=1, col=1)
    for col, (_, title) in enumerate(PANELS, start=1):
        fig.update_xaxes(title_text=title, row=1, col=col)
    fig.update_xaxes(type="log", row=1, col=2)
    fig.update_xaxes(type="log", row=1, col=3)
    fig.update_xaxes(tickformat="d", row=1, col=1)
    return fig


def _style(colour: str, current: bool, state: str) -> dict:
    """Line and marker look: thick for the current setting, dotted while partial."""
    dash = "solid" if state == "done" else "dot"
    return {
        "line": {"color": colour, "width": 3.5 if current else 1.5, "dash": dash},
        "marker": {"color": colour, "size": 7 if current else 4},
        "opacity": 1.0 if current else 0.55,
    }


def trace_data(curve: Curve, panel: str) -> tuple[list, list, list]:
    """(x, y, rounds) of one panel; costs of zero cannot sit on a log axis and are left out."""
    xs = curve.round if panel == "round" else getattr(curve, panel)
    kept = [i for i, x in enumerate(xs) if panel == "round" or x > 0]
    return [xs[i] for i in kept], [curve.accuracy[i] for i in kept], [curve.round[i] for i in kept]


def draw(fig: go.Figure, shown: list[tuple[str, str, str, Curve]], current: str | None) -> None:
    """Make the figure show exactly these (key, label, colour, curve) settings, in order."""
    wanted = {key for key, *_ in shown}
    if any(t.legendgroup not in wanted for t in fig.data):  # deletions go outside a batch
        fig.data = [t for t in fig.data if t.legendgroup in wanted]
    with fig.batch_update():
        index = {(t.legendgroup, t.meta): t for t in fig.data}
        for key, label, colour, curve in shown:
            for col, (panel, _) in enumerate(PANELS, start=1):
                trace = index.get((key, panel))
                if trace is None:
                    fig.add_scatter(
                        mode="lines+markers",
                        legendgroup=key,
                        meta=panel,
                        hovertemplate=_hover(panel),
                        row=1,
                        col=col,
                    )
                    trace = fig.data[-1]
                x, y, rounds = trace_data(curve, panel)
                trace.update(
                    x=x, y=y, customdata=rounds, name=label, **_style(colour, key == current, curve.state)
                )
        zero = [label for key, label, _, curve in shown if curve.mb and max(curve.mb) == 0]
        note = ("sends nothing (0 MB, not on a log axis): " + "; ".join(zero)) if zero else ""
        last = max((curve.total for *_, curve in shown), default=1)
        fig.layout.xaxis.dtick = max(1, math.ceil(last / 10))  # whole rounds only
        zero_note = next(a for a in fig.layout.annotations if a.name == "zero")
        if zero_note.text != note:
            zero_note.text = note


def bundle(fig: go.Figure) -> dict:
    """The figure as a display_data output (plotly's mimetype, rendered by JupyterLab).

    A whole figure per update rather than a FigureWidget: plotly's widget front-end drops the
    updates it is sent before a view exists, so a re-rendered output came back empty.
    """
    spec = json.loads(pio.to_json(fig, validate=False))
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"application/vnd.plotly.v1+json": spec, "text/plain": "tuner figure"},
    }
