"""The FedLoRA protocol table: every configuration of a sweep per partition, over its seeds.

A *configuration* is one setting of the swept parameters except `seed` and the split (`partition`
by default; the issue-21 study splits by data regime, `num_clients`). For each split value it
reports the final mean accuracy per seed, their mean with a 95% Student-t interval,
the best accuracy, the run's total training FLOPs and bytes, and the cost to a target accuracy.
Gaps to a reference (Standalone, the best baseline) are *paired by seed*: the same seed gives
every method the same data, partition and client sampling, so the per-seed difference removes
the split's own noise; a gap is "beyond seed noise" when its 95% interval excludes 0. Best
configurations are selected on mean final validation accuracy where every run held a
validation split, else on test accuracy (`ranked_by`).
Reads only tidy tables (pandas, scipy); never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from workbench.core.facts import REFERENCE_METHOD
from workbench.core.summary import cost_to_target
from workbench.lab.report.selection import VALIDATION
from workbench.lab.report.sweep_tables import label, point_summary

SPLIT = "partition"  # the column a table is split by unless a caller names another
KEY = "configuration"
GAP_COLUMNS = ["partition", KEY, "reference", "pairs", "gap_mean", "gap_ci95", "beyond_noise", "val_mean"]


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval (NaN half-width for one value)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    sem = stats.sem(values)
    return mean, float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * sem)


def configurations(table: pd.DataFrame, swept: Sequence[str], split: str = SPLIT) -> pd.DataFrame:
    """One row per finished point: split value, seed, configuration label and its summary.

    A label names the algorithm and the swept values that tell its configurations apart: a
    value every point of the algorithm sets alike (e.g. model_epochs=2 on all FedLoRA points)
    is left out."""
    summary = point_summary(table, swept)
    keys = [k for k in swept if k not in ("algorithm", "seed", split)]
    labels = pd.Series("", index=summary.index)
    for _, group in summary.groupby("algorithm", sort=False):
        varying = [k for k in keys if not (group[k].notna().all() and group[k].nunique() == 1)]
        labels[group.index] = [
            label({"algorithm": r["algorithm"], **{k: _plain(r[k]) for k in varying}})
            for _, r in group.iterrows()
        ]
    summary[KEY] = labels
    return summary


def _plain(value: object) -> object:
    """A switch as 'true'/'false' (a bool would print as 1/0 in a label)."""
    return str(value).lower() if isinstance(value, (bool, np.bool_)) else value


def _to_target(table: pd.DataFrame, points: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per point: round, FLOPs and bytes (all clients) to first reach `target` (NaN: never)."""
    runs = {p: table[table["point"] == p] for p in points["point"]}
    reached = cost_to_target(runs, target, reference="") if runs else pd.DataFrame()
    return reached.rename(columns={"run": "point"})[["point", "round", "cum_train_flops", "cum_bytes"]]


def protocol_table(
    table: pd.DataFrame, swept: Sequence[str], targets: Mapping[Any, float], split: str = SPLIT
) -> pd.DataFrame:
    """Per split value and configuration: seeds, accuracy mean ± 95% CI, costs, cost to target."""
    points = configurations(table, swept, split)
    rows = []
    for (partition, config), group in points.groupby([split, KEY], sort=True):
        group = group.sort_values("seed")
        mean, half = interval(group["final_accuracy"])
        target = targets[partition]
        hit = _to_target(table, group, target).dropna()
        rows.append(
            {
                split: partition,
                KEY: config,
                "algorithm": group["algorithm"].iloc[0],
                "seeds": len(group),
                "final_mean": mean,
                "final_ci95": half,
                "final_per_seed": " / ".join(f"{v:.3f}" for v in group["final_accuracy"]),
                "best_mean": group["best_accuracy"].mean(),
                # what selections rank by (NaN when a seed's run held no validation split)
                "val_mean": group[VALIDATION].astype(float).mean(skipna=False),
                "train_flops": group["total_train_flops"].mean(),
                "bytes": group["total_bytes"].mean(),
                "target": target,
                "reached": f"{len(hit)}/{len(group)}",
                "flops_to_target": hit["cum_train_flops"].mean() if len(hit) else math.nan,
                "bytes_to_target": hit["cum_bytes"].mean() if len(hit) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def ranked_by(frame: pd.DataFrame, validation: str, test: str) -> str:
    """The column to rank configurations by: `validation` when every row has it, else `test`."""
    return validation if validation in frame and len(frame) and frame[validation].notna().all() else test


def paired_gaps(
    table: pd.DataFrame, swept: Sequence[str], reference: str, split: str = SPLIT
) -> pd.DataFrame:
    """Per split value and configuration: final-accuracy gap to `reference` paired by seed, and
    the configuration's mean final validation accuracy over those seeds (`val_mean`, what the
    note selects a method's best configuration by; NaN without a validation split)."""
    points = configurations(table, swept, split)
    rows = []
    for partition, part in points.groupby(split, sort=True):
        ref = part[part[KEY] == reference].set_index("seed")["final_accuracy"]
        for config, group in part.groupby(KEY, sort=True):
            diffs = (group.set_index("seed")["final_accuracy"] - ref).dropna()
            if config == reference or diffs.empty:
                continue
            mean, half = interval(diffs)
            paired = group.set_index("seed").loc[diffs.index, VALIDATION].astype(float)
            rows.append(
                {
                    split: partition,
                    KEY: config,
                    "reference": reference,
                    "pairs": len(diffs),
                    "gap_mean": mean,
                    "gap_ci95": half,
                    "beyond_noise": bool(abs(mean) > half) if not math.isnan(half) else False,
                    "val_mean": paired.mean(skipna=False),
                }
            )
    return pd.DataFrame(rows, columns=[split, *GAP_COLUMNS[1:]])


def best_baseline(
    protocol: pd.DataFrame,
    partition: object,
    exclude: Sequence[str] = (REFERENCE_METHOD,),
    split: str = SPLIT,
) -> str | None:
    """The configuration of another method (none of `exclude`) with the highest mean final
    validation accuracy in a split value (test accuracy when a run held no validation split;
    None before any has finished)."""
    rows = protocol[(protocol[split] == partition) & ~protocol["algorithm"].isin(list(exclude))]
    order = ranked_by(rows, "val_mean", "final_mean")
    return rows.sort_values(order, ascending=False)[KEY].iloc[0] if len(rows) else None


def markdown(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A pipe table (no extra dependency); `formats` maps a column to a format spec."""
    formats = formats or {}

    def cell(column: str, value: object) -> str:
        if isinstance(value, float) and math.isnan(value):
            return "–"
        return format(value, formats[column]) if column in formats else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in row.items()) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)
