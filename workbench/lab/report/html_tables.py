"""The report's tables as HTML (pandas Styler): verdict, costs per configuration, provenance.

Cells are formatted text: accuracies as percentages with their 95% interval, costs in GFLOP and
MB (10⁶ bytes), ratios with ×, integers as integers. Tables are plain HTML, fully visible.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from workbench.algorithms import title
from workbench.core.facts import REFERENCE_METHOD
from workbench.lab.report.selection import VALIDATION
from workbench.lab.report.verdict import TIME, Verdict, interval_text, p_text, ratios

STYLES = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 13px;"},
    {
        "selector": "th, td",
        "props": "border: 1px solid #ccd; padding: 4px 8px; text-align: left; vertical-align: top;",
    },
    {"selector": "th", "props": "background: #eef; font-weight: 600;"},
    {
        "selector": "caption",
        "props": "caption-side: top; text-align: left; font-weight: 600; padding-bottom: 4px;",
    },
]


def html_table(frame: pd.DataFrame, uid: str, caption: str | None = None) -> Styler:
    """A frame as a plain bordered HTML table without index; `uid` keeps the HTML stable."""
    styler = frame.style.hide(axis="index").set_uuid(uid).set_table_styles(STYLES)
    styler = styler.format(na_rep="—")
    return styler.set_caption(caption) if caption else styler


def number(value: float) -> str:
    """A magnitude with sensible digits: 1,234 · 56.7 · 8.90 · 0.0123 (integers stay integers)."""
    if value is None or pd.isna(value):
        return "—"
    if float(value).is_integer() and abs(value) >= 1 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def ratio(value: float) -> str:
    """A ratio as '0.42×' ('—' when undefined)."""
    return "—" if value is None or pd.isna(value) else f"{value:.3g}×"


def percent(mean: float, low: float = math.nan, high: float = math.nan) -> str:
    """'93.1% [91.9%, 94.3%]' (the 95% interval, cut to [0%, 100%]) or '93.1%' without one."""
    if pd.isna(mean):
        return "—"
    return f"{mean:.1%}" + ("" if pd.isna(low) else f" [{max(low, 0.0):.1%}, {min(high, 1.0):.1%}]")


def accuracy_rows(verdict: Verdict, configs: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: both accuracies, paired differences and their t-tests (columns
    named by the reference method's title)."""
    acc = configs.set_index("configuration")
    name, rows = title(verdict.reference), []
    for c in verdict.comparisons:
        rows.append(
            {
                f"{name}'s best vs": f"{c.role}: {c.other}",
                f"{name} configuration": c.ours,
                "paired seeds": len(c.final.seeds),
                f"final, {name}": percent(
                    *acc.loc[c.ours, ["final_accuracy", "final_accuracy_low", "final_accuracy_high"]]
                ),
                "final, other": percent(
                    *acc.loc[c.other, ["final_accuracy", "final_accuracy_low", "final_accuracy_high"]]
                ),
                "final difference (points)": interval_text(c.final.difference, unit=""),
                "final: paired t-test": p_text(c.final),
                "best difference (points)": interval_text(c.best.difference, unit=""),
                "best: paired t-test": p_text(c.best),
            }
        )
    return pd.DataFrame(rows)


def cost_rows(costs: Verdict | pd.DataFrame) -> pd.DataFrame:
    """Per compared configuration (a verdict's, or any `verdict.to_target` frame): where its
    seed-mean curve reaches the target, the rounds at which single seeds reach it, and its
    costs per round."""
    rows = []
    for _, r in (costs.costs if isinstance(costs, Verdict) else costs).iterrows():
        seeds = r["seed_rounds"]
        rows.append(
            {
                "configuration": r["configuration"],
                "rounds to target": number(r["rounds"]),
                "GFLOP to target": number(r["flops"] / 1e9),
                "MB to target": number(r["bytes"] / 1e6),
                **({"simulated s to target": number(r[TIME])} if TIME in r else {}),
                "single seeds reaching it": f"{len(seeds)} of {r['seeds']}"
                + (f" (rounds {', '.join(map(str, seeds))})" if seeds else ""),
                "GFLOP per round": number(r["flops_per_round"] / 1e9),
                "MB per round": number(r["bytes_per_round"] / 1e6),
            }
        )
    return pd.DataFrame(rows)


def ratio_rows(verdict: Verdict) -> pd.DataFrame:
    """Per comparison: the reference method ÷ other for the costs to target and per round."""
    names = {
        "rounds": "rounds to target",
        "flops": "FLOPs to target",
        "bytes": "bytes to target",
        TIME: "simulated time to target",
        "flops_per_round": "FLOPs per round",
        "bytes_per_round": "bytes per round",
    }
    rows = []
    for c in verdict.comparisons:
        values = ratios(verdict.costs, c)
        rows.append(
            {
                f"{title(verdict.reference)} ÷": f"{c.role}: {c.other}",
                **{names[k]: ratio(v) for k, v in values.items()},
            }
        )
    return pd.DataFrame(rows)


def configuration_rows(costs: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """The per-configuration cost table (from `sweep_results.cost_table`) as display text."""
    out = pd.DataFrame(
        {
            "configuration": costs["configuration"],
            "seeds": costs["seeds"].astype(int),
            "final accuracy": [
                percent(*v)
                for v in costs[["final_accuracy", "final_accuracy_low", "final_accuracy_high"]].to_numpy()
            ],
            "best accuracy": [
                percent(*v)
                for v in costs[["best_accuracy", "best_accuracy_low", "best_accuracy_high"]].to_numpy()
            ],
            "total GFLOP": (costs["total_train_flops"] / 1e9).map(number),
            "total MB": (costs["total_bytes"] / 1e6).map(number),
            "GFLOP per round": (costs["flops_per_round"] / 1e9).map(number),
            "MB per round": (costs["bytes_per_round"] / 1e6).map(number),
        }
    )
    if VALIDATION in costs and costs[VALIDATION].notna().any():  # what the selection ranked by
        out.insert(2, "final validation accuracy", costs[VALIDATION].map(percent))
    for name, shown in (("flops", "FLOPs"), ("bytes", "bytes")):
        column = f"{name}_vs_{reference}"
        if column in costs:
            out[f"{shown} ÷ best {reference}"] = costs[column].map(ratio)
    return out


def side_by_side(frame: pd.DataFrame, columns: int = 3) -> pd.DataFrame:
    """A long two-column table folded into `columns` pairs of columns (read down, then across)."""
    rows = -(-len(frame) // columns)
    parts = [frame.iloc[i * rows : (i + 1) * rows].reset_index(drop=True) for i in range(columns)]
    return pd.concat(parts, axis=1).fillna("")


def parameter_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Parameter values as text: integers as integers, lists joined by commas."""

    def show(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        if isinstance(value, float) and value.is_integer():
            return f"{value:g}"
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "—" if missing else str(value)

    return frame.apply(lambda column: column.map(show))
