"""The report's verdict: the reference method's best configuration against the best baseline
and the rival's best (report parameters `reference` and `rival`: FedLoRA and FedProto by default).

The paper's three claims, recomputed on a sweep: higher accuracy (final and best, paired across
seeds), less computation and less communication, both to reach a target accuracy and per round.
Sentences name methods by their declared `title`. Works on the tidy tables of
`workbench.lab.report.sweep_tables`; never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbench.algorithms import title
from workbench.core.facts import REFERENCE_METHOD, RIVAL_METHOD
from workbench.core.results import SIM_TIME
from workbench.lab.report.stats import POWER, Estimate, PairedTest, detectable, paired_test
from workbench.lab.report.sweep_tables import best_configuration

TARGET_FRACTION = 0.9
TO_TARGET = {"rounds": "round", "flops": "cum_train_flops", "bytes": "cum_bytes"}
TIME = "time"  # simulated seconds to target, where the sweep ran the clock (workbench.loop.devices)


@dataclass(frozen=True)
class Comparison:
    """The reference method's best configuration against another one, paired over their common
    seeds."""

    role: str
    ours: str  # the reference method's best configuration
    other: str
    final: PairedTest
    best: PairedTest


@dataclass(frozen=True)
class Target:
    """The accuracy the cost-to-target figures use, and how it was chosen."""

    accuracy: float
    rule: str


def per_seed(summary: pd.DataFrame, configuration: str, value: str) -> dict[int, float]:
    """A configuration's `value` per seed."""
    rows = summary[summary["configuration"] == configuration]
    return dict(zip(rows["seed"].astype(int), rows[value].astype(float)))


def compare(summary: pd.DataFrame, ours: str, other: str, role: str) -> Comparison:
    """Paired final and best accuracy differences (ours − other) across seeds."""
    tests = {
        v: paired_test(per_seed(summary, ours, f"{v}_accuracy"), per_seed(summary, other, f"{v}_accuracy"))
        for v in ("final", "best")
    }
    return Comparison(role, ours, other, tests["final"], tests["best"])


def comparisons(
    summary: pd.DataFrame,
    configs: pd.DataFrame,
    reference: str = REFERENCE_METHOD,
    rival: str = RIVAL_METHOD,
) -> list[Comparison]:
    """The reference method's best configuration against the best baseline and against the
    rival's best (none when the rival is the reference)."""
    ours = best_configuration(configs, [reference])
    if ours is None:
        return []
    found = [
        ("best baseline", best_configuration(configs, exclude=[reference])),
        (title(rival), best_configuration(configs, [rival]) if reference != rival else None),
    ]
    return [
        compare(summary, ours["configuration"], row["configuration"], role)
        for role, row in found
        if row is not None
    ]


def introduction(
    reference: str = REFERENCE_METHOD, rival: str = RIVAL_METHOD, selected_on: str = "test"
) -> str:
    """What the verdict compares, in the paper's terms (markdown, methods by their titles);
    `selected_on` names the accuracy the best configurations were picked by."""
    return (
        f"{title(reference)}'s best configuration (highest mean final {selected_on} accuracy over its "
        "seeds) "
        f"against the best baseline configuration and against {title(rival)}'s best, in the "
        "paper's terms: accuracy (final and best), and the computation and communication needed "
        "to reach a target accuracy and per round."
    )


def choose_target(configs: pd.DataFrame, fraction: float = TARGET_FRACTION, accuracy: float = 0.0) -> Target:
    """`accuracy` when set (> 0), else `fraction` × the best configuration's mean final accuracy."""
    if not 0 <= accuracy <= 1 or not 0 < fraction <= 1:
        raise ValueError(
            f"target accuracy={accuracy} must be in [0, 1] (0: use the fraction) and "
            f"target fraction={fraction} in (0, 1]"
        )
    if accuracy > 0:
        return Target(accuracy, f"a set target of {accuracy:.1%} mean accuracy")
    best = best_configuration(configs)
    if best is None:
        return Target(math.nan, "no configuration finished")
    value = fraction * best["final_accuracy"]
    return Target(
        value,
        f"{fraction:.0%} of the best configuration's mean final accuracy "
        f"({best['configuration']}: {best['final_accuracy']:.1%})",
    )


def to_target_columns(frame: pd.DataFrame) -> dict[str, str]:
    """What the cost to target is measured in: rounds, FLOPs, bytes and, where the runs had the
    simulated clock, simulated seconds."""
    return {**TO_TARGET, **({TIME: SIM_TIME} if SIM_TIME in frame else {})}


