"""Diagnostics of a run, read from its results table, and the warnings a user cannot miss.

Every row records how the client trained since its previous row (`local_rounds`,
`local_steps`, `steps_<phase>`), how far its latest upload moved (`update_norm`), and what its
method measured on the evaluation pass. Those last columns, and the warnings they raise, are the
method's own: a method declares them in its module (`Algorithm.diagnostics`, a
`MethodDiagnostics`: its columns with their meanings, its findings, the knobs of its phases and
what to lower when its steps are too large), and the algorithms registry hands this module the
declarations of every registered method (`use_declarations`), so core names no method.
The generic warnings and their thresholds are defined here once:

- `MIN_STEPS`: a run is undertrained when the median client took fewer optimizer steps per
  round than this in some phase;
- a run is unstable when a loss, an update or a diagnostic its method declared `finite`
  stopped being finite (uploads refused as non-finite), when the clients' mean training loss
  of the last evaluated round is more than `LOSS_RISE` times its lowest, or when the last
  round's mean accuracy fell more than `COLLAPSE` below the run's best.

Warnings are listed serious first (a run whose results cannot be trusted before one whose knobs
were wasted), a method's own before the generic ones at each level.
Pure pandas on tidy tables: the CLI, the tuner, the notebook and the report all call these.
This module never imports torch, and imports pandas only when a table is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workbench.core.lazy import lazy

if TYPE_CHECKING:
    import pandas as pd
else:  # method modules import the declarations below; pandas loads when a table is read
    pd = lazy("pandas")

LOCAL_ROUNDS, LOCAL_STEPS, UPDATE_NORM = "local_rounds", "local_steps", "update_norm"
STEPS_PREFIX = "steps_"  # steps_<phase>: optimizer steps of one training phase


@dataclass(frozen=True)
class Diagnostic:
    """A column a method reports from its evaluation probe (`Probe.values`), one per client row."""

    name: str  # the results.csv column
    meaning: str  # what it measures, documented once here
    finite: bool = False  # a value that stops being finite makes the run unstable
    brief: str = ""  # its last-round mean in `brief`'s line, a format ("... {:.2%} ..."); "": none


@dataclass(frozen=True)
class Finding:
    """One warning a table raises, and whether it says the results cannot be trusted."""

    text: str  # "<short name>: <figures>; <what to change>"
    serious: bool  # True: listed before the warnings that only say knobs were wasted


@dataclass(frozen=True)
class MethodDiagnostics:
    """What a method declares about its diagnostics (`Algorithm.diagnostics`)."""

    columns: tuple[Diagnostic, ...] = ()
    # the method's own warnings from a table holding one of its columns
    findings: Callable[[pd.DataFrame], list[Finding]] | None = None
    phase_knobs: Mapping[str, str] = field(default_factory=dict)  # phase → what to raise when starved
    step_knobs: str = ""  # what to lower, before the shared rates, when its run is unstable

    def reads(self, frame: pd.DataFrame) -> bool:
        """Whether the table holds one of its columns (a table of its method)."""
        return any(c.name in frame for c in self.columns)


# The declarations of every registered method, handed in by the registry (core imports no method).
_source: Callable[[], Iterable[MethodDiagnostics]] | None = None


def use_declarations(source: Callable[[], Iterable[MethodDiagnostics]]) -> None:
    """Read methods' declarations from `source` (called on every use, so a method registered or
    unregistered later counts); `workbench.algorithms` installs its registry's."""
    global _source
    _source = source


def declared() -> list[MethodDiagnostics]:
    """Every registered method's declaration, each once (a subclass may inherit its parent's),
    in registration order."""
    if _source is None:
        raise RuntimeError(
            "no method has declared its diagnostics: import workbench.algorithms (the registry) "
            "before reading a results table"
        )
    found: list[MethodDiagnostics] = []
    for declaration in _source():
        if declaration not in found:
            found.append(declaration)
    return found


class _Declared(Mapping[str, str]):
    """Every diagnostic column a registered method declares → its meaning (a live view)."""

    def _columns(self) -> dict[str, str]:
        return {c.name: c.meaning for d in declared() for c in d.columns}

    def __getitem__(self, name: str) -> str:
        return self._columns()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns())

    def __len__(self) -> int:
        return len(self._columns())


# every diagnostic a method may report from its evaluation probe, with its meaning, so each
# results.csv column is documented once (a row carrying an undeclared one is refused)
DIAGNOSTICS: Mapping[str, str] = _Declared()

