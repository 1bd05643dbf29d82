"""Knob heatmaps: a method's accuracy over the two knobs it declares (`Algorithm.heatmap`, e.g.
FedLoRA's rank × μ), drawn for every method of the sweep that declares them and has both swept,
with the report's heading for each and a note on those it cannot draw. Never imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.algorithms import REGISTRY, KnobGrid, title
from workbench.lab.report.figures import TEMPLATE, Stat, note, percent_ticks
from workbench.lab.report.stats import interval_columns, seed_phrase
from workbench.lab.report.sweep_tables import algorithm_order, tick


def knob_grids(summary: pd.DataFrame) -> dict[str, KnobGrid]:
    """The sweep's methods whose declared `heatmap` has both knobs swept (FedLoRA first)."""
    names = algorithm_order(summary["algorithm"]) if "algorithm" in summary else []
    grids = {n: g for n in names if n in REGISTRY and (g := REGISTRY[n].heatmap) is not None}
    return {n: g for n, g in grids.items() if not _grid_cells(summary, n, g).empty}


def _grid_cells(summary: pd.DataFrame, name: str, grid: KnobGrid) -> pd.DataFrame:
    """A method's points that set both knobs of its grid (none when a knob was not swept)."""
    knobs = [grid.rows.name, grid.columns.name]
    if not {"algorithm", *knobs} <= set(summary.columns):
        return summary.iloc[:0]
    return summary[summary["algorithm"] == name].dropna(subset=knobs)


def knob_heading(name: str, grid: KnobGrid) -> str:
    """The report section of a method's heatmaps: heading and what its knobs do (markdown)."""
    about = f"{grid.about} " if grid.about else ""
    return (
        f"## {title(name)}: {grid.heading}\n\n{about}Cells show the mean over seeds ± the "
        "half-width of its 95% interval."
    )


def grid_note(summary: pd.DataFrame) -> str:
    """Why a method of the sweep has no heatmap: its grid is not swept, or it is not registered
    in this process (so what it declares is unknown here); '' when nothing is missing."""
    names = algorithm_order(summary["algorithm"]) if "algorithm" in summary else []
    drawn = knob_grids(summary)
    notes = [
        f"No {title(n)} heatmap: it needs {n} points with swept {g.rows.name} and {g.columns.name}."
        for n in names
        if n in REGISTRY and (g := REGISTRY[n].heatmap) and n not in drawn
    ]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        notes.append(
            f"Not registered in this report's kernel: {', '.join(unknown)}; a parameter grid such a "
            "method declares is unknown here (register it in the report notebook to draw one)."
        )
    return " ".join(notes)


def _declared_grid(name: str) -> KnobGrid:
    """The knob grid a registered method declares (ValueError naming those that declare one)."""
    grid = REGISTRY[name].heatmap if name in REGISTRY else None
    if grid is None:
        having = [n for n, m in REGISTRY.items() if m.heatmap]
        raise ValueError(
            f"method {name!r} declares no knob grid (Algorithm.heatmap); those that do: {having}"
        )
    return grid


def _grid_table(mine: pd.DataFrame, grid: KnobGrid, value: str) -> dict[str, pd.DataFrame]:
    """Rows × columns tables of the mean `value`, its text (mean ± half-width) and seed counts."""
    cells = interval_columns(mine, [grid.rows.name, grid.columns.name], value)
    bounds = zip(cells[value], cells[f"{value}_low"], cells[f"{value}_high"])
    cells["text"] = [
        f"{m:.1%}" + ("" if pd.isna(lo) else f"<br>± {(hi - lo) / 2:.1%}") for m, lo, hi in bounds
    ]
    return {
        k: cells.pivot(index=grid.rows.name, columns=grid.columns.name, values=k)
        for k in (value, "text", "seeds")
    }


def knob_heatmap(summary: pd.DataFrame, name: str, stat: Stat = "final") -> go.Figure:
    """A method's accuracy over its two declared knobs (`Algorithm.heatmap`): mean over seeds
    (and any other swept value), ± 95% CI."""
    grid = _declared_grid(name)
    rows, columns = grid.rows, grid.columns
    heading = f"{title(name)} {stat} mean accuracy over {rows.symbol} × {columns.symbol}"
    mine, value = _grid_cells(summary, name, grid), f"{stat}_accuracy"
    if mine.empty:
        why = f"needs {name} points with swept {rows.name} and {columns.name}"
        fig = note(go.Figure(), f"No {rows.symbol} × {columns.symbol} grid in this sweep ({why})")
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        return fig.update_layout(template=TEMPLATE, title=heading)
    table = _grid_table(mine, grid, value)
    # colours span every configuration of the sweep, so the method's small differences look small
    span = [pd.Series(table[value].to_numpy().ravel())]  # missing cells are NaN: skipped
    if "configuration" in summary:
        span.append(summary.groupby("configuration")[value].mean())
    low, high = float(pd.concat(span).min()), float(pd.concat(span).max())
    ticks, labels = percent_ticks(low, high)
    fig = go.Figure(
        go.Heatmap(
            z=table[value].to_numpy(),
            x=[tick(m) for m in table[value].columns],
            y=[tick(r) for r in table[value].index],
            text=table["text"].to_numpy(),
            customdata=table["seeds"].to_numpy(),
            colorscale="Viridis",
            texttemplate="%{text}",
            zmin=low,
            zmax=high,
            colorbar={"title": {"text": "accuracy"}, "tickvals": ticks, "ticktext": labels},
            hovertemplate=f"{rows.symbol} %{{y}}, {columns.symbol} %{{x}}<br>accuracy %{{z:.2%}}<br>"
            "%{customdata} seed(s)",
        )
    )
    seeds = int(np.nanmax(table["seeds"].to_numpy(dtype=float)))
    heading = f"{heading} ({seed_phrase(seeds)}; colour scale: all configurations of the sweep)"
    fig.update_layout(template=TEMPLATE, title=heading, xaxis_title=columns.axis, yaxis_title=rows.axis)
    return fig.update_xaxes(type="category").update_yaxes(type="category")
