"""The FedLoRA study's comparisons (issue 21): each variant against its no-sharing twin and
against Standalone given the same local optimizer steps, per data regime, paired by seed; and
the spread of accuracy over μ or rank beside the seed noise.

Points come with their resolved parameters (`resolved`: point id → flat values), so a twin or a
matched Standalone is found by what actually ran, not by labels. Two accuracies per point: the
*final* mean client accuracy (last evaluated round) and its *round mean* (averaged over every
evaluated round, the whole curve). A gap is "beyond seed noise" when its 95% Student-t interval
over the paired seeds excludes 0. Reads only tidy tables; never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workbench.core.facts import CONTROL_METHOD, REFERENCE_METHOD
from workbench.core.results import mean_accuracy
from workbench.lab.report.protocol_table import KEY, configurations, interval
from workbench.lab.report.sweep_tables import SUMMARY_VALUES

# without sharing nothing is averaged, so the weighting of uploads cannot change a twin
TWIN_IGNORES = ("share_adapter", "adapter_weights")
NOT_CONFIG = ("seed", "run_seed", "checkpoint_every", "device")  # what never tells configurations apart
ACCURACIES = ("final_accuracy", "round_mean")
COMPARISON_COLUMNS = ["configuration", "reference", "pairs"] + [
    f"{a}_{s}" for a in ("final", "round_mean") for s in ("gap", "ci95", "beyond")
]


def study_points(
    table: pd.DataFrame, swept: Sequence[str], resolved: pd.DataFrame, split: str
) -> pd.DataFrame:
    """One row per finished point: its label, split value, seed, both accuracies and every
    resolved parameter (`resolved` has a `point` column)."""
    points = configurations(table, swept, split)
    means = {p: float(mean_accuracy(rows)["accuracy"].mean()) for p, rows in table.groupby("point")}
    points["round_mean"] = points["point"].map(means)
    merged = points.merge(resolved, on="point", how="left", suffixes=("", "_resolved"))
    for column in [c for c in resolved.columns if c != "point" and c in points.columns]:
        # a swept name a point did not set holds NaN in the table: what it ran with fills it
        merged[column] = merged[column].where(merged[column].notna(), merged.pop(f"{column}_resolved"))
    return merged


def relabel(points: pd.DataFrame, base: Mapping[str, object]) -> pd.DataFrame:
    """FedLoRA's configurations named by what they change from `base` (its defaults), e.g.
    'fedlora · adapter_init=lora' ('fedlora' alone at the defaults); other methods keep theirs."""
    points = points.copy()
    for index, row in points[points["algorithm"] == REFERENCE_METHOD].iterrows():
        changed = [f"{k}={plain(row[k])}" for k, v in base.items() if k in row and plain(row[k]) != plain(v)]
        points.loc[index, KEY] = " · ".join([REFERENCE_METHOD, *changed])
    return points


def local_epochs(row: Mapping[str, Any]) -> int:
    """Epochs of local optimizer steps per round: FedLoRA's model plus adapter phases (the
    adapter's by its schedule), any other method's model epochs."""
    model = int(row["model_epochs"])
    if row["algorithm"] != REFERENCE_METHOD:  # the studied method is the one with an adapter phase
        return model
    adapter = int(row["adapter_epochs"])
    return model + (model + adapter if row["adapter_schedule"] == "model_plus" else adapter)


def plain(value: object) -> str:
    """A parameter value as comparable text: 4, 4.0 and '4' alike; switches as true/false."""
    if isinstance(value, str):
        return value.lower() if value.lower() in ("true", "false") else value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.number)):
        return f"{float(value):g}"
    return str(value)


def _setting(row: pd.Series, ignore: Sequence[str]) -> tuple:
    """A point's resolved parameters except the seed and `ignore`, as a hashable key."""
    skip = {*NOT_CONFIG, *ignore, *SUMMARY_VALUES, "point", KEY, "round_mean"}
    return tuple((k, plain(row[k])) for k in sorted(row.index) if k not in skip)


def compare(a: pd.DataFrame, b: pd.DataFrame, accuracies: Sequence[str] = ACCURACIES) -> dict[str, object]:
    """Gaps a − b of the accuracies over the seeds both ran: mean, 95% half-width, beyond noise."""
    first, second = a.set_index("seed"), b.set_index("seed")
    seeds = sorted(set(first.index) & set(second.index))
    out: dict[str, object] = {"pairs": len(seeds)}
    names = {"final_accuracy": "final", "round_mean": "round_mean"}
    for column, name in ((c, names[c]) for c in accuracies):
        diffs = [float(first.loc[s, column] - second.loc[s, column]) for s in seeds]
        mean, half = interval(diffs) if diffs else (math.nan, math.nan)
        out |= {f"{name}_gap": mean, f"{name}_ci95": half, f"{name}_beyond": bool(abs(mean) > half)}
    return out


