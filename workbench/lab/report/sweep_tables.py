"""A finished sweep as tidy tables: points, configurations and their seeds, with intervals.

Reads what a sweep folder holds (sweep.json, results.csv) and never imports torch. A
*configuration* is one combination of the `by` columns (default: the algorithm and every swept
parameter except `seed`); its points are its seeds. Accuracy is the mean over all clients of each
client's local test accuracy; a point's curve is that mean per evaluated round. Every selection
(a method's best configuration) ranks by mean final *validation* accuracy when every point held
a validation split (`selection_column`), so the accuracies compared are not the ones selected on;
otherwise by test accuracy, and the report says so (`selection_note`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.algorithms import DIAGNOSTICS
from workbench.core import files
from workbench.core.diagnostics import STEPS_PREFIX
from workbench.core.facts import CONFIG_FILE, EPSILON, REFERENCE_METHOD, SWEEP_FILE, TABLE_FILE
from workbench.core.results import ROW_COLUMNS, SIM_TIME, TIMING_COLUMNS, mean_accuracy
from workbench.core.summary import summarize
from workbench.lab.report.selection import VALIDATION, selection_column
from workbench.lab.report.stats import interval_columns

SPEC_FILE = SWEEP_FILE


def result_columns() -> tuple[str, ...]:
    """The columns of a run's results table (every registered method's diagnostics included)."""
    return (
        *ROW_COLUMNS,
        "cum_train_flops",
        "cum_bytes_up",
        "cum_bytes_down",
        *DIAGNOSTICS,
        *TIMING_COLUMNS,
        EPSILON,
    )


SUMMARY_VALUES = (
    "final_accuracy",
    "best_accuracy",
    "best_round",
    "rounds",
    "total_train_flops",
    "total_bytes_up",
    "total_bytes_down",
    "total_bytes",
    "refused",
    "flops_per_round",
    "bytes_per_round",
    "final_val_accuracy",
    "best_val_accuracy",
)
CURVE_VALUES = ("accuracy", "cum_train_flops", "cum_bytes_up", "cum_bytes_down", "cum_bytes")
SEPARATOR = " · "  # between a configuration label's parts: the method, then its values
# what to do about a damaged sweep.json or results.csv (finished points never run again)
REBUILD_RECORD = (
    "delete it and run the sweep command again: it is rebuilt from the point folders (finished "
    "points do not run again; only the provenance of earlier sweep runs is lost)"
)
REBUILD_TABLE = "run the sweep command again: it rebuilds the table (finished points do not run again)"


@dataclass(frozen=True)
class Sweep:
    """A finished sweep: its record (sweep.json), one row per point, and all results."""

    spec: dict[str, Any]
    points: pd.DataFrame
    table: pd.DataFrame
    resolved: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def swept(self) -> list[str]:
        """Names of the swept parameters, in grid order."""
        return list(self.spec.get("grid", {}))

    @property
    def failed(self) -> pd.DataFrame:
        """Points that did not finish, with their error."""
        return self.points[self.points["state"] != "done"].reset_index(drop=True)

    @property
    def provenance(self) -> dict[str, Any]:
        """The environment the sweep recorded ({} for sweeps made before it was recorded)."""
        return self.spec.get("provenance") or {}

    @property
    def efficiency(self) -> dict[str, Any] | None:
        """The efficiency record of the last sweep run that ran points (None before it existed)."""
        return self.spec.get("efficiency")

    @property
    def default_seed(self) -> int:
        """The seed of points that do not sweep it."""
        return int(self.spec.get("parameters", {}).get("seed", 0))


def _resolved(sweep_dir: Path, point: dict[str, Any]) -> dict[str, Any]:
    """Every resolved parameter of a point (sweep.json, else its run's config.json)."""
    if point.get("resolved"):
        return point["resolved"]
    config = sweep_dir / "points" / point["id"] / "run" / CONFIG_FILE
    return json.loads(config.read_text()) if config.is_file() else {}


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read sweep.json and results.csv of a sweep folder (DamagedFileError names one that
    cannot be read, and how the sweep command rebuilds it)."""
    sweep_dir = Path(sweep_dir)
    spec = files.read_json(sweep_dir / SPEC_FILE, REBUILD_RECORD, keys=("points",))
    grid = list(spec.get("grid", {}))
    records = [
        {
            "id": p["id"],
            "state": p.get("state"),
            "error": p.get("error"),
            "seconds": p.get("seconds"),
            **p.get("params", {}),
        }
        for p in spec.get("points", [])
    ]
    points = pd.DataFrame(records, columns=["id", "state", "error", "seconds", *grid])
    resolved = pd.DataFrame([{"id": p["id"], **_resolved(sweep_dir, p)} for p in spec.get("points", [])])
    if any(p.get("state") == "done" for p in spec["points"]):
        table = files.read_table(sweep_dir / TABLE_FILE, REBUILD_TABLE)
    else:  # no point finished: the sweep wrote an empty table
        table = pd.DataFrame(columns=[*result_columns(), "point", *grid])
    return Sweep(spec=spec, points=points, table=table, resolved=resolved)


def swept_columns(table: pd.DataFrame) -> list[str]:
    """Columns a sweep added to the results table (besides `point`; steps_<phase> are results)."""
    results = result_columns()
    return [c for c in table.columns if c not in results and c != "point" and not c.startswith(STEPS_PREFIX)]


def config_keys(table: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """Configuration columns: `by`, else the algorithm plus every swept column except seed."""
    if by is not None:
        return list(by)
    return ["algorithm", *[c for c in swept_columns(table) if c not in ("seed", "algorithm")]]


def with_points(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a `point` column (plain runs: one point per algorithm)."""
    return table if "point" in table.columns else table.assign(point=table["algorithm"])


def tick(value: Any) -> str:
    """A parameter value as text, integers as integers: 4.0 → '4', 0.2 → '0.2'."""
    numeric = isinstance(value, (int, float)) or hasattr(value, "dtype")
    if isinstance(value, bool) or not numeric:
        return str(value)
    return f"{value:g}"


def label(values: dict[str, Any]) -> str:
    """A configuration's name from its parameters, e.g. 'fedlora · rank=4 · mu=0.2'."""
    parts = [str(v) if k == "algorithm" else f"{k}={tick(v)}" for k, v in values.items() if not pd.isna(v)]
    return SEPARATOR.join(parts) or "all"


def algorithm_order(algorithms: Sequence[str], first: str = REFERENCE_METHOD) -> list[str]:
    """The reference method first, then the others in the order they first appear."""
    seen = list(dict.fromkeys(str(a) for a in algorithms))
    return sorted(seen, key=lambda a: (a != first, seen.index(a)))


def point_summary(
    table: pd.DataFrame, swept: Sequence[str] = (), by: Sequence[str] | None = None, default_seed: int = 0
) -> pd.DataFrame:
    """Per point: configuration, its parameters, seed, final/best accuracy and total costs."""
    table = with_points(table)
    keys = config_keys(table, by)
    params = [k for k in dict.fromkeys([*keys, *swept]) if k not in ("algorithm", "seed")]
    rows = []
    for point, frame in table.groupby("point", sort=True):
        first = frame.iloc[0]
        values = summarize(frame)
        seed = first["seed"] if pd.notna(first.get("seed")) else default_seed
        rows.append(
            {
                "point": point,
                "configuration": label({k: first[k] for k in keys}),
                "algorithm": first["algorithm"],
                **{k: first[k] for k in params},
                "seed": int(seed),
                **values,
                "flops_per_round": values["total_train_flops"] / values["rounds"],
                "bytes_per_round": values["total_bytes"] / values["rounds"],
            }
        )
    return pd.DataFrame(
        rows, columns=["point", "configuration", "algorithm", *params, "seed", *SUMMARY_VALUES]
    )


def seed_curves(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per point and evaluated round: its configuration, mean accuracy and cumulative costs."""
    table = with_points(table)
    keys = config_keys(table, by)
    frames = [
        mean_accuracy(rows).assign(
            point=point,
            configuration=label({k: rows[k].iloc[0] for k in keys}),
            algorithm=rows["algorithm"].iloc[0],
        )
        for point, rows in table.groupby("point", sort=True)
    ]
    timed = (SIM_TIME,) if SIM_TIME in table else ()  # the simulated clock, where it ran
    columns = ["point", "configuration", "algorithm", "round", *CURVE_VALUES, *timed]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def per_round(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per configuration and round: mean accuracy over seeds with its interval, mean costs."""
    curves = seed_curves(table, by)
    keys = ["configuration", "algorithm", "round"]
    accuracy = interval_columns(curves, keys, "accuracy")
    values = [*CURVE_VALUES[1:], *((SIM_TIME,) if SIM_TIME in curves else ())]
    costs = curves.groupby(keys, sort=True)[values].mean().reset_index()
    return accuracy.merge(costs, on=keys, how="left")


def configurations(summary: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Per configuration: seeds, final/best accuracy with intervals, mean costs; the reference
    method's first."""
    keys = ["configuration", "algorithm"]
    out = interval_columns(summary, keys, "final_accuracy").merge(
        interval_columns(summary, keys, "best_accuracy").drop(columns="seeds"), on=keys
    )
    costs = [
        "total_train_flops",
        "total_bytes_up",
        "total_bytes_down",
        "total_bytes",
        "flops_per_round",
        "bytes_per_round",
        "rounds",
    ]
    out = out.merge(summary.groupby(keys, sort=True)[costs].mean().reset_index(), on=keys)
    validation = summary.get(VALIDATION, pd.Series(float("nan"), index=summary.index)).astype(float)
    # a configuration with one seed lacking validation has none: NaN stays NaN in the mean
    val = validation.groupby([summary[k] for k in keys], sort=True).agg(lambda v: v.mean(skipna=False))
    out = out.merge(val.rename(VALIDATION).reset_index(), on=keys, how="left")
    order = {a: i for i, a in enumerate(algorithm_order(summary["algorithm"], reference))}
    out["_order"] = out["algorithm"].map(order)
    out = out.sort_values(["_order", selection_column(out)], ascending=[True, False], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def best_configuration(
    configs: pd.DataFrame, algorithms: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> pd.Series | None:
    """The configuration with the highest mean final accuracy among `algorithms` (all if None),
    on validation when every configuration has it (`selection_column`), else on test."""
    pick = configs[~configs["algorithm"].isin(exclude)]
    if algorithms is not None:
        pick = pick[pick["algorithm"].isin(algorithms)]
    if pick.empty:
        return None
    return pick.loc[pick[selection_column(configs)].idxmax()]


def best_per_algorithm(configs: pd.DataFrame, reference: str = REFERENCE_METHOD) -> list[str]:
    """The best configuration (`best_configuration`) of each algorithm, the reference's first."""
    order = algorithm_order(configs["algorithm"], reference)
    best = [best_configuration(configs, [a]) for a in order]  # each algorithm has rows: never None
    return [row["configuration"] for row in best if row is not None]


def cost_table(configs: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Configurations with cost ratios to the best `reference` configuration (x_vs_reference)."""
    table = configs.copy()
    ref = best_configuration(configs, [reference])
    if ref is not None:
        for column, name in (("total_train_flops", "flops"), ("total_bytes", "bytes")):
            table[f"{name}_vs_{reference}"] = table[column] / ref[column]
    return table


def pareto_front(summary: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (lower or equal x with higher y), sorted by x."""
    front, best = [], float("-inf")
    for _, row in summary.sort_values([x, y], ascending=[True, False], kind="stable").iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def point_algorithms(sweep: Sweep) -> dict[str, Any]:
    """Each point's method (finished or not): swept, else resolved (NaN when neither says)."""
    resolved = sweep.resolved.set_index("id") if "id" in sweep.resolved else pd.DataFrame()
    methods = {}
    for _, row in sweep.points.iterrows():
        algorithm = row.get("algorithm")
        if pd.isna(algorithm) and "algorithm" in resolved:
            algorithm = resolved.loc[row["id"], "algorithm"]
        methods[row["id"]] = algorithm
    return methods


def sweep_methods(sweep: Sweep) -> list[str]:
    """The methods of a sweep: its points' and its results', in order of first appearance."""
    named = [*point_algorithms(sweep).values(), *sweep.table.get("algorithm", [])]
    return list(dict.fromkeys(str(a) for a in named if not pd.isna(a)))


def point_labels(sweep: Sweep) -> dict[str, str]:
    """Each point's configuration name from its swept values (finished or not)."""
    keys = [k for k in sweep.swept if k not in ("algorithm", "seed")]
    methods = point_algorithms(sweep)
    return {
        row["id"]: label({"algorithm": methods[row["id"]], **{k: row[k] for k in keys}})
        for _, row in sweep.points.iterrows()
    }
