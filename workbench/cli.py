"""Command line: `python -m workbench run --rank 4 --mu 0.5 --out runs/x` and friends.

Every config parameter is a `--name value` flag generated from the config's own table, so the
CLI, the notebooks and the sweeps accept exactly the same names and values.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from workbench.config import ConfigError, build_config, parameter_table
from workbench.flags import add_parameters, flat_parameters


def parser() -> argparse.ArgumentParser:
    """The workbench's argument parser with its sub-commands."""
    root = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one experiment and print its summary")
    run.add_argument("--out", type=Path, default=None,
                     help="run directory (default: runs/<algorithm>-<dataset>-<time>)")
    run.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    add_parameters(run)
    commands.add_parser("params", help="list every parameter with its default and help")
    costs = commands.add_parser("costs", help="per-round FLOPs and bytes of every method, with "
                                              "ratios to FedLoRA")
    costs.add_argument("--algorithms", default=None, help="comma-separated (default: all)")
    costs.add_argument("--samples_per_client", type=int, default=500,
                       help="training samples of each client")
    costs.add_argument("--csv", type=Path, default=None, help="also write the table here")
    add_parameters(costs)
    target = commands.add_parser("target", help="rounds, FLOPs and bytes each finished run "
                                                "needed to reach a target mean accuracy")
    target.add_argument("runs", nargs="+", type=Path, help="run directories")
    target.add_argument("--target", type=float, required=True, help="mean accuracy, e.g. 0.9")
    target.add_argument("--reference", default="fedlora", help="run label to divide by")
    sweep = commands.add_parser("sweep", help="run a grid of notebook executions and build its "
                                              "HTML report (rerun to resume)")
    sweep.add_argument("spec", type=Path, help="YAML with `parameters:` and `grid:` mappings")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder")
    sweep.add_argument("--workers", type=int, default=1, help="points run in parallel processes")
    sweep.add_argument("--timeout", type=int, default=3600, help="seconds per notebook cell")
    sweep.add_argument("--html-points", action="store_true",
                       help="also export each point's executed notebook to HTML")
    return root


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    """Validate, run, write the run directory and print the summary."""
    from workbench.core.results import format_summary
    from workbench.loop.runner import run_experiment

    config = build_config(flat_parameters(args, extra))
    out = args.out or Path("runs") / (f"{config.run.algorithm}-{config.data.dataset}-"
                                      f"{time.strftime('%Y%m%d-%H%M%S')}")

    def progress(round_: int, rounds: int, metrics: dict) -> None:
        print(f"round {round_}/{rounds}: mean accuracy {metrics['accuracy']:.4f}", flush=True)

    result = run_experiment(config, out_dir=out, progress=None if args.quiet else progress)
    print(format_summary(result.summary))
    print(f"run directory: {out}")
    return 0


def cmd_params(args: argparse.Namespace, extra: list[str]) -> int:
    """Print every parameter, its default and its help."""
    from workbench.config import defaults

    values = defaults()
    for name, (_, f) in parameter_table().items():
        print(f"{name:24} {values[name]!r:34} {f.metadata['help']}")
    return 0


def cmd_costs(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the per-round cost table of the chosen methods and their ratios to FedLoRA."""
    import pandas as pd

    from workbench.tools.costs import cost_ratios, per_round_costs

    flat = flat_parameters(args, extra)
    build_config(flat)
    names = args.algorithms.split(",") if args.algorithms else None
    table = per_round_costs(flat, names, args.samples_per_client)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("Per client, one steady-state round (the 2nd); FLOPs = fwd+bwd matmul/conv, "
              "2 per multiply-add; bytes = numel x element size of what is sent.")
        print(table.to_string(index=False))
        print()
        print(cost_ratios(table).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def cmd_target(args: argparse.Namespace, extra: list[str]) -> int:
    """Print the cost to first reach a target mean accuracy for each finished run."""
    from workbench.core.results import cost_to_target, read_run

    runs = {}
    for run_dir in args.runs:
        flat, table = read_run(run_dir)
        label = flat["algorithm"] if flat["algorithm"] not in runs else str(run_dir)
        runs[label] = table
    table = cost_to_target(runs, args.target, args.reference)
    print(f"Cost to first reach mean accuracy >= {args.target} (sums over all clients up to that "
          f"round; NaN: not reached)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    """Run or resume a sweep; the report's path is the last line printed."""
    from workbench.lab.sweep import export_points, run_sweep

    report = run_sweep(args.spec, args.out, workers=args.workers, timeout=args.timeout)
    if args.html_points:
        for html in export_points(args.out):
            print(f"point notebook: {html}")
    print(report)
    return 0


COMMANDS = {"sweep": cmd_sweep, "run": cmd_run, "params": cmd_params, "costs": cmd_costs, "target": cmd_target}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; configuration errors exit with status 2 and a one-line message."""
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command not in ("run", "costs"):
            raise ConfigError(f"unexpected arguments {extra} for `{args.command}`")
        return COMMANDS[args.command](args, extra)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
