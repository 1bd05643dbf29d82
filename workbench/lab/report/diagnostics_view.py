"""Diagnostics of runs and sweeps, per round and per configuration, with their warnings.

How much FedLoRA's adapter contributes to the output, how many optimizer steps the clients took
per round and phase, and how far their uploads moved (`workbench.core.diagnostics` defines the
generic columns, thresholds and warnings, `workbench.algorithms.fedlora.advice` the adapter's).
Reads the tidy tables of `workbench.lab.report.sweep_tables` (pandas + plotly; never torch); a
configuration's value is the mean over its seeds.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.algorithms.fedlora.advice import (
    ADAPTER_CONTRIBUTION,
    ADAPTER_WEIGHT_NORM,
    MAX_CONTRIBUTION,
    MIN_CONTRIBUTION,
)
from workbench.core.diagnostics import (
    COLLAPSE,
    LOSS_GIVEBACK,
    LOSS_RISE,
    MIN_STEPS,
    UPDATE_NORM,
    per_round,
    run_warnings,
    steps_per_round,
)
from workbench.lab.report.figures import TEMPLATE, axis_type, colours
from workbench.lab.report.sweep_tables import config_keys, label, with_points

PANELS = (
    "adapter contribution<br>(share of the output it adds to)",
    f"optimizer steps per round<br>(median client; dashed: {MIN_STEPS})",
    "update norm<br>(L2, mean over uploading clients)",
)
DASHES = ("solid", "dot", "dash", "longdash")  # one per training phase, in table order


def tag(warning: str) -> str:
    """A warning's short name: its text before the first colon ('adapter inert')."""
    return warning.split(":", 1)[0]


def point_diagnostics(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per point: its configuration, the adapter's peak and final contribution (mean over
    clients), its final weight norm, steps per round by phase, the final update norm, warnings."""
    table = with_points(table)
    keys, rows = config_keys(table, by), []
    for point, frame in table.groupby("point", sort=True):
        contribution, weight = per_round(frame, ADAPTER_CONTRIBUTION), per_round(frame, ADAPTER_WEIGHT_NORM)
        norm = per_round(frame, UPDATE_NORM)
        rows.append(
            {
                "point": point,
                "configuration": label({k: frame[k].iloc[0] for k in keys}),
                "algorithm": frame["algorithm"].iloc[0],
                "contribution_peak": contribution.max() if len(contribution) else float("nan"),
                "contribution_final": contribution.iloc[-1] if len(contribution) else float("nan"),
                "weight_norm_final": weight.iloc[-1] if len(weight) else float("nan"),
                **{f"steps_per_round_{p}": s for p, s in steps_per_round(frame).items()},
                "update_norm_final": norm.iloc[-1] if len(norm) else float("nan"),
                "warnings": [tag(w) for w in run_warnings(frame)],
            }
        )
    return pd.DataFrame(rows)


def _warned(points: pd.DataFrame) -> str:
    """'adapter inert (3 of 3 seeds)' for each warning some seed raised ('adapter inert' for a
    single run), '' for none."""
    seen = [w for found in points["warnings"] for w in found]
    counts = {w: f" ({seen.count(w)} of {len(points)} seeds)" if len(points) > 1 else "" for w in seen}
    return "; ".join(w + count for w, count in counts.items())


def configuration_diagnostics(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per configuration: seeds, the mean over seeds of every point diagnostic, and which
    warnings its seeds raised (in the order configurations first appear)."""
    points = point_diagnostics(table, by)
    if points.empty:
        return points
    values = [c for c in points.columns if c not in ("point", "configuration", "algorithm", "warnings")]
    rows = []
    for name, group in points.groupby("configuration", sort=False):
        rows.append(
            {
                "configuration": name,
                "algorithm": group["algorithm"].iloc[0],
                "seeds": len(group),
                **group[values].mean().to_dict(),
                "warnings": _warned(group),
            }
        )
    return pd.DataFrame(rows)


