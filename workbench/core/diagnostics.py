"""Diagnostics of a run, read from its results table, and the warnings a user cannot miss.

Every row records how the client trained since its previous row (`local_rounds`,
`local_steps`, `steps_<phase>`), how far its latest upload moved (`update_norm`), and what its
method measured on the evaluation pass (FedLoRA: `adapter_contribution`, the adapter's share of
the output at the placement's output, ‖with − without‖ ÷ ‖without‖ over the client's test split,
and `adapter_weight_norm`, the Frobenius norm of its effective weight scale·B·A). Four warnings
follow from them, each with the parameters to change; the thresholds are defined here once:

- `MIN_CONTRIBUTION`: the adapter is inert when the clients' mean contribution stayed below it
  in every evaluated round (see the constant for why that value);
- `MAX_CONTRIBUTION`: the adapter dominates when the clients' mean contribution in the last
  evaluated round is above it;
- `MIN_STEPS`: a run is undertrained when the median client took fewer optimizer steps per
  round than this in some phase;
- a run is unstable when a loss, an update or the adapter's contribution stopped being finite
  (uploads refused as non-finite), when the clients' mean training loss of the last evaluated
  round is more than `LOSS_RISE` times its lowest, or when the last round's mean accuracy fell
  more than `COLLAPSE` below the run's best.

Pure pandas on tidy tables: the CLI, the tuner, the notebook and the report all call these.
This module never imports torch.
"""

from __future__ import annotations

import math

import pandas as pd

LOCAL_ROUNDS, LOCAL_STEPS, UPDATE_NORM = "local_rounds", "local_steps", "update_norm"
STEPS_PREFIX = "steps_"  # steps_<phase>: optimizer steps of one training phase
ADAPTER_CONTRIBUTION = "adapter_contribution"
ADAPTER_WEIGHT_NORM = "adapter_weight_norm"
# every diagnostic a method may report from its evaluation probe, with its meaning (a method
# adding one declares it here, so each results.csv column is documented once)
DIAGNOSTICS = {
    ADAPTER_CONTRIBUTION: "FedLoRA: ‖output with adapter − without‖ ÷ ‖without‖ on the client's "
    "test split, at the output the adapter adds to (0 while B = 0)",
    ADAPTER_WEIGHT_NORM: "FedLoRA: Frobenius norm of the adapter's effective weight scale·B·A "
    "(the client's own A where the placement keeps it)",
}

# Below this share of the output the adapter changes nothing a user can see. Measured on digits
# (benchmarks/diagnostic_thresholds.py: 10 and 100 clients, adapter_lr 0.01-0.1, adapter_epochs
# 1-5, 1,250 client evaluations), switching the adapter off changed on average 0.02% of the test
# predictions of clients below 1% (accuracy: 0.01 points), but 2.4% of those between 1% and 3%
# (accuracy: 2.0 points); runs whose mean stayed below 1% moved mean accuracy by at most 0.42
# points, within seed noise, so rank, μ and the adapter's other knobs cannot matter there.
MIN_CONTRIBUTION = 0.01
# Above this share of the output, at the end of a run, the adapter outweighs the private model it
# was meant to adjust. Measured on digits (the stability study, docs/fedlora-stability-tables.md:
# 96 runs, 3 candidates, ranks 1-10, mu 0-1): every run that ended at 97% accuracy or more ended
# with a contribution of at most 38%; every run that ended above 50% ended at 47% accuracy or
# less (615% -> 47%, non-finite -> 14-81%), and issue 21's demo ended rank 2 at 85% with 22-39%.
# A spike in the first rounds (up to 6900% in round 1 at rank 1) settled by itself in runs that
# ended at 97.5-98.4%, so the warning reads the last evaluated round, not the peak.
MAX_CONTRIBUTION = 0.5
# A run is unstable when its mean training loss in the last evaluated round is more than
# LOSS_RISE times its lowest *and* has given back more than LOSS_GIVEBACK of its fall from the
# first round, or when its last round's mean accuracy fell more than COLLAPSE below its best.
# In the stability study the 73 finished runs whose adapter did not dominate rose at most 1.58x
# and fell at most 9.9 points; the unstable ones rose to non-finite losses and fell up to 67
# points. The factor alone flagged healthy runs near zero loss: in the demo (issue 27) one
# client's adapter phase going from 0.24 to 0.75 lifted the mean from 0.08 to 0.17 (2.1-2.3x) on
# all four FedLoRA settings of one seed, which ended at 97-98.5%; over 458 runs of the demo's and
# the stability study's sweeps, runs that rose 2-2.8x had given back at most 14% of their fall,
# the diverging ones 470% or more (up to non-finite).
LOSS_RISE = 2.0
LOSS_GIVEBACK = 0.5
COLLAPSE = 0.2
FINITE_COLUMNS = ("loss", "train_loss", UPDATE_NORM, ADAPTER_CONTRIBUTION)
# Optimizer steps per round and phase of the median client. Each phase starts a fresh SGD
# optimizer with momentum 0.9, whose step reaches its full size only after about
# 1 / (1 − 0.9) = 10 steps; a phase shorter than that never trains at full speed.
MIN_STEPS = 10