def first_reach(curve: pd.DataFrame, target: float) -> dict[str, float]:
    """Round, cumulative FLOPs and bytes (and simulated time) at a curve's first round at or
    above target (NaN if never)."""
    hit = curve[curve["accuracy"] >= target].sort_values("round")
    return {k: float(hit.iloc[0][c]) if len(hit) else math.nan for k, c in to_target_columns(curve).items()}


def mean_curve(curves: pd.DataFrame, configuration: str) -> pd.DataFrame:
    """A configuration's seed-mean accuracy and cumulative costs per round (the drawn curve)."""
    mine = curves[curves["configuration"] == configuration]
    values = ["accuracy", *(c for c in to_target_columns(curves).values() if c != "round")]
    return mine.groupby("round", as_index=False)[values].mean()


def to_target(curves: pd.DataFrame, configs: pd.DataFrame, names: list[str], target: float) -> pd.DataFrame:
    """Per configuration: where its seed-mean curve first reaches the target (round, FLOPs,
    bytes), the rounds at which single seeds reach it, and its costs per round."""
    rows = []
    for name in dict.fromkeys(names):
        config = configs[configs["configuration"] == name].iloc[0]
        seeds = [
            first_reach(curve, target)["rounds"]
            for _, curve in curves[curves["configuration"] == name].groupby("point", sort=True)
        ]
        rows.append(
            {
                "configuration": name,
                **first_reach(mean_curve(curves, name), target),
                "seed_rounds": sorted(int(r) for r in seeds if not math.isnan(r)),
                "seeds": len(seeds),
                "flops_per_round": config["flops_per_round"],
                "bytes_per_round": config["bytes_per_round"],
            }
        )
    return pd.DataFrame(rows)


def ratios(costs: pd.DataFrame, comparison: Comparison) -> dict[str, float]:
    """Ours ÷ other: rounds, FLOPs and bytes for the seed-mean curves to reach the target
    (NaN when either never does), and FLOPs and bytes per round."""
    ours, other = (costs[costs["configuration"] == c].iloc[0] for c in (comparison.ours, comparison.other))
    keys = [*TO_TARGET, *([TIME] if TIME in costs else []), "flops_per_round", "bytes_per_round"]
    return {k: ours[k] / other[k] if other[k] else math.nan for k in keys}


def interval_text(estimate: Estimate, scale: float = 100, unit: str = " points") -> str:
    """'3.1 points (95% CI 1.2 to 5.0)' or '3.1 points (1 seed, no interval)'."""
    mean = f"{estimate.mean * scale:+.1f}{unit}"
    if estimate.n < 2:
        return f"{mean} ({estimate.n} seed, no interval)"
    return f"{mean} (95% CI {estimate.low * scale:+.1f} to {estimate.high * scale:+.1f})"


def p_text(test: PairedTest) -> str:
    """'p = 0.012', 'p < 0.001', or why there is no p-value."""
    if len(test.seeds) < 2:
        return "no test with 1 paired seed"
    if math.isnan(test.p_value):
        return "no test: the difference is the same on every seed"
    return "p < 0.001" if test.p_value < 0.001 else f"p = {test.p_value:.3f}"


MANY_SEEDS = 1000  # beyond this many seeds, "seeds needed" is said as "more than"


def power_text(test: PairedTest) -> str:
    """What the comparison could have detected: 'at 3 seeds and this spread it resolves a true
    difference of 4.2 points or more (80% power)', and for a difference within the noise how many
    seeds would resolve it ('' below 2 seeds or without spread)."""
    found = detectable(test)
    if math.isnan(found.difference):
        return ""
    text = (
        f"at {len(test.seeds)} seeds and this spread it resolves a true difference of "
        f"{found.difference * 100:.1f} points or more ({POWER:.0%} power)"
    )
    if test.difference.excludes_zero():
        return text
    many = math.isnan(found.seeds_needed) or found.seeds_needed > MANY_SEEDS
    needed = f"more than {MANY_SEEDS:,}" if many else f"{int(found.seeds_needed)}"
    return (
        f"{text}; resolving the observed {test.difference.mean * 100:+.1f} points would take {needed} seeds"
    )


