"""A run's summary: its headline numbers from the tidy table (final and best accuracy, costs,
refusals, the clock, the panel, ε), their human-readable lines, and the cost to reach a target
accuracy. The table's rows and columns: `workbench.core.results`. Never imports torch."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.core.diagnostics import format_warnings, run_warnings
from workbench.core.errors import UserError
from workbench.core.facts import EPSILON, REFERENCE_METHOD
from workbench.core.results import SIM_TIME, mean_accuracy


def _validation_summary(per_round: pd.DataFrame) -> dict[str, Any]:
    """Final and best mean validation accuracy (None without a validation split)."""
    if "val_accuracy" not in per_round or per_round.empty:
        return {"final_val_accuracy": None, "best_val_accuracy": None, "best_val_round": None}
    best = per_round.loc[per_round["val_accuracy"].idxmax()]
    return {
        "final_val_accuracy": float(per_round["val_accuracy"].iloc[-1]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_round": int(best["round"]),
    }


def summarize(
    frame: pd.DataFrame,
    events: pd.DataFrame | None = None,
    stopped: str | None = None,
    num_clients: int | None = None,
    dp_delta: float | None = None,
) -> dict[str, Any]:
    """Headline numbers: final and best (over evaluated rounds) mean accuracy, total costs,
    refused uploads, why the run stopped early (None: it ran every round), the warnings its
    diagnostics raise (`workbench.core.diagnostics`), and how many of the federation's clients
    (`num_clients`; without it, those the table holds) the final accuracy is over; a DP run's ε
    with the δ (`dp_delta`) it is spent at."""
    per_round = mean_accuracy(frame)
    accuracy = None
    if not per_round.empty:  # a run stopped in its first rounds has no evaluated round
        best = per_round.loc[per_round["accuracy"].idxmax()]
        accuracy = {
            "final_accuracy": float(per_round["accuracy"].iloc[-1]),
            "best_accuracy": float(best["accuracy"]),
            "best_round": int(best["round"]),
            "rounds": int(per_round["round"].max()),
        }
    return {
        **(accuracy or {"final_accuracy": None, "best_accuracy": None, "best_round": None, "rounds": 0}),
        **_validation_summary(per_round),
        "total_train_flops": int(frame["train_flops"].sum()),
        "total_bytes_up": int(frame["bytes_up"].sum()),
        "total_bytes_down": int(frame["bytes_down"].sum()),
        "total_bytes": int(frame["bytes_up"].sum() + frame["bytes_down"].sum()),
        "refused": _refusals(events) if events is not None else _settled_refusals(frame),
        "stopped": stopped,
        "warnings": run_warnings(frame),
        **_clock_summary(frame, events),
        **(
            {EPSILON: float(frame[EPSILON].iloc[-1]), "dp_delta": dp_delta}
            if EPSILON in frame and len(frame)
            else {}
        ),
        **_panel_summary(frame),
        **_final_clients(frame, num_clients),
    }


def _clock_summary(frame: pd.DataFrame, events: pd.DataFrame | None) -> dict[str, Any]:
    """With the simulated clock on: its reading at the last round and the client-rounds that
    dropped out or were late; nothing otherwise (a run without it summarizes as before)."""
    if SIM_TIME not in frame:
        return {}
    counts = events["event"].value_counts() if events is not None and len(events) else {}
    return {
        "sim_time": float(frame[SIM_TIME].max()) if len(frame) else 0.0,
        "dropped": int(counts.get("dropped", 0)),
        "late": int(counts.get("late", 0)),
    }


def _refusals(events: pd.DataFrame) -> int:
    """Refused uploads among a run's events (not the dropped or late clients)."""
    return int((events["event"] == "refused").sum()) if len(events) else 0


def _panel_summary(frame: pd.DataFrame) -> dict[str, int]:
    """With `eval_clients` below the federation's size, rounds before the last evaluate a panel:
    how many clients those rounds and the last evaluated (nothing when every round evaluated
    the same clients, as in every run of up to `eval_clients` clients)."""
    counts = frame.groupby("round").size() if len(frame) else pd.Series(dtype=int)
    if counts.nunique() < 2:
        return {}
    return {"panel_clients": int(counts.iloc[:-1].min()), "final_clients": int(counts.iloc[-1])}