# what to change when a phase is starved of steps (a phase not listed: the private model's)
PHASE_KNOBS = {"adapter": "adapter_epochs (or adapter_lr)"}
MODEL_KNOBS = "model_epochs (or lr)"
# what to lower when steps grow too large: the shared rates, and FedLoRA's adapter knobs when the
# table is FedLoRA's (it measures the adapter's contribution)
STEP_KNOBS = "lr (or max_grad_norm > 0 to clip each step)"
ADAPTER_STEP_KNOBS = "lora_plus_ratio, adapter_lr or lora_alpha"


def step_columns(frame: pd.DataFrame) -> list[str]:
    """The table's steps_<phase> columns, in order."""
    return [c for c in frame.columns if c.startswith(STEPS_PREFIX)]


def steps_per_round(frame: pd.DataFrame) -> dict[str, float]:
    """Per phase: the median over trained rows (client × evaluated round) of optimizer steps per
    round the client was sampled in."""
    if LOCAL_ROUNDS not in frame:
        return {}
    trained = frame[frame[LOCAL_ROUNDS] > 0]
    if trained.empty:
        return {}
    return {  # a phase another method of a combined table runs is empty here: left out
        c.removeprefix(STEPS_PREFIX): float((trained[c] / trained[LOCAL_ROUNDS]).median())
        for c in step_columns(frame)
        if trained[c].notna().any()
    }


def per_round(frame: pd.DataFrame, column: str) -> pd.Series:
    """A diagnostic's mean over the clients that measured it, per evaluated round."""
    if column not in frame:
        return pd.Series(dtype=float)
    return frame.groupby("round")[column].mean().dropna()


def loss_rose(loss: pd.Series) -> bool:
    """Whether a per-round loss ends more than LOSS_RISE× its lowest and more than
    LOSS_GIVEBACK of its fall from the first round back up (a loss that never fell: the factor)."""
    first, lowest, last = loss.iloc[0], loss.min(), loss.iloc[-1]
    return last > LOSS_RISE * lowest > 0 and last > lowest + LOSS_GIVEBACK * (first - lowest)


def instability(frame: pd.DataFrame) -> str:
    """Why the run is unstable ('' when it is not): a value that stopped being finite, a rising
    training loss, or a collapsed accuracy, each with its figures."""
    for column in (c for c in FINITE_COLUMNS if c in frame):
        infinite = frame[column].isin([math.inf, -math.inf])
        if infinite.any():
            first = int(frame.loc[infinite, "round"].min())
            return f"{column} is not finite from round {first} on (a non-finite upload is refused)"
    trained = frame[frame["participated"]] if "participated" in frame else frame
    loss = per_round(trained, "train_loss")
    if len(loss) > 1 and loss_rose(loss):
        return (
            f"the clients' mean training loss rose to {loss.iloc[-1]:.3g} in round {int(loss.index[-1])}, "
            f"more than {LOSS_RISE:g}× its lowest ({loss.min():.3g}, round {int(loss.idxmin())}) and "
            f"more than {LOSS_GIVEBACK:.0%} of the way back to round {int(loss.index[0])}'s "
            f"{loss.iloc[0]:.3g}"
        )
    accuracy = per_round(frame, "accuracy")
    if len(accuracy) > 1 and accuracy.iloc[-1] < accuracy.max() - COLLAPSE:
        return (
            f"mean accuracy collapsed to {accuracy.iloc[-1]:.1%} in round {int(accuracy.index[-1])}, "
            f"more than {COLLAPSE * 100:g} points below its best ({accuracy.max():.1%}, round "
            f"{int(accuracy.idxmax())})"
        )
    return ""