def diagnostics_rows(configs: pd.DataFrame) -> pd.DataFrame:
    """The per-configuration diagnostics as report text: percentages, steps, norms, warnings."""
    phases = [c.removeprefix("steps_per_round_") for c in configs if c.startswith("steps_per_round_")]
    rows = []
    for _, c in configs.iterrows():
        steps = [
            f"{p} {c[f'steps_per_round_{p}']:.3g}" for p in phases if pd.notna(c[f"steps_per_round_{p}"])
        ]
        rows.append(
            {
                "configuration": c["configuration"],
                "seeds": int(c["seeds"]),
                "adapter contribution, final (peak)": _share(c["contribution_final"], c["contribution_peak"]),
                "adapter ‖scale·B·A‖, final": _number(c["weight_norm_final"]),
                "steps per round (median client)": " · ".join(steps) or "—",
                "update norm, final": _number(c["update_norm_final"]),
                "warnings": c["warnings"] or "none",
            }
        )
    return pd.DataFrame(rows)


def _share(final: float, peak: float) -> str:
    """'0.16% (0.20%)' or '—'."""
    return "—" if pd.isna(final) else f"{final:.2%} ({peak:.2%})"


def _number(value: float) -> str:
    """Three significant digits, '—' when missing."""
    return "—" if pd.isna(value) else f"{value:.3g}"


def round_diagnostics(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per configuration and evaluated round: contribution, steps per round by phase and update
    norm (each over clients as in `point_diagnostics`, then the mean over seeds)."""
    table = with_points(table)
    keys = config_keys(table, by)
    frames: list[dict[str, Any]] = []
    for point, frame in table.groupby("point", sort=True):
        name = label({k: frame[k].iloc[0] for k in keys})
        for round_, rows in frame.groupby("round", sort=True):
            values = {
                "contribution": per_round(rows, ADAPTER_CONTRIBUTION),
                "update_norm": per_round(rows, UPDATE_NORM),
            }
            frames.append(
                {
                    "configuration": name,
                    "point": point,
                    "round": round_,
                    **{k: v.iloc[0] if len(v) else float("nan") for k, v in values.items()},
                    **{f"steps_{p}": s for p, s in steps_per_round(rows).items()},
                }
            )
    if not frames:
        return pd.DataFrame(columns=["configuration", "round"])
    per_point = pd.DataFrame(frames)
    measured = [c for c in per_point.columns if c not in ("configuration", "point", "round")]
    return per_point.groupby(["configuration", "round"], sort=False)[measured].mean().reset_index()


def diagnostics_figure(
    table: pd.DataFrame,
    by: Sequence[str] | None = None,
    configurations: Sequence[str] | None = None,
    palette: dict[str, str] | None = None,
) -> go.Figure:
    """Three panels per round: the adapter's contribution (dashed: the inert threshold), optimizer
    steps per round by phase (dashed: the undertrained threshold) and the update norm; the title
    names every warning a configuration's runs raised."""
    rounds = round_diagnostics(table, by)
    names = list(configurations or dict.fromkeys(rounds["configuration"]))
    palette = palette or colours(names)
    fig = make_subplots(rows=1, cols=3, subplot_titles=PANELS, horizontal_spacing=0.08)
    phases = [c for c in rounds.columns if c.startswith("steps_")]
    for name in names:
        mine = rounds[rounds["configuration"] == name]
        _line(fig, mine, "contribution", name, (name, palette[name]), 1, "solid")
        for phase, dash in zip(phases, DASHES * len(phases)):
            _line(
                fig, mine, phase, f"{name} · {phase.removeprefix('steps_')}", (name, palette[name]), 2, dash
            )
        _line(fig, mine, "update_norm", name, (name, palette[name]), 3, "solid")
    _thresholds(fig, rounds)
    warned, flagged = configuration_diagnostics(table, by), []
    if not warned.empty:  # the drawn configurations' warnings only
        drawn = warned[warned["configuration"].isin(names) & (warned["warnings"] != "")]
        flagged = [f"{c}: {w}" for c, w in zip(drawn["configuration"], drawn["warnings"])]
    title = "Diagnostics per round" + (" — ⚠ " + " | ".join(flagged) if flagged else " — no warnings")
    fig.update_layout(template=TEMPLATE, title={"text": title, "font": {"size": 14}}, height=420)
    return fig.update_xaxes(title_text="round", tickformat="d")


def _line(
    fig: go.Figure, rows: pd.DataFrame, column: str, name: str, group: tuple[str, str], col: int, dash: str
) -> None:
    """One configuration's values of a column per round in a panel (nothing where it has none);
    `group` is (configuration, colour): one legend group and colour per configuration."""
    if column not in rows or rows[column].isna().all():
        return
    shown = rows[rows[column].notna()]
    percent = column == "contribution"
    fig.add_trace(
        go.Scatter(
            x=shown["round"],
            y=shown[column],
            mode="lines+markers",
            name=name,
            legendgroup=group[0],
            showlegend=col < 3,  # the contribution's entry, and one per phase
            line={"color": group[1], "dash": dash},
            marker={"size": 5},
            hovertemplate=f"{name}<br>round %{{x}}<br>" + ("%{y:.3%}" if percent else "%{y:.4g}"),
        ),
        row=1,
        col=col,
    )


def _thresholds(fig: go.Figure, rounds: pd.DataFrame) -> None:
    """The warning thresholds as dashed lines; log axes where values span decades."""
    contribution = rounds["contribution"].dropna() if "contribution" in rounds else pd.Series(dtype=float)
    if len(contribution):
        fig.add_hline(y=MIN_CONTRIBUTION, line_dash="dash", line_color="#c2410c", row=1, col=1)
        kind = axis_type([*contribution, MIN_CONTRIBUTION])
        fig.update_yaxes(type=kind, tickformat=".1%" if kind == "linear" else ".2%", row=1, col=1)
    else:
        fig.add_annotation(
            text="no adapter in these runs", xref="x domain", yref="y domain", x=0.5, y=0.5, showarrow=False
        )
    if any(c.startswith("steps_") for c in rounds.columns):
        fig.add_hline(y=MIN_STEPS, line_dash="dash", line_color="#c2410c", row=1, col=2)
        fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=3)