def twins(
    points: pd.DataFrame, split_value: object, split: str
) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Every sharing FedLoRA configuration of a split with its points and those of its
    `share_adapter=false` twin (configurations without a finished twin are left out)."""
    part = points[(points[split] == split_value) & (points["algorithm"] == REFERENCE_METHOD)]
    keys = part.apply(lambda r: _setting(r, TWIN_IGNORES), axis=1)
    shared = part["share_adapter"].map(plain) == "true"
    for config, group in part[shared].groupby(KEY, sort=True):
        twin = part[~shared & (keys == keys[group.index[0]])]
        if not twin.empty:
            yield config, group, twin


def twin_gaps(points: pd.DataFrame, split_value: object, split: str) -> pd.DataFrame:
    """Every sharing FedLoRA configuration of a split against its `share_adapter=false` twin."""
    rows = [
        {"configuration": config, "reference": twin[KEY].iloc[0], **compare(group, twin)}
        for config, group, twin in twins(points, split_value, split)
    ]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def model_finals(table: pd.DataFrame) -> pd.DataFrame:
    """Per point and zoo model: the final mean accuracy of the clients holding that model (the
    point's last evaluated round), with the model's clients counted; a `point` × `model` frame."""
    last = table[table["round"] == table.groupby("point")["round"].transform("max")]
    return (
        last.groupby(["point", "model"], sort=True)
        .agg(final_accuracy=("accuracy", "mean"), clients=("client", "nunique"))
        .reset_index()
    )


MODEL_COLUMNS = ["configuration", "model", "clients", "pairs", "final_gap", "final_ci95", "final_beyond"]


def twin_gaps_by_model(
    points: pd.DataFrame, finals: pd.DataFrame, split_value: object, split: str
) -> pd.DataFrame:
    """`twin_gaps`' final-accuracy gap per zoo model (`finals`: `model_finals`): which family of
    a heterogeneous federation the shared adapter helps; empty when every client has one model."""
    if finals["model"].nunique() < 2:
        return pd.DataFrame(columns=MODEL_COLUMNS)
    by_point = finals.merge(points[["point", "seed"]], on="point")
    rows = []
    for config, group, twin in twins(points, split_value, split):
        for model, runs in by_point.groupby("model", sort=True):
            mine, theirs = runs[runs["point"].isin(group["point"])], runs[runs["point"].isin(twin["point"])]
            if mine.empty or theirs.empty:
                continue
            gaps = compare(mine, theirs, accuracies=("final_accuracy",))
            clients = int(mine["clients"].iloc[0])
            rows.append({"configuration": config, "model": model, "clients": clients, **gaps})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def standalone_gaps(points: pd.DataFrame, split_value: object, split: str, matched: bool) -> pd.DataFrame:
    """Every FedLoRA configuration of a split against Standalone with as many local epochs of
    optimizer steps per round (`matched`), or with FedLoRA's own model epochs."""
    part = points[points[split] == split_value]
    alone = part[part["algorithm"] == CONTROL_METHOD]
    rows = []
    for config, group in part[part["algorithm"] == REFERENCE_METHOD].groupby(KEY, sort=True):
        first = group.iloc[0]
        epochs = local_epochs(first) if matched else int(first["model_epochs"])
        reference = alone[alone["model_epochs"].astype(int) == epochs]
        if not reference.empty:
            rows.append(
                {"configuration": config, "reference": reference[KEY].iloc[0], **compare(group, reference)}
            )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def spread(
    points: pd.DataFrame, split_value: object, split: str, base: Mapping[str, object], knob: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Sharing FedLoRA configurations equal to `base` (FedLoRA's parameters) except in `knob`:
    each value's mean of both accuracies over seeds and its seed standard deviation, and the
    spread (max − min of the means) beside the seed noise (the mean of those deviations)."""
    part = points[(points[split] == split_value) & (points["algorithm"] == REFERENCE_METHOD)]
    others = {k: plain(v) for k, v in base.items() if k != knob and k in part.columns}
    same = part[[all(plain(r[k]) == v for k, v in others.items()) for _, r in part.iterrows()]]
    rows = [
        {
            knob: value,
            "seeds": len(group),
            **{f"{a}_mean": group[a].mean() for a in ACCURACIES},
            **{f"{a}_sd": group[a].std(ddof=1) for a in ACCURACIES},
        }
        for value, group in same.groupby(knob, sort=True)
    ]
    frame = pd.DataFrame(
        rows, columns=[knob, "seeds", *[f"{a}_{s}" for s in ("mean", "sd") for a in ACCURACIES]]
    )
    summary = {
        f"{a}_{stat}": value
        for a in ACCURACIES
        for stat, value in (
            ("spread", frame[f"{a}_mean"].max() - frame[f"{a}_mean"].min() if len(frame) else math.nan),
            ("seed_sd", frame[f"{a}_sd"].mean() if len(frame) else math.nan),
        )
    }
    return frame, summary