# A run is unstable when its mean training loss in the last evaluated round is more than
# LOSS_RISE times its lowest *and* has given back more than LOSS_GIVEBACK of its fall from the
# first round, or when its last round's mean accuracy fell more than COLLAPSE below its best.
# In issue 27's stability study of the reference method, the 73 finished runs its own warning
# did not flag rose at most 1.58x and fell at most 9.9 points; the unstable ones rose to
# non-finite losses and fell up to 67 points. The factor alone flagged healthy runs near zero
# loss: in the demo one client's second phase going from 0.24 to 0.75 lifted the mean from
# 0.08 to 0.17 (2.1-2.3x) on all four settings of one seed, which ended at 97-98.5%; over 458
# runs of the demo's and the stability study's sweeps, runs that rose 2-2.8x had given back at
# most 14% of their fall, the diverging ones 470% or more (up to non-finite).
LOSS_RISE = 2.0
LOSS_GIVEBACK = 0.5
COLLAPSE = 0.2
FINITE_COLUMNS = ("loss", "train_loss", UPDATE_NORM)  # and each declared `finite` diagnostic
# Optimizer steps per round and phase of the median client. Each phase starts a fresh SGD
# optimizer with momentum 0.9, whose step reaches its full size only after about
# 1 / (1 − 0.9) = 10 steps; a phase shorter than that never trains at full speed.
MIN_STEPS = 10

# what to change when a phase is starved of steps (a phase no method declares knobs for: the
# private model's)
MODEL_KNOBS = "model_epochs (or lr)"
# what to lower when steps grow too large: the shared rates (after the method's own step_knobs)
STEP_KNOBS = "lr (or max_grad_norm > 0 to clip each step)"


def finite_columns() -> tuple[str, ...]:
    """The columns whose non-finite values make a run unstable, generic ones first."""
    return (*FINITE_COLUMNS, *(c.name for d in declared() for c in d.columns if c.finite))


def phase_knobs() -> dict[str, str]:
    """Per training phase a method declared knobs for: what to raise when it is starved."""
    return {phase: knobs for d in declared() for phase, knobs in d.phase_knobs.items()}


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
    for column in (c for c in finite_columns() if c in frame):
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
    panel = evaluated_every_round(frame)
    accuracy = per_round(panel, "accuracy")
    if len(accuracy) > 1 and accuracy.iloc[-1] < accuracy.max() - COLLAPSE:
        whose = (
            ""
            if len(panel) == len(frame)
            else f" of the {panel['client'].nunique()} clients evaluated every round"
        )
        return (
            f"mean accuracy{whose} collapsed to {accuracy.iloc[-1]:.1%} in round {int(accuracy.index[-1])}, "
            f"more than {COLLAPSE * 100:g} points below its best ({accuracy.max():.1%}, round "
            f"{int(accuracy.idxmax())})"
        )
    return ""


def evaluated_every_round(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the clients evaluated in every evaluated round: all of them, unless rounds
    before the last evaluated a panel (`eval_clients`); per-round means then compare the same
    clients, not a panel with the whole federation."""
    if "client" not in frame or frame.empty:
        return frame
    rounds = frame.groupby("client")["round"].nunique()
    return frame[frame["client"].isin(rounds.index[rounds == frame["round"].nunique()])]


def run_warnings(frame: pd.DataFrame) -> list[str]:
    """The warnings a results table raises: its method's own (`MethodDiagnostics.findings`), an
    unstable run, clients starved of steps; serious ones first."""
    methods = [d for d in declared() if d.reads(frame)]
    found = [f for d in methods if d.findings is not None for f in d.findings(frame)]
    unstable = instability(frame)
    if unstable:
        knobs = ", or ".join([*(d.step_knobs for d in methods if d.step_knobs), STEP_KNOBS])
        found.append(Finding(f"unstable: {unstable}; lower {knobs}", serious=True))
    steps = {p: s for p, s in steps_per_round(frame).items() if s < MIN_STEPS}
    if steps:
        samples = int(frame.loc[frame[LOCAL_ROUNDS] > 0, "num_train"].median())
        listed = ", ".join(f"{p}: {s:g}" for p, s in steps.items())
        named = phase_knobs()
        raise_ = list(dict.fromkeys(named.get(p, MODEL_KNOBS) for p in steps))
        found.append(
            Finding(
                f"undertrained: the median client took fewer than {MIN_STEPS} optimizer steps per "
                f"round ({listed}; it holds {samples} training samples); raise "
                f"{' and '.join(raise_)}, or lower batch_size",
                serious=False,
            )
        )
    return [f.text for f in sorted(found, key=lambda f: not f.serious)]  # stable: methods' first


def format_warnings(warnings: list[str]) -> list[str]:
    """Warnings as lines that stand out in a terminal or a notebook's output."""
    return [f"WARNING: {w}" for w in warnings]


def brief(frame: pd.DataFrame) -> str:
    """A compact line of the last evaluated round's diagnostics, e.g. '<a declared diagnostic's
    brief> · steps/round model 3 · update norm 0.12' ('' for an empty table): the declared
    diagnostics that have a `brief`, then the generic ones."""
    if frame.empty:
        return ""
    parts = []
    last = frame[frame["round"] == frame["round"].max()]
    for column in (c for d in declared() for c in d.columns if c.brief and c.name in last):
        value = last[column.name].mean()
        if not math.isnan(value):
            parts.append(column.brief.format(value))
    steps = steps_per_round(frame)
    if steps:
        parts.append("steps/round " + ", ".join(f"{p} {s:g}" for p, s in steps.items()))
    norm = last[UPDATE_NORM].mean() if UPDATE_NORM in last else math.nan
    if not math.isnan(norm):
        parts.append(f"update norm {norm:.3g}")
    return " · ".join(parts)
