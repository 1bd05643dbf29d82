"""Command line: `python -m workbench run --rank 4 --mu 0.5 --out runs/x` and friends.

Every config parameter is a `--name value` flag generated from the config's own table, so the
CLI, the notebooks and the sweeps accept exactly the same names and values. A problem the user
can fix (a parameter, a data folder, an output folder, a run stopped by refusals) is printed as
one `error:` line with exit status 2; `--debug` shows its traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, build_config, parameter_table
from workbench.core.errors import UserError
from workbench.core.facts import REFERENCE_METHOD
from workbench.flags import add_parameters, flat_parameters


def parser() -> argparse.ArgumentParser:
    """The workbench's argument parser with its sub-commands."""
    root = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of its one-line message"
    )
    commands = root.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[common])
    run = add("run", help="run one experiment and print its summary")
    run.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/<algorithm>-<dataset>-<time>)"
    )
    run.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    add_parameters(run)
    add("params", help="list every parameter with its default and help")
    costs = add("costs", help="per-round FLOPs and bytes of every method, with ratios to a reference method")
    costs.add_argument("--algorithms", default=None, help="comma-separated (default: all)")
    costs.add_argument(
        "--reference",
        default=None,
        help=f"method to divide by, one of --algorithms (default: {REFERENCE_METHOD})",
    )
    costs.add_argument("--samples_per_client", type=int, default=500, help="training samples of each client")
    costs.add_argument("--csv", type=Path, default=None, help="also write the table here")
    add_parameters(costs)
    target = add(
        "target", help="rounds, FLOPs and bytes each finished run needed to reach a target mean accuracy"
    )
    target.add_argument("runs", nargs="+", type=Path, help="run directories")
    target.add_argument("--target", type=float, required=True, help="mean accuracy, e.g. 0.9")
    target.add_argument(
        "--reference", default=None, help=f"run label to divide by (default: {REFERENCE_METHOD})"
    )
    sweep = add("sweep", help="run a grid of notebook executions and build its HTML report (rerun to resume)")
    sweep.add_argument("spec", type=Path, help="YAML with `parameters:` and `grid:` mappings")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder")
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        help="points run in parallel (local default 1; ray default: all that fit)",
    )
    sweep.add_argument("--timeout", type=int, default=3600, help="seconds per notebook cell")
    sweep.add_argument(
        "--html-points", action="store_true", help="also export each point's executed notebook to HTML"
    )
    sweep.add_argument(
        "--restart-point",
        action="append",
        default=[],
        metavar="ID",
        help="run this point again from scratch (its id, or its index part like p003; repeatable); "
        "its old folder is kept as points/ID.old",
    )
    _add_executor(sweep)
    tune = add(
        "tune",
        help="tune every method of a spec with the same trial budget on validation data (Optuna), "
        "then judge the chosen configurations on fresh seeds (rerun to resume)",
    )
    tune.add_argument(
        "spec", type=Path, help="YAML with `parameters:`, `methods:` and optional `search:`, `ranges:`"
    )
    tune.add_argument("--out", type=Path, required=True, help="tune folder (studies, trials, report)")
    tune.add_argument(
        "--trials", type=int, required=True, help="trials per method (the same for every method)"
    )
    tune.add_argument(
        "--eval-seeds",
        default="1,2,3",
        help="comma-separated seeds the chosen configurations are judged on; none may be the tuning seed",
    )
    tune.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: SQLite in the tune folder); e.g. postgresql://… across machines",
    )
    tune.add_argument("--workers", type=int, default=None, help="trials run in parallel (local default 1)")
    tune.add_argument("--timeout", type=int, default=3600, help="seconds per notebook cell")
    _add_executor(tune)
    return root