def run_warnings(frame: pd.DataFrame) -> list[str]:
    """The warnings a results table raises: an inert or dominating adapter, an unstable run,
    clients starved of steps."""
    found = []
    contribution = per_round(frame, ADAPTER_CONTRIBUTION)
    last = contribution.iloc[-1] if len(contribution) else math.nan
    if math.isfinite(last) and last > MAX_CONTRIBUTION:
        found.append(
            f"adapter dominates: its contribution to the output (mean over clients) ended at "
            f"{last:.0%} in round {int(contribution.index[-1])}, above {MAX_CONTRIBUTION:.0%}, so the "
            f"adapter outweighs the private model it should adjust; lower lora_plus_ratio or "
            f"lora_alpha (or adapter_lr)"
        )
    unstable = instability(frame)
    if unstable:
        knobs = f"{ADAPTER_STEP_KNOBS}, or {STEP_KNOBS}" if ADAPTER_CONTRIBUTION in frame else STEP_KNOBS
        found.append(f"unstable: {unstable}; lower {knobs}")
    if len(contribution) and contribution.max() < MIN_CONTRIBUTION:
        found.append(
            f"adapter inert: its contribution to the output (mean over clients) stayed below "
            f"{MIN_CONTRIBUTION:.0%} in every evaluated round (at most {contribution.max():.2%}), "
            f"so rank, mu and the other adapter knobs cannot change the results; start B small "
            f"and random with LoRA+ (adapter_init=small_b, lora_plus_ratio 16: the defaults), or "
            f"raise adapter_lr or adapter_epochs (or lora_alpha) to let the adapter learn"
        )
    steps = {p: s for p, s in steps_per_round(frame).items() if s < MIN_STEPS}
    if steps:
        samples = int(frame.loc[frame[LOCAL_ROUNDS] > 0, "num_train"].median())
        listed = ", ".join(f"{p}: {s:g}" for p, s in steps.items())
        knobs = list(dict.fromkeys(PHASE_KNOBS.get(p, MODEL_KNOBS) for p in steps))
        found.append(
            f"undertrained: the median client took fewer than {MIN_STEPS} optimizer steps per "
            f"round ({listed}; it holds {samples} training samples); raise "
            f"{' and '.join(knobs)}, or lower batch_size"
        )
    return found


def format_warnings(warnings: list[str]) -> list[str]:
    """Warnings as lines that stand out in a terminal or a notebook's output."""
    return [f"WARNING: {w}" for w in warnings]


def brief(frame: pd.DataFrame) -> str:
    """A compact line of the last evaluated round's diagnostics, e.g. 'adapter 0.3% of the
    output · steps/round model 3, adapter 3 · update norm 0.12' ('' for an empty table)."""
    if frame.empty:
        return ""
    parts = []
    last = frame[frame["round"] == frame["round"].max()]
    contribution = last[ADAPTER_CONTRIBUTION].mean() if ADAPTER_CONTRIBUTION in last else math.nan
    if not math.isnan(contribution):
        parts.append(f"adapter {contribution:.2%} of the output")
    steps = steps_per_round(frame)
    if steps:
        parts.append("steps/round " + ", ".join(f"{p} {s:g}" for p, s in steps.items()))
    norm = last[UPDATE_NORM].mean() if UPDATE_NORM in last else math.nan
    if not math.isnan(norm):
        parts.append(f"update norm {norm:.3g}")
    return " · ".join(parts)
