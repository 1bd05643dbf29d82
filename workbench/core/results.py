"""Tidy results: one row per client per evaluated round, and the events beside them. A run
directory's files are written and read by `workbench.core.run_files`; the summary of a table is
`workbench.core.summary`.

A run directory holds `config.json` (the resolved flat config), `results.csv` (the table),
`events.csv` (refused uploads: one row each, with what became of the client) and
`summary.json`. Costs in a row cover every round since the client's previous evaluated row, so
their column sums are the run's totals whatever `eval_every` is; so does its `refused` count.
A run that stopped early (every update of a round refused) keeps its completed rounds and says
why in the summary's `stopped`. Beside accuracy and costs a row records how the client trained
and what its method measured (`workbench.core.diagnostics`: optimizer steps per phase, the
update's norm, FedLoRA's adapter contribution), and the summary lists the warnings those
diagnostics raise. Files are replaced whole (write then rename) and a damaged one is named
when read (`workbench.core.files`). This module never imports torch.

Columns of results.csv, one row per client per evaluated round:
- round, client, model, algorithm; participated (sampled in a round this row covers);
- accuracy, loss: the client's deployed model on its local test split;
- val_accuracy, val_loss, num_val: the same on its validation split, held out of its training
  data (`val_fraction`; NaN, NaN, 0 without one, and in tables written before it existed);
- train_loss: mean training loss of its last local phase;
- train_flops, bytes_up, bytes_down (and cum_*): costs since its previous row;
- num_train, num_test; refused: its uploads refused since its previous row;
- local_rounds: rounds it was sampled in since its previous row; local_steps: optimizer steps
  of all its phases since then, and steps_<phase> the same per training phase (FedLoRA:
  steps_model, steps_adapter; 0 where it did not train);
- update_norm: L2 norm of the update its latest upload carried (upload − download where the
  upload mirrors the download, else the upload), empty when it sent nothing;
- a method's own diagnostics, measured on the evaluation pass (FedLoRA: adapter_contribution,
  adapter_weight_norm); a column a method does not report is absent from its table and empty
  where tables of several methods are combined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import pandas as pd

from workbench.core.diagnostics import DIAGNOSTICS, STEPS_PREFIX

COST_COLUMNS = ("train_flops", "bytes_up", "bytes_down")


NO_VALIDATION = math.nan  # a validation column of a client (or run) without a validation split


class Evaluation(NamedTuple):
    """A client's deployed model on its local test split (with the diagnostics its method
    measured in the same pass) and on its validation split."""

    accuracy: float
    loss: float
    diagnostics: Mapping[str, float]
    val_accuracy: float = NO_VALIDATION
    val_loss: float = NO_VALIDATION


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
    refused: int = 0  # this client's uploads the server refused since its previous row
    local_rounds: int = 0  # rounds the client was sampled in since its previous row
    local_steps: int = 0  # optimizer steps of all its phases since its previous row
    update_norm: float = math.nan  # L2 norm of the update its latest upload carried
    # validation: samples held out of the client's training data (NaN, 0: no validation split;
    # also every row of tables written before validation existed)
    val_accuracy: float = NO_VALIDATION
    val_loss: float = NO_VALIDATION
    num_val: int = 0
    phase_steps: Mapping[str, int] = field(default_factory=dict)  # → steps_<phase> columns
    diagnostics: Mapping[str, float] = field(default_factory=dict)  # → one column each
    # with the simulated clock on (workbench.loop.devices): sim_seconds, sim_time, missed
    timing: Mapping[str, float] = field(default_factory=dict)  # → one column each


NESTED = ("phase_steps", "diagnostics", "timing")  # Row fields that become columns of their own


ROW_COLUMNS = tuple(f.name for f in fields(Row) if f.name not in NESTED)


@dataclass(frozen=True)
class Event:
    """Something that happened to one client in one round besides training (a refusal)."""

    round: int
    client: int
    event: str  # "refused", "dropped" (out of the round) or "late" (past the round's deadline)
    tensor: str  # the offending tensor, "" when the whole upload was at fault
    reason: str
    action: str  # what became of the client's own state


def events_frame(events: list[Event]) -> pd.DataFrame:
    """Events → DataFrame with the Event columns (also when there are none)."""
    return pd.DataFrame([asdict(e) for e in events], columns=list(Event.__dataclass_fields__))


def _record(row: Row) -> dict[str, Any]:
    """A row as flat columns: steps_<phase> per phase and one column per diagnostic."""
    undeclared = sorted(set(row.diagnostics) - set(DIAGNOSTICS))
    if undeclared:
        raise ValueError(
            f"diagnostics {undeclared} are not declared in workbench.core.diagnostics.DIAGNOSTICS "
            f"(declared: {sorted(DIAGNOSTICS)})"
        )
    record = {name: getattr(row, name) for name in ROW_COLUMNS}
    record.update({f"{STEPS_PREFIX}{phase}": count for phase, count in row.phase_steps.items()})
    record.update(row.diagnostics)
    record.update(row.timing)
    return record


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """Rows → DataFrame with per-client cumulative cost columns (cum_train_flops, …); a phase's
    steps are 0 in rows where the client did not train, a diagnostic is NaN where unmeasured."""
    records = [_record(r) for r in rows]
    extra = list(dict.fromkeys(k for r in records for k in r if k not in ROW_COLUMNS))
    steps = sorted((c for c in extra if c.startswith(STEPS_PREFIX)), key=extra.index)
    frame = pd.DataFrame(records, columns=[*ROW_COLUMNS, *steps, *(c for c in extra if c not in steps)])
    frame[steps] = frame[steps].fillna(0).astype("int64")
    if not rows:  # a run stopped before its first evaluation: typed, empty columns
        counts = (*COST_COLUMNS, "round", "client", "refused", "local_rounds", "local_steps")
        frame = frame.astype({c: "int64" for c in counts})
    frame = frame.sort_values(["round", "client"], kind="stable").reset_index(drop=True)
    for column in COST_COLUMNS:
        frame[f"cum_{column}"] = frame.groupby("client")[column].cumsum()
    return frame


SIM_TIME = "sim_time"  # the simulated clock when a round closed (workbench.loop.devices)


# a row's timing columns, with the clock or dropout on: busy seconds and rounds dropped out of
# or late in since the client's previous row, and the clock
TIMING_COLUMNS = ("sim_seconds", SIM_TIME, "missed")


def mean_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per evaluated round: mean client accuracy, the cumulative costs of all clients and, with
    the simulated clock on, the clock when the round closed."""
    validation = {"val_accuracy": ("val_accuracy", "mean")} if has_validation(frame) else {}
    clock = {SIM_TIME: (SIM_TIME, "max")} if SIM_TIME in frame else {}
    per_round = (
        frame.groupby("round")
        .agg(
            accuracy=("accuracy", "mean"),
            **validation,
            **clock,
            train_flops=("train_flops", "sum"),
            bytes_up=("bytes_up", "sum"),
            bytes_down=("bytes_down", "sum"),
        )
        .reset_index()
    )
    for column in COST_COLUMNS:
        per_round[f"cum_{column}"] = per_round[column].cumsum()
    per_round["cum_bytes"] = per_round["cum_bytes_up"] + per_round["cum_bytes_down"]
    return per_round


def has_validation(frame: pd.DataFrame) -> bool:
    """Whether a results table holds validation accuracy (its run had a validation split)."""
    return "val_accuracy" in frame and bool(frame["val_accuracy"].notna().any())
