"""Write the FedLoRA protocol note (markdown) from a finished or partial sweep folder.

    python -m workbench.tools.protocol_note SWEEP_DIR --out docs/fedlora-protocol-tables.md
    python -m workbench.tools.protocol_note SWEEP_DIR --spec SPEC.yaml --out …   # while it runs

Per partition: every configuration's final accuracy per seed and mean ± 95% CI, training FLOPs
and bytes of the whole run, the cost to reach a target (default: Standalone's mean final
accuracy in that partition), and each configuration of the judged method (FedLoRA unless
`write_note(method=...)` names another)'s gap to Standalone and to the best other method, paired
by seed. Points that did not finish are listed, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from workbench.algorithms import title
from workbench.core.facts import REFERENCE_METHOD, STATUS_FILE
from workbench.core.run_files import read_run
from workbench.lab.report.protocol_table import (
    GAP_COLUMNS,
    KEY,
    best_baseline,
    configurations,
    markdown,
    paired_gaps,
    protocol_table,
    ranked_by,
)
from workbench.lab.report.sweep_tables import SEPARATOR, Sweep, label, load_sweep
from workbench.lab.sweep.spec import expand, load_spec, swept_values

REFERENCE = "standalone"
FORMATS = {
    "final_mean": ".4f",
    "final_ci95": ".4f",
    "best_mean": ".4f",
    "val_mean": ".4f",
    "train_flops": ".3g",
    "bytes": ".3g",
    "target": ".3f",
    "flops_to_target": ".3g",
    "bytes_to_target": ".3g",
    "gap_mean": "+.4f",
    "gap_ci95": ".4f",
}


def standalone_references(protocol: pd.DataFrame, partition: str) -> list[str]:
    """Standalone's configurations in a partition, the cheapest (fewest FLOPs) first."""
    rows = protocol[(protocol["partition"] == partition) & (protocol["algorithm"] == REFERENCE)]
    return list(rows.sort_values("train_flops")[KEY])


def default_targets(table: pd.DataFrame, swept: Sequence[str]) -> dict[str, float]:
    """Per partition: the cheapest Standalone's mean final accuracy, floored to 0.01 (0.5
    without Standalone)."""
    points = configurations(table, swept)
    targets = {}
    for partition, part in points.groupby("partition"):
        own = part[part["algorithm"] == REFERENCE]
        if own.empty:
            targets[partition] = 0.5
            continue
        cheapest = own.groupby(KEY)["total_train_flops"].mean().idxmin()
        targets[partition] = math.floor(own.loc[own[KEY] == cheapest, "final_accuracy"].mean() * 100) / 100
    return targets


def verdict(gaps: pd.DataFrame, partition: str, reference: str, method: str = REFERENCE_METHOD) -> str:
    """One sentence: the best gap of `method`'s configurations to a reference in a partition and
    whether it is noise."""
    # a configuration's label starts with its method's name (`sweep_tables.label`)
    mine = gaps[KEY].str.split(SEPARATOR, regex=False).str[0] == method
    rows = gaps[(gaps["partition"] == partition) & (gaps["reference"] == reference) & mine]
    name = title(method)
    if rows.empty:
        return f"no {name} configuration has seeds paired with {reference}"
    top = rows.sort_values(ranked_by(rows, "val_mean", "gap_mean"), ascending=False).iloc[0]
    beyond = rows[rows["beyond_noise"] & (rows["gap_mean"] > 0)]
    noise = "beyond" if top["beyond_noise"] else "within"
    return (
        f"best {name} configuration `{top[KEY]}`: {top['gap_mean']:+.4f} ± {top['gap_ci95']:.4f} "
        f"vs `{reference}` ({top['pairs']} paired seeds, {noise} seed noise); "
        f"{len(beyond)} of {len(rows)} {name} configurations are better beyond seed noise"
    )


def load(sweep_dir: Path, spec: Path | None = None) -> Sweep:
    """A finished sweep (its sweep.json), or with `spec` the points finished so far of a sweep
    that is still running or was stopped (the others count as not finished); `resolved` holds
    every finished point's parameters as its run recorded them."""
    if spec is None:
        return load_sweep(sweep_dir)
    loaded = load_spec(spec)
    names = list(swept_values(loaded))
    states, frames, resolved = [], [], []
    for index, point in enumerate(expand(loaded)):
        state, table, flat = finished_point(sweep_dir, index, point.swept)
        states.append({"id": point.id, "state": state, "error": None, **point.swept})
        if table is not None:
            frames.append(table.assign(point=point.id, **point.swept))
            resolved.append({"id": point.id, **flat})
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Sweep(
        spec={"parameters": loaded["parameters"], "grid": swept_values(loaded)},
        points=pd.DataFrame(states).reindex(columns=["id", "state", "error", *names]),
        table=table.reindex(columns=[*table.columns, *[n for n in names if n not in table]]),
        resolved=pd.DataFrame(resolved),
    )


def finished_point(sweep_dir: Path, index: int, swept: dict) -> tuple[str, pd.DataFrame | None, dict]:
    """A point's state, table and recorded parameters, found by its position and checked
    against its swept values (its id also hashes every default, which code changes since the
    run may have moved)."""
    for folder in sorted((sweep_dir / "points").glob(f"p{index:03d}-*")):
        status = folder / STATUS_FILE
        if not status.exists() or json.loads(status.read_text())["state"] != "done":
            continue
        flat, table = read_run(folder / "run")
        if all(flat.get(k) == v for k, v in swept.items()):
            return "done", table, flat
    return "missing", None, {}


