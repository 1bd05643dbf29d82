"""Tidy results: one row per client per evaluated round, written to and read from a run directory.

A run directory holds `config.json` (the resolved flat config), `results.csv` (the table) and
`summary.json`. Costs in a row cover every round since the client's previous evaluated row, so
their column sums are the run's totals whatever `eval_every` is. This module never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.facts import CONFIG_FILE, SUMMARY_FILE, TABLE_FILE

COST_COLUMNS = ("train_flops", "bytes_up", "bytes_down")


@dataclass(frozen=True)
class Row:
    """One client at one evaluated round."""

    round: int
    client: int
    model: str
    algorithm: str
    participated: bool
    accuracy: float
    loss: float
    train_loss: float
    train_flops: int
    bytes_up: int
    bytes_down: int
    num_train: int
    num_test: int


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """Rows → DataFrame with per-client cumulative cost columns (cum_train_flops, …)."""
    frame = pd.DataFrame([asdict(r) for r in rows], columns=list(Row.__dataclass_fields__))
    frame = frame.sort_values(["round", "client"], kind="stable").reset_index(drop=True)
    for column in COST_COLUMNS:
        frame[f"cum_{column}"] = frame.groupby("client")[column].cumsum()
    return frame


def mean_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated round: mean client accuracy and the cumulative costs of all clients."""
    per_round = frame.groupby("round").agg(
        accuracy=("accuracy", "mean"), train_flops=("train_flops", "sum"),
        bytes_up=("bytes_up", "sum"), bytes_down=("bytes_down", "sum")).reset_index()
    for column in COST_COLUMNS:
        per_round[f"cum_{column}"] = per_round[column].cumsum()
    per_round["cum_bytes"] = per_round["cum_bytes_up"] + per_round["cum_bytes_down"]
    return per_round


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers: final and best (over evaluated rounds) mean accuracy, total costs."""
    per_round = mean_accuracy(frame)
    best = per_round.loc[per_round["accuracy"].idxmax()]
    return {
        "final_accuracy": float(per_round["accuracy"].iloc[-1]),
        "best_accuracy": float(best["accuracy"]),
        "best_round": int(best["round"]),
        "rounds": int(per_round["round"].max()),
        "total_train_flops": int(frame["train_flops"].sum()),
        "total_bytes_up": int(frame["bytes_up"].sum()),
        "total_bytes_down": int(frame["bytes_down"].sum()),
        "total_bytes": int(frame["bytes_up"].sum() + frame["bytes_down"].sum()),
    }


def write_run(run_dir: Path, config_flat: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """Write config, table and summary into run_dir; return the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(frame)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config_flat, indent=2, sort_keys=True))
    frame.to_csv(run_dir / TABLE_FILE, index=False)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The flat config and the results table of a finished run directory."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    return config, pd.read_csv(run_dir / TABLE_FILE)


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable summary of one run."""
    return (f"mean accuracy: final {summary['final_accuracy']:.4f}, best {summary['best_accuracy']:.4f}"
            f" (round {summary['best_round']} of {summary['rounds']})\n"
            f"training FLOPs: {summary['total_train_flops']:.4g}\n"
            f"bytes: up {summary['total_bytes_up']:,}, down {summary['total_bytes_down']:,}")


def cost_to_target(runs: dict[str, pd.DataFrame], target: float,
                   reference: str = "fedlora") -> pd.DataFrame:
    """Rounds, cumulative FLOPs and bytes each run needed to first reach a target mean accuracy.

    `runs` maps a label (usually the algorithm) to its results table. Costs are summed over all
    clients up to and including the first evaluated round whose mean accuracy ≥ target; runs
    that never reach it are marked `reached=False` with empty costs. Ratios are to `reference`.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target={target} must be a mean accuracy in (0, 1]")
    columns = ("round", "cum_train_flops", "cum_bytes_up", "cum_bytes_down", "cum_bytes")
    rows = []
    for label, frame in runs.items():
        per_round = mean_accuracy(frame)
        hit = per_round[per_round["accuracy"] >= target]
        rows.append({"run": label, "target": target, "reached": not hit.empty,
                     **{c: float(hit.iloc[0][c]) if not hit.empty else float("nan") for c in columns}})
    table = pd.DataFrame(rows)
    ref = table[(table["run"] == reference) & table["reached"]]
    if not ref.empty:
        for column, name in (("cum_train_flops", "flops"), ("cum_bytes", "bytes"), ("round", "rounds")):
            table[f"{name}_vs_{reference}"] = table[column] / ref.iloc[0][column]
    return table
