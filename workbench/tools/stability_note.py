"""Write the FedLoRA stability study's tables (markdown) from its sweep folder (issue 27).

    python -m workbench.tools.stability_note SWEEP_DIR --spec notebooks/sweeps/fedlora-stability.yaml \\
        --out docs/fedlora-stability-tables.md

A *candidate* is one way of scaling and training the adapter (the spec's `use_rslora`,
`lora_alpha`, `lora_plus_ratio`); per candidate, rank and μ: how many seeds diverged (a stopped
run, or one the *unstable* warning names), how many the adapter dominated (its contribution above
`MAX_CONTRIBUTION` in the last evaluated round), the final accuracy's mean ± 95% CI over the
seeds that finished, and the adapter's final and peak contribution. Then the evidence behind
the warnings' thresholds
(accuracy against the final contribution, the healthy runs' loss rise and accuracy drop), the
spreads of rank and μ under each candidate paired by seed, and batch sizes side by side.
Failed points count: their rounds before the stop are read from their run folders.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from workbench.algorithms.fedlora import advice
from workbench.core import diagnostics
from workbench.core.facts import STATUS_FILE, TABLE_FILE
from workbench.lab.report.protocol_table import markdown
from workbench.lab.report.stats import paired_test, t_interval
from workbench.lab.sweep.spec import expand, load_spec

CANDIDATE = ("use_rslora", "lora_alpha", "lora_plus_ratio")
BINS = (0.0, 0.25, 0.5, 1.0, math.inf)  # final contribution bins of the threshold evidence


def candidate_name(row: pd.Series) -> str:
    """'α/√r, α 2, LoRA+ 4' or 'α/r, α 8, LoRA+ 16'."""
    scale = "α/√r" if row["use_rslora"] else "α/r"
    return f"{scale}, α {row['lora_alpha']:g}, LoRA+ {row['lora_plus_ratio']:g}"


def point_rows(sweep_dir: Path, spec: Path) -> pd.DataFrame:
    """One row per point of the spec that ran: its knobs, state, accuracies, peak contribution,
    warnings (their short names), the train-loss rise and accuracy drop, seconds per round."""
    rows = []
    for point in expand(load_spec(spec)):
        folder = sweep_dir / "points" / point.id
        status = folder / STATUS_FILE
        if not status.is_file() or not (folder / "run" / TABLE_FILE).is_file():
            continue
        state = json.loads(status.read_text())
        table = pd.read_csv(folder / "run" / TABLE_FILE)
        accuracy = diagnostics.per_round(table, "accuracy")
        loss = diagnostics.per_round(table[table["participated"]], "train_loss")
        contribution = diagnostics.per_round(table, advice.ADAPTER_CONTRIBUTION)
        finite = contribution[contribution.abs() < math.inf]
        last = float(contribution.iloc[-1]) if len(contribution) else math.nan
        warnings = [w.split(":", 1)[0] for w in diagnostics.run_warnings(table)]
        stopped = state.get("state") != "done"
        rounds = int(point.flat["rounds"])
        rows.append(
            {
                **{k: point.flat[k] for k in (*CANDIDATE, "rank", "mu", "seed", "batch_size")},
                "state": state.get("state"),
                "diverged": stopped or "unstable" in warnings,
                "dominated": "adapter dominates" in warnings,
                "warnings": warnings,
                "final": float(accuracy.iloc[-1]) * 100 if not stopped and len(accuracy) else math.nan,
                "round_mean": float(accuracy.mean()) * 100 if not stopped and len(accuracy) else math.nan,
                "peak_contribution": float(finite.max()) if len(finite) else math.nan,
                "final_contribution": last,
                "non_finite": bool(len(contribution) > len(finite)),
                "loss_rise": float(loss.iloc[-1] / loss.min()) if len(loss) and loss.min() > 0 else math.nan,
                "accuracy_drop": float(accuracy.max() - accuracy.iloc[-1]) * 100
                if len(accuracy)
                else math.nan,
                "steps_model": float(diagnostics.steps_per_round(table).get("model", math.nan)),
                "seconds_per_round": state.get("experiment_s", math.nan) / rounds
                if not stopped
                else math.nan,
            }
        )
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["candidate"] = frame.apply(candidate_name, axis=1)
    return frame


def _mean_ci(values: pd.Series) -> str:
    """'94.1 ± 1.2' over the finite values ('–' for none, the value alone for one)."""
    estimate = t_interval(values)
    if estimate.n == 0:
        return "–"
    if estimate.n == 1:
        return f"{estimate.mean:.1f}"
    return f"{estimate.mean:.1f} ± {estimate.half_width:.1f}"


def _share(value: float) -> str:
    """'38%', 'above 1000%', or 'not finite'."""
    if not math.isfinite(value):
        return "not finite"
    return "above 1000%" if value > 10 else f"{value:.0%}"


def stability_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per candidate, rank and μ: seeds, diverged, dominated, final accuracy, peak contribution."""
    rows = []
    for (name, rank, mu), group in points.groupby(["candidate", "rank", "mu"], sort=False):
        rows.append(
            {
                "candidate": name,
                "rank": int(rank),
                "μ": f"{mu:g}",
                "seeds": len(group),
                "diverged": f"{int(group['diverged'].sum())}/{len(group)}",
                "dominated": f"{int(group['dominated'].sum())}/{len(group)}",
                "final accuracy % (finished seeds)": _mean_ci(group["final"]),
                "final contribution (median)": _share(group["final_contribution"].median()),
                "peak contribution (median)": _share(group["peak_contribution"].median()),
            }
        )
    return pd.DataFrame(rows)