def _final_clients(frame: pd.DataFrame, num_clients: int | None) -> dict[str, int]:
    """The distinct clients the last evaluated round covered (`final_round_clients`) and the
    federation's (`federation_clients`): fewer when a run evaluating a panel (`eval_clients`)
    stopped before its last round, whose final accuracy is then the panel's."""
    if not len(frame):
        return {"final_round_clients": 0, "federation_clients": num_clients or 0}
    last = frame.loc[frame["round"] == frame["round"].max(), "client"].nunique()
    total = num_clients if num_clients is not None else frame["client"].nunique()
    return {"final_round_clients": int(last), "federation_clients": int(total)}


def _settled_refusals(frame: pd.DataFrame) -> int:
    """Refusals counted in a table's rows (0 for tables written before the column existed)."""
    return int(frame["refused"].sum()) if "refused" in frame else 0


def format_summary(summary: dict[str, Any], warnings: bool = True) -> str:
    """A short human-readable summary of one run, its warnings last (unless `warnings` is False)."""
    lines = []
    if summary.get("stopped"):
        lines.append(f"stopped early: {summary['stopped']}")
    if summary["final_accuracy"] is not None:
        covered, total = summary.get("final_round_clients", 0), summary.get("federation_clients", 0)
        over = f" over a panel of {covered:,} of {total:,} clients" if covered < total else ""
        lines.append(
            f"mean accuracy: final {summary['final_accuracy']:.4f}{over}, best "
            f"{summary['best_accuracy']:.4f} (round {summary['best_round']} of "
            f"{summary['rounds']})"
        )
    if summary.get("final_val_accuracy") is not None:
        lines.append(
            f"mean validation accuracy: final {summary['final_val_accuracy']:.4f}, best "
            f"{summary['best_val_accuracy']:.4f} (round {summary['best_val_round']})"
        )
    if summary.get("panel_clients"):
        lines.append(
            f"evaluated: a seeded panel of {summary['panel_clients']:,} clients in rounds before "
            f"the last, all {summary['final_clients']:,} in the last (the final accuracy's)"
        )
    lines += [
        f"training FLOPs: {summary['total_train_flops']:.4g}",
        f"bytes: up {summary['total_bytes_up']:,}, down {summary['total_bytes_down']:,}",
    ]
    if summary.get(EPSILON) is not None:
        delta = summary.get("dp_delta")
        at = f"δ {delta:g}" if delta is not None else "dp_delta"
        lines.append(f"client-level DP: ε {summary[EPSILON]:.4g} spent at {at} (column {EPSILON})")
    if summary.get("refused"):
        lines.append(f"refused uploads: {summary['refused']} (see events.csv)")
    if summary.get("sim_time") is not None:
        lines.append(
            f"simulated time: {summary['sim_time']:.4g} s; dropped out {summary['dropped']}, "
            f"late {summary['late']} (client-rounds, see events.csv)"
        )
    if warnings:
        lines += format_warnings(summary.get("warnings") or [])
    return "\n".join(lines)


def cost_to_target(
    runs: dict[str, pd.DataFrame], target: float, reference: str = REFERENCE_METHOD
) -> pd.DataFrame:
    """Rounds, cumulative FLOPs and bytes each run needed to first reach a target mean accuracy.

    `runs` maps a label (usually the algorithm) to its results table. Costs are summed over all
    clients up to and including the first evaluated round whose mean accuracy ≥ target; runs
    that never reach it are marked `reached=False` with empty costs. Ratios are to `reference`.
    """
    if not 0 < target <= 1:
        raise UserError(f"target={target} must be a mean accuracy in (0, 1]")
    columns = ("round", "cum_train_flops", "cum_bytes_up", "cum_bytes_down", "cum_bytes")
    rows = []
    for label, frame in runs.items():
        per_round = mean_accuracy(frame)
        hit = per_round[per_round["accuracy"] >= target]
        timed = (SIM_TIME,) if SIM_TIME in per_round else ()  # time to target on the clock
        rows.append(
            {
                "run": label,
                "target": target,
                "reached": not hit.empty,
                **{c: float(hit.iloc[0][c]) if not hit.empty else float("nan") for c in (*columns, *timed)},
            }
        )
    table = pd.DataFrame(rows)
    ref = table[(table["run"] == reference) & table["reached"]]
    if not ref.empty:
        for column, name in (("cum_train_flops", "flops"), ("cum_bytes", "bytes"), ("round", "rounds")):
            table[f"{name}_vs_{reference}"] = table[column] / ref.iloc[0][column]
    return table