def _add_executor(sweep: argparse.ArgumentParser) -> None:
    """Where the points run: local warm kernels or Ray tasks (see docs/ray.md)."""
    from workbench.lab.sweep.executor_base import EXECUTORS

    group = sweep.add_argument_group("executor")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: warm kernels on this machine; ray: tasks on a Ray cluster",
    )
    group.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else the local head)"
    )
    group.add_argument(
        "--cpus-per-point", type=float, default=1.0, help="Ray: CPUs each point reserves (its torch threads)"
    )
    group.add_argument(
        "--gpus-per-point", type=float, default=0.0, help="Ray: GPUs each point reserves (fractions allowed)"
    )
    group.add_argument(
        "--threads-per-point",
        type=int,
        default=None,
        help="torch threads of each point (local default: cores / workers; ray "
        "default: its CPUs); equal counts give bit-identical results",
    )
    group.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="local: a new kernel for every point instead of a warm one per worker",
    )


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    """Validate, run, write the run directory and print the summary."""
    config = build_config(flat_parameters(args, extra))  # refused before torch is imported
    from workbench.core.diagnostics import brief, format_warnings
    from workbench.core.results import to_frame
    from workbench.core.run_files import check_checkpoint
    from workbench.core.summary import format_summary

    out = args.out or Path("runs") / (
        f"{config.run.algorithm}-{config.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    check_checkpoint(out)  # a damaged checkpoint of an earlier run there, before torch is imported
    from workbench.loop.runner import RunStoppedError, run_experiment

    def progress(round_: int, rounds: int, metrics: dict) -> None:
        diagnostics = brief(to_frame(metrics["rows"]))  # this round's, in one line
        line = f"round {round_}/{rounds}: mean accuracy {metrics['accuracy']:.4f}"
        print(line + (f" · {diagnostics}" if diagnostics else ""), flush=True)

    try:
        result = run_experiment(config, out_dir=out, progress=None if args.quiet else progress)
    except RunStoppedError as stopped:  # what went wrong before the error line that ends the run
        for line in format_warnings(stopped.result.summary["warnings"]):
            print(line)
        raise
    print(format_summary(result.summary, warnings=False))
    print(f"run directory: {out}")
    for line in format_warnings(result.summary["warnings"]):  # last: where a user reads
        print(line)
    return 0


def cmd_params(args: argparse.Namespace, extra: list[str]) -> int:
    """Print every parameter, its default and its help."""
    from workbench.config import defaults
    from workbench.core.zoo import GROUPS

    values = defaults()
    for name, (_, f) in parameter_table().items():
        print(f"{name:24} {values[name]!r:34} {f.metadata['help']}")
    print("\nmodel groups (models=GROUP):")
    for group, members in GROUPS.items():
        print(f"  {group:22} {', '.join(members)}")
    return 0


def cmd_costs(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the per-round cost table of the chosen methods and their ratios to the reference."""
    import pandas as pd

    from workbench.algorithms import REGISTRY
    from workbench.tools.costs import cost_ratios, per_round_costs

    flat = flat_parameters(args, extra)
    build_config(flat)
    names = args.algorithms.split(",") if args.algorithms else None
    chosen(args.reference, names or list(REGISTRY), "--algorithms")
    table = per_round_costs(flat, names, args.samples_per_client)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            "Per client, one steady-state round (the 2nd); FLOPs = fwd+bwd matmul/conv, "
            "2 per multiply-add; bytes = numel x element size of what is sent."
        )
        print(table.to_string(index=False))
        print()
        ratios = cost_ratios(table, args.reference or REFERENCE_METHOD)
        print(ratios.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def chosen(reference: str | None, names: list[str], where: str) -> None:
    """Refuse a --reference given explicitly that names none of `names` (the default may be absent)."""
    if reference is not None and reference not in names:
        raise UserError(f"--reference {reference!r} is not among {where}: {names}")


def cmd_target(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the cost to first reach a target mean accuracy for each finished run."""
    from workbench.core.facts import TABLE_FILE
    from workbench.core.run_files import read_run
    from workbench.core.summary import cost_to_target

    runs = {}
    for run_dir in args.runs:
        if not (run_dir / TABLE_FILE).is_file():
            raise UserError(
                f"run directory {run_dir} holds no {TABLE_FILE}; give folders of "
                f"finished runs (the --out of `python -m workbench run`)"
            )
        flat, table = read_run(run_dir)
        label = flat["algorithm"] if flat["algorithm"] not in runs else str(run_dir)
        runs[label] = table
    chosen(args.reference, list(runs), "the runs' labels")
    table = cost_to_target(runs, args.target, args.reference or REFERENCE_METHOD)
    print(
        f"Cost to first reach mean accuracy >= {args.target} (sums over all clients up to that "
        f"round; NaN: not reached)"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    """Run or resume a sweep; the report's path is the last line printed."""
    from workbench.lab.sweep.run import export_points, run_sweep

    report = run_sweep(
        args.spec,
        args.out,
        timeout=args.timeout,
        execution=_execution(args),
        restart_points=args.restart_point,
    )
    if args.html_points:
        from workbench.core.folder_lock import owned

        with owned(args.out, "sweep"):  # the exports are written into the point folders
            for html in export_points(args.out):
                print(f"point notebook: {html}")
    print(report)
    return 0


def cmd_tune(args: argparse.Namespace, extra: list[str]) -> int:
    """Tune (or continue tuning) every method of a spec, judge and report; the report's path is
    the last line printed."""
    from workbench.lab.tuning.run import run_tune

    try:
        seeds = [int(s) for s in str(args.eval_seeds).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--eval-seeds {args.eval_seeds!r}: give comma-separated integers, e.g. 1,2,3"
        ) from None
    print(run_tune(args.spec, args.out, args.trials, seeds, args.storage, args.timeout, _execution(args)))
    return 0


def _execution(args: argparse.Namespace) -> Any:
    """The executor settings of a sweep or tune command."""
    from workbench.lab.sweep.executor_base import Execution

    return Execution(
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        cpus=args.cpus_per_point,
        gpus=args.gpus_per_point,
        fresh_kernels=args.fresh_kernels,
        threads=args.threads_per_point,
    )


COMMANDS = {
    "tune": cmd_tune,
    "sweep": cmd_sweep,
    "run": cmd_run,
    "params": cmd_params,
    "costs": cmd_costs,
    "target": cmd_target,
}


INTERRUPTED = {
    "tune": "interrupted: finished trials are kept in the studies (and each unfinished trial's last "
    "checkpoint); run the same command again to continue",
    "sweep": "interrupted: finished points (and each unfinished point's last checkpoint) are kept; "
    "run the same command again to resume",
    "run": "interrupted: a run with --out keeps its last checkpoint (every --checkpoint_every "
    "rounds); run the same command again to resume from it",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors exit with status 2 and a one-line message (--debug: traceback)."""
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command not in ("run", "costs"):
            raise ConfigError(f"unexpected arguments {extra} for `{args.command}`")
        return COMMANDS[args.command](args, extra)
    except UserError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a message, not a traceback; nothing finished is lost
        if args.debug:
            raise
        print(INTERRUPTED.get(args.command, "interrupted"), file=sys.stderr)
        return 130