def sentence(
    comparison: Comparison | None, setting: str, reference_present: bool, reference: str = REFERENCE_METHOD
) -> str:
    """One sentence: who wins at this setting and whether it exceeds the seed noise."""
    name = title(reference)
    if comparison is None:
        missing = "no baseline finished" if reference_present else f"no {name} configuration finished"
        return f"No verdict at this setting ({setting}): {missing}."
    diff = comparison.final.difference
    ahead = name if diff.mean > 0 else comparison.other if diff.mean < 0 else "nobody"
    verb = "beats" if diff.mean > 0 else ("trails" if diff.mean < 0 else "ties with")
    n = len(comparison.final.seeds)
    versus = (
        f"{name}'s best configuration ({comparison.ours}) {verb} the best baseline "
        f"({comparison.other}), difference {interval_text(diff)}"
    )
    if n < 2:
        return (
            f"At this setting ({setting}), {ahead} is ahead on final accuracy with 1 seed, so the "
            f"seed noise cannot be judged: {versus}."
        )
    can = power_text(comparison.final)
    can = f" {can[0].upper()}{can[1:]}." if can else ""
    if diff.excludes_zero():
        return (
            f"At this setting ({setting}), {ahead} wins on final accuracy: {versus}; the difference "
            f"exceeds the seed noise ({p_text(comparison.final)}, {n} seeds).{can}"
        )
    return (
        f"At this setting ({setting}), no method wins beyond the seed noise: {ahead} has the higher "
        f"mean final accuracy, but the interval includes 0 ({versus}; {p_text(comparison.final)}, "
        f"{n} seeds).{can}"
    )


def setting_text(resolved: dict[str, Any], swept: list[str]) -> str:
    """The fixed experimental setting in a few words, e.g. 'digits, 10 clients, ...'."""
    if not resolved:
        return "this sweep"
    parts = {
        "dataset": f"{resolved.get('dataset')}",
        "num_clients": f"{resolved.get('num_clients')} clients",
        "partition": (
            f"pathological, {resolved.get('classes_per_client')} classes per client"
            if resolved.get("partition") == "pathological"
            else f"{resolved.get('partition')} α={resolved.get('dirichlet_alpha')}"
        ),
        "rounds": f"{resolved.get('rounds')} rounds",
    }
    return ", ".join(text for name, text in parts.items() if name not in swept)


@dataclass(frozen=True)
class Verdict:
    """Everything the report's verdict section shows."""

    comparisons: list[Comparison]
    target: Target
    costs: pd.DataFrame
    sentence: str
    reference: str = REFERENCE_METHOD  # the method the verdict is about


def decide(
    summary: pd.DataFrame,
    configs: pd.DataFrame,
    curves: pd.DataFrame,
    setting: str,
    reference: str = REFERENCE_METHOD,
    target_fraction: float = TARGET_FRACTION,
    target_accuracy: float = 0.0,
    rival: str = RIVAL_METHOD,
) -> Verdict:
    """Compare, cost to target and state the verdict of a sweep's tidy tables."""
    target = choose_target(configs, target_fraction, target_accuracy)
    found = comparisons(summary, configs, reference, rival)
    names = [n for c in found for n in (c.ours, c.other)]
    costs = to_target(curves, configs, names, target.accuracy) if names else pd.DataFrame()
    present = bool((configs["algorithm"] == reference).any())
    said = sentence(found[0] if found else None, setting, present, reference)
    return Verdict(found, target, costs, said, reference)


def claims(verdict: Verdict) -> list[str]:
    """The paper's three claims (accuracy, computation, communication) against the best
    baseline, as measured here."""
    if not verdict.comparisons:
        return []
    c = verdict.comparisons[0]
    diff, n = c.final.difference, len(c.final.seeds)
    noise = (
        "1 seed: noise unknown"
        if n < 2
        else "exceeds the seed noise"
        if diff.excludes_zero()
        else "within the seed noise"
    )
    r = ratios(verdict.costs, c)
    target = f"{verdict.target.accuracy:.1%}"

    def cost(key: str) -> str:
        to = (
            f"{r[key]:.3g}× to reach {target}"
            if not math.isnan(r[key])
            else f"no ratio to reach {target} (a seed-mean curve never gets there)"
        )
        return f"{title(verdict.reference)} ÷ {c.other}: {to}, {r[f'{key}_per_round']:.3g}× per round"

    return [
        f"**Higher accuracy**: final accuracy {interval_text(diff)} against {c.other} "
        f"({p_text(c.final)}); {noise}.",
        f"**Less computation** (training FLOPs): {cost('flops')}.",
        f"**Less communication** (bytes sent): {cost('bytes')}.",
    ]