def labelled(sweep: Sweep) -> tuple[pd.DataFrame, list[str]]:
    """The results with `partition` and `seed` columns even where the sweep fixed them."""
    table, swept = sweep.table, list(sweep.swept)
    for name in ("partition", "seed"):
        if name not in swept:
            table = table.assign(**{name: sweep.spec.get("parameters", {}).get(name, 0)})
            swept.append(name)
    return table, swept


def unfinished(sweep: Sweep) -> str:
    """Points that did not finish, counted per seed, state and configuration."""
    points = sweep.points[sweep.points["state"] != "done"].copy()
    keys = [c for c in points.columns if c not in ("id", "state", "error", "seed", "partition")]
    points["configuration"] = [label({k: r[k] for k in keys}) for _, r in points.iterrows()]
    groups = ["seed", "state", "configuration"] if "seed" in points else ["state", "configuration"]
    counts = points.groupby(groups, dropna=False).agg(points=("id", "count"), errors=("error", _joined))
    return markdown(counts.reset_index())


def _joined(errors: pd.Series) -> str:
    """Distinct error messages of a group of points, or '' when there are none."""
    return "; ".join(sorted({str(e) for e in errors.dropna()}))


def partition_section(
    table: pd.DataFrame,
    swept: list[str],
    protocol: pd.DataFrame,
    partition: str,
    target: float,
    method: str = REFERENCE_METHOD,
) -> list[str]:
    """One partition's verdicts on `method`, its table (best first) and its paired gaps."""
    # Standalone's configurations are references of their own: the other method to beat is the
    # best of the federated baselines
    best = best_baseline(protocol, partition, exclude=(method, REFERENCE))
    standalones = standalone_references(protocol, partition)
    references = list(dict.fromkeys([*standalones, *([best] if best else [])]))
    gaps = (
        pd.concat(
            [paired_gaps(table[table["partition"] == partition], swept, ref) for ref in references],
            ignore_index=True,
        )
        if references
        else pd.DataFrame(columns=GAP_COLUMNS)
    )
    rows = protocol[protocol["partition"] == partition]
    rows = rows.sort_values(ranked_by(rows, "val_mean", "final_mean"), ascending=False)
    verdicts = [f"- {verdict(gaps, partition, ref, method)}" for ref in standalones]
    if best:
        verdicts.append(f"- best federated baseline: `{best}`; {verdict(gaps, partition, best, method)}")
    return [
        f"## Partition `{partition}` (target accuracy {target:.2f})",
        "",
        *verdicts,
        "",
        markdown(rows.drop(columns=["partition", "algorithm"]), FORMATS),
        "",
        "Gaps in final accuracy, paired by seed (95% CI):",
        "",
        markdown(gaps.drop(columns=["partition"]), FORMATS),
        "",
    ]


def selection_line(protocol: pd.DataFrame) -> str:
    """How the note ranks configurations and picks each method's best."""
    if ranked_by(protocol, "val_mean", "final_mean") == "val_mean":
        return (
            "Configurations are ranked, and each method's best picked, by mean final validation "
            "accuracy (`val_mean`: samples held out of the clients' training data); the accuracies "
            "and gaps shown are on the test splits, which no selection saw."
        )
    return (
        "These runs hold no validation split: configurations are ranked, and each method's best "
        "picked, on the same test accuracies they are compared on (optimistic for a method with "
        "more configurations)."
    )


def write_note(
    sweep_dir: Path,
    out: Path,
    targets: dict[str, float] | None = None,
    spec: Path | None = None,
    method: str = REFERENCE_METHOD,
) -> str:
    """Build the note on `method`'s configurations, write it to `out` and return it."""
    sweep = load(sweep_dir, spec)
    table, swept = labelled(sweep)
    targets = {**default_targets(table, swept), **(targets or {})}
    protocol = protocol_table(table, swept, targets)
    done = int((sweep.points["state"] == "done").sum())
    lines = [
        "# FedLoRA protocol: tables (generated by `python -m workbench.tools.protocol_note`)",
        "",
        f"Sweep `{sweep_dir.name}`: {done} of {len(sweep.points)} points finished; fixed "
        f"parameters: `{sweep.spec.get('parameters', {})}`.",
        "",
        selection_line(protocol),
        "",
    ]
    sections = []
    for partition in sorted(protocol["partition"].unique()):
        sections += partition_section(table, swept, protocol, partition, targets[partition], method)
    return finish_note(out, sweep, lines, sections)


def finish_note(out: Path, sweep: Sweep, head: list[str], sections: list[str]) -> str:
    """Write a generated note: its head, a notice when points did not finish, its sections, then
    the unfinished points; return the text."""
    done = int((sweep.points["state"] == "done").sum())
    lines = list(head)
    if done < len(sweep.points):
        lines += [
            f"**Partial:** {len(sweep.points) - done} points did not finish (counted at "
            f"the end); every number below is over the finished seeds only.",
            "",
        ]
    lines += sections
    if done < len(sweep.points):
        lines += ["## Points that did not finish", "", unfinished(sweep), ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m workbench.tools.protocol_note", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="sweep folder (sweep.json, results.csv)")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="the sweep's spec: tabulate the points finished so far (no sweep.json needed)",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PARTITION=ACC",
        help="target mean accuracy of a partition (default: Standalone's)",
    )
    args = parser.parse_args(argv)
    targets = None
    if args.target:
        pairs = [t.split("=", 1) for t in args.target]
        if any(len(p) != 2 for p in pairs):
            parser.error(f"--target expects PARTITION=ACC, got {args.target}")
        targets = {k: float(v) for k, v in pairs}
    print(write_note(args.sweep_dir, args.out, targets, args.spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