WARNING_BOX = "border-left:4px solid #ea580c;background:#fff7ed;color:#7c2d12;padding:6px 10px;margin:6px 0"


def table_caption() -> str:
    """The diagnostics table's caption, with the warning thresholds it applies."""
    return (
        "Diagnostics per configuration (mean over seeds): the adapter's share of the output it adds "
        f"to (warning when it stays below {MIN_CONTRIBUTION:.0%} in every round: its knobs cannot "
        f"matter, or above {MAX_CONTRIBUTION:.0%} in the last evaluated round: it dominates), "
        f"optimizer steps per round of the median client (warning below {MIN_STEPS}: "
        "undertrained), and the L2 norm of the last uploads; a run is unstable when a loss, update "
        f"or contribution is not finite, its last train loss exceeds {LOSS_RISE:g}× its lowest "
        f"having given back over {LOSS_GIVEBACK:.0%} of its fall, or "
        f"its accuracy ends {COLLAPSE * 100:.0f} points below its best"
    )


def warnings_html(configs: pd.DataFrame) -> str:
    """A box naming every configuration whose runs raised a warning (or saying none did)."""
    warned = [] if configs.empty else [r for r in configs.itertuples() if r.warnings]
    if not warned:
        return (
            "<p><i>Diagnostics</i>: no configuration raised a warning (adapter contribution within "
            "its bounds, enough optimizer steps per round, no sign of instability).</p>"
        )
    items = "".join(
        f"<li><b>{html.escape(r.configuration)}</b>: {html.escape(r.warnings)}</li>" for r in warned
    )
    return (
        f"<div class='workbench-warnings' style='{WARNING_BOX}'><b>⚠ Diagnostics warn about "
        f"{len(warned)} of {len(configs)} configurations</b> (see Diagnostics below)<ul>{items}</ul></div>"
    )
