"""Write the FedLoRA study's tables (markdown) from its sweep folder (issue 21).

    python -m workbench.tools.study_note SWEEP_DIR --spec notebooks/sweeps/fedlora-study.yaml \\
        --out docs/fedlora-study-tables.md

Per data regime (the values of `--split`, default `num_clients`): every configuration's final
accuracy per seed with its mean ± 95% CI, its accuracy averaged over rounds, training FLOPs and
bytes; each sharing FedLoRA configuration against its `share_adapter=false` twin (per zoo model
too, where the clients hold several); each FedLoRA configuration against Standalone with as many
local epochs of optimizer steps per round, and with FedLoRA's own model epochs; the spread of
accuracy over μ and over rank around the defaults beside the seed noise. Accuracies and gaps are
in points (%). Unfinished points are listed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from workbench.algorithms.fedlora.params import FedLoRAParams
from workbench.config import defaults
from workbench.lab.report.protocol_table import KEY, interval, markdown
from workbench.lab.report.study_table import (
    model_finals,
    relabel,
    spread,
    standalone_gaps,
    study_points,
    twin_gaps,
    twin_gaps_by_model,
)
from workbench.lab.report.sweep_tables import Sweep
from workbench.tools.protocol_note import finish_note, load

SPREAD_KNOBS = ("mu", "rank")
FEDLORA_DEFAULTS = (
    "rank",
    "lora_alpha",
    "mu",
    "adapter_lr",
    "lora_plus_ratio",
    "adapter_init",
    "adapter_epochs",
)


def points_frame(sweep_dir: Path, spec: Path | None, split: str) -> tuple[pd.DataFrame, Sweep]:
    """Every finished point with its label, accuracies and resolved parameters, and the sweep."""
    sweep = load(sweep_dir, spec)
    table, swept = sweep.table, list(sweep.swept)
    resolved = sweep.resolved.rename(columns={"id": "point"})
    for name in (split, "seed"):
        if name not in swept:  # fixed by the spec: still a column of every point
            swept.append(name)
            if name not in table:
                table = table.assign(**{name: sweep.spec.get("parameters", {}).get(name, defaults()[name])})
    return relabel(study_points(table, swept, resolved, split), fedlora_defaults()), sweep


def fedlora_defaults() -> dict[str, object]:
    """FedLoRA's parameters at the code's defaults (what the spreads and labels are around)."""
    return {f.name: defaults()[f.name] for f in dataclasses.fields(FedLoRAParams)}


def configuration_table(part: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: seeds, final accuracy per seed and mean ± CI, round mean ± CI, costs."""
    rows = []
    for config, group in part.groupby(KEY, sort=False):
        group = group.sort_values("seed")
        final, final_half = interval(group["final_accuracy"] * 100)
        curve, curve_half = interval(group["round_mean"] * 100)
        rows.append(
            {
                KEY: config,
                "seeds": len(group),
                "final": final,
                "final_ci95": final_half,
                "final_per_seed": " / ".join(f"{v * 100:.1f}" for v in group["final_accuracy"]),
                "round_mean": curve,
                "round_mean_ci95": curve_half,
                "train_flops": group["total_train_flops"].mean(),
                "bytes": group["total_bytes"].mean(),
            }
        )
    return pd.DataFrame(rows).sort_values("round_mean", ascending=False)


def in_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Gap columns (fractions) as points of accuracy, 2 decimals."""
    frame = frame.copy()
    for column in frame.columns:
        if column.endswith(("_gap", "_ci95", "_mean", "_sd", "_spread", "_seed_sd")):
            frame[column] = frame[column].astype(float) * 100
    return frame


FORMATS = {
    **{c: ".2f" for c in ("final", "final_ci95", "round_mean", "round_mean_ci95")},
    **{f"{a}_{s}": ".2f" for a in ("final", "round_mean") for s in ("ci95",)},
    **{f"{a}_gap": "+.2f" for a in ("final", "round_mean")},
    **{f"{a}_{s}": ".2f" for a in ("final_accuracy", "round_mean") for s in ("mean", "sd")},
    "train_flops": ".3g",
    "bytes": ".3g",
}


def spread_lines(points: pd.DataFrame, value: object, split: str) -> list[str]:
    """The μ and rank spreads around the defaults in one regime (nothing when not swept)."""
    base = fedlora_defaults()
    lines = []
    for knob in SPREAD_KNOBS:
        frame, summary = spread(points, value, split, base, knob)
        if len(frame) < 2:
            continue
        s = {k: v * 100 for k, v in summary.items()}
        lines += [
            f"Spread over `{knob}` with every other FedLoRA knob at its default: final accuracy "
            f"{s['final_accuracy_spread']:.2f} points (seed SD {s['final_accuracy_seed_sd']:.2f}), "
            f"accuracy averaged over rounds {s['round_mean_spread']:.2f} points (seed SD "
            f"{s['round_mean_seed_sd']:.2f}).",
            "",
            markdown(in_points(frame), FORMATS),
            "",
        ]
    return lines


def regime_section(points: pd.DataFrame, finals: pd.DataFrame, value: object, split: str) -> list[str]:
    """One regime: every configuration, then the twin comparisons (per model too, where the
    clients hold several), the Standalone comparisons and the spreads."""
    part = points[points[split] == value]
    gaps = [
        (
            "Sharing against its no-sharing twin (`share_adapter=false`, same training)",
            twin_gaps(points, value, split),
        ),
        (
            "FedLoRA against Standalone with as many local epochs of optimizer steps per round "
            "(model + adapter epochs; every Standalone step trains the whole model)",
            standalone_gaps(points, value, split, matched=True),
        ),
        (
            "FedLoRA against Standalone with FedLoRA's own model epochs",
            standalone_gaps(points, value, split, matched=False),
        ),
    ]
    by_model = twin_gaps_by_model(points, finals, value, split)
    if len(by_model):
        gaps.insert(1, ("The same, per zoo model (its clients' final accuracy)", by_model))
    lines = [f"## Regime `{split}={value}`", "", markdown(configuration_table(part), FORMATS), ""]
    for title, frame in gaps:
        lines += [f"{title}; gap = FedLoRA − reference, points, paired by seed (95% CI):", ""]
        lines += [markdown(in_points(frame), FORMATS) if len(frame) else "(no pairs finished)", ""]
    return lines + spread_lines(points, value, split)


def write_note(sweep_dir: Path, out: Path, spec: Path | None = None, split: str = "num_clients") -> str:
    """Build the note, write it to `out` and return it."""
    points, sweep = points_frame(sweep_dir, spec, split)
    done = int((sweep.points["state"] == "done").sum())
    lines = [
        "# FedLoRA study: tables (generated by `python -m workbench.tools.study_note`)",
        "",
        f"Sweep `{sweep_dir.name}`: {done} of {len(sweep.points)} points finished; fixed parameters: "
        f"`{sweep.spec.get('parameters', {})}`. Accuracy in %: *final* is the last round's mean "
        f"client accuracy, *round_mean* its average over every evaluated round.",
        "",
    ]
    sections, finals = [], model_finals(sweep.table)
    for value in sorted(points[split].unique(), key=lambda v: (str(type(v)), v)):
        sections += regime_section(points, finals, value, split)
    return finish_note(out, sweep, lines, sections)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m workbench.tools.study_note", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="sweep folder")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument(
        "--spec", type=Path, default=None, help="the sweep's spec: tabulate the points finished so far"
    )
    parser.add_argument("--split", default="num_clients", help="parameter whose values are the data regimes")
    args = parser.parse_args(argv)
    print(write_note(args.sweep_dir, args.out, args.spec, args.split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