def threshold_evidence(points: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Finished points binned by their last evaluated round's contribution: their final accuracy
    minus the reference candidate's at the same rank, μ and seed (paired), and how many there are."""
    ref = points[points["candidate"] == reference].set_index(["rank", "mu", "seed"])["final"]
    done = points[points["final"].notna()].copy()
    done["gap"] = [
        row["final"] - ref.get((row["rank"], row["mu"], row["seed"]), math.nan) for _, row in done.iterrows()
    ]
    done["bin"] = pd.cut(done["final_contribution"], BINS, right=False)
    rows = []
    for interval, group in done.groupby("bin", observed=True):
        rows.append(
            {
                "final contribution": f"{interval.left:.0%} to {interval.right:.0%}",
                "points": len(group),
                "final accuracy %": _mean_ci(group["final"]),
                f"gap to {reference} (same rank, μ, seed)": _mean_ci(group["gap"]),
            }
        )
    return pd.DataFrame(rows)


def healthy_bounds(points: pd.DataFrame) -> pd.DataFrame:
    """The largest train-loss rise and accuracy drop among finished runs the adapter never
    dominated, beside the same among diverged runs (what LOSS_RISE and COLLAPSE must separate)."""
    healthy = points[(points["state"] == "done") & ~points["non_finite"]]
    healthy = healthy[healthy["final_contribution"].fillna(0) <= advice.MAX_CONTRIBUTION]
    bad = points[points["diverged"]]
    return pd.DataFrame(
        [
            {
                "runs": "finished, adapter never above MAX_CONTRIBUTION",
                "points": len(healthy),
                "largest loss rise (last ÷ lowest)": f"{healthy['loss_rise'].max():.2f}",
                "largest accuracy drop (best − last, points)": f"{healthy['accuracy_drop'].max():.1f}",
            },
            {
                "runs": "stopped or unstable",
                "points": int(points["diverged"].sum()),
                "largest loss rise (last ÷ lowest)": f"{bad['loss_rise'].max():.3g}",
                "largest accuracy drop (best − last, points)": (f"{bad['accuracy_drop'].max():.1f}"),
            },
        ]
    )


def spreads(points: pd.DataFrame) -> pd.DataFrame:
    """Per candidate, paired by seed: rank 10 − rank 1 at each μ, and μ 0 − μ 1 at each rank,
    on final and round-mean accuracy (points), over seeds where both finished."""
    rows = []
    for name, mine in points.groupby("candidate", sort=False):
        ranks, mus = sorted(mine["rank"].unique()), sorted(mine["mu"].unique())
        pairs = [
            (f"rank {ranks[-1]} − rank {ranks[0]}", f"μ {mu:g}", ("rank", ranks[-1], ranks[0]), ("mu", mu))
            for mu in mus
        ] + [
            (f"μ {mus[0]:g} − μ {mus[-1]:g}", f"rank {r}", ("mu", mus[0], mus[-1]), ("rank", r))
            for r in ranks
        ]
        for what, at, (knob, a, b), (fixed, value) in pairs:
            if a == b:
                continue
            here = mine[mine[fixed] == value]
            row = {"candidate": name, "difference": what, "at": at}
            for measure in ("final", "round_mean"):
                first = here[here[knob] == a].set_index("seed")[measure].dropna().to_dict()
                second = here[here[knob] == b].set_index("seed")[measure].dropna().to_dict()
                test = paired_test(first, second)
                d = test.difference
                row[f"{measure.replace('_', '-')} (paired)"] = (
                    "–"
                    if d.n == 0
                    else f"{d.mean:+.1f} ± {d.half_width:.1f}"
                    + (" beyond noise" if d.excludes_zero() else "")
                    if d.n > 1
                    else f"{d.mean:+.1f} (1 seed)"
                )
            rows.append(row)
    return pd.DataFrame(rows)


def batch_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per candidate and batch size at the batch block's rank and μ: steps, accuracy, time."""
    sizes = points.groupby(["candidate", "rank", "mu"])["batch_size"].transform("nunique")
    block = points[sizes > 1]
    rows = []
    for (name, batch), group in block.groupby(["candidate", "batch_size"], sort=False):
        rows.append(
            {
                "candidate": name,
                "batch_size": int(batch),
                "rank, μ": f"{int(group['rank'].iloc[0])}, {group['mu'].iloc[0]:g}",
                "seeds": len(group),
                "steps per phase (median client)": f"{group['steps_model'].median():g}",
                "final accuracy %": _mean_ci(group["final"]),
                "round-mean accuracy %": _mean_ci(group["round_mean"]),
                "seconds per round": _mean_ci(group["seconds_per_round"]),
                "warnings": ", ".join(sorted({w for ws in group["warnings"] for w in ws})) or "none",
            }
        )
    return pd.DataFrame(rows)


def note(sweep_dir: Path, spec: Path, reference: str) -> str:
    """The whole note as markdown."""
    points = point_rows(sweep_dir, spec)
    if points.empty:
        return f"# FedLoRA stability tables\n\nNo point of {spec} has run in {sweep_dir} yet.\n"
    ranked = points[points["batch_size"] == points["batch_size"].min()]
    total = len(expand(load_spec(spec)))
    return "\n".join(
        [
            "# FedLoRA stability tables (generated)",
            "",
            f"Generated by `python -m workbench.tools.stability_note` from `{spec}` "
            f"({len(points)} of {total} points ran). Accuracies in %; ± is the 95% Student-t "
            "half-width over the seeds that finished. *Diverged*: the run stopped (every upload "
            "refused as non-finite) or raised the *unstable* warning; *dominated*: the *adapter "
            "dominates* warning (mean contribution of the last evaluated round above "
            f"{advice.MAX_CONTRIBUTION:.0%}).",
            "",
            "## Rank × μ × candidate",
            "",
            markdown(stability_table(ranked)),
            "",
            "## What the thresholds rest on",
            "",
            markdown(threshold_evidence(ranked, reference)),
            "",
            markdown(healthy_bounds(points)),
            "",
            "## Rank and μ still move the curve (paired by seed)",
            "",
            markdown(spreads(ranked)),
            "",
            "## Batch size",
            "",
            markdown(batch_table(points)),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m workbench.tools.stability_note", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="sweep folder (points/)")
    parser.add_argument("--spec", type=Path, required=True, help="the sweep's YAML spec")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument(
        "--reference",
        default="α/√r, α 2, LoRA+ 4",
        help="the candidate the threshold evidence pairs against (default: the chosen default)",
    )
    args = parser.parse_args(argv)
    text = note(args.sweep_dir, args.spec, args.reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
