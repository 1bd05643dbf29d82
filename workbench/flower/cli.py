"""`python -m workbench.flower ...`: Flower simulation runs and TLS material for deployments.

  simulate --out DIR [--cpus-per-client 1] --rank 4 ...   Flower simulation engine (Ray)
  certs DIR                                               CA + server certificate (loopback)
  node-keys DIR NAME [NAME ...]                           SuperNode authentication key pairs

Experiment flags are the workbench's own (`python -m workbench params` lists them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.config import ConfigError, build_config
from workbench.core.errors import UserError
from workbench.flags import add_parameters, flat_parameters


def parser() -> argparse.ArgumentParser:
    """The Flower sub-commands."""
    root = argparse.ArgumentParser(prog="python -m workbench.flower", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run one experiment on Flower's simulation engine")
    sim.add_argument("--out", type=Path, required=True, help="run directory to write")
    sim.add_argument(
        "--cpus-per-client",
        type=float,
        default=1.0,
        help="Ray CPUs per virtual SuperNode (how many clients train at once)",
    )
    sim.add_argument("--timeout", type=float, default=3600.0, help="seconds per round trip")
    sim.add_argument("--verbose", action="store_true", help="Flower's DEBUG log")
    add_parameters(sim)
    certs = commands.add_parser(
        "certs", help="a throw-away CA and server certificate for 127.0.0.1/localhost (testing only)"
    )
    certs.add_argument("folder", type=Path)
    keys = commands.add_parser("node-keys", help="EC key pairs for SuperNode authentication")
    keys.add_argument("folder", type=Path)
    keys.add_argument("names", nargs="+", help="one key pair per name, e.g. node0 node1")
    return root


def cmd_simulate(args: argparse.Namespace, extra: list[str]) -> int:
    """Run, write the run directory, print its summary."""
    from workbench.core.diagnostics import format_warnings
    from workbench.core.summary import format_summary
    from workbench.flower.simulation import simulate

    config = build_config(flat_parameters(args, extra))
    result = simulate(
        config, args.out, cpus_per_client=args.cpus_per_client, timeout=args.timeout, verbose=args.verbose
    )
    print(format_summary(result.summary, warnings=False))
    print(f"run directory: {result.run_dir}")
    for line in format_warnings(result.summary["warnings"]):  # last: where a user reads
        print(line)
    return 0


def cmd_certs(args: argparse.Namespace, extra: list[str]) -> int:
    """Write the certificates and print where they are."""
    from workbench.flower.certs import make_certificates

    for role, path in make_certificates(args.folder).items():
        print(f"{role:12} {path}")
    return 0


def cmd_node_keys(args: argparse.Namespace, extra: list[str]) -> int:
    """Write one key pair per name and print where they are."""
    from workbench.flower.certs import make_node_keys

    for name in args.names:
        private, public = make_node_keys(args.folder, name)
        print(f"{name:12} private {private}  public {public}")
    return 0


COMMANDS = {"simulate": cmd_simulate, "certs": cmd_certs, "node-keys": cmd_node_keys}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors (a parameter, the data, a partition, a stopped run) exit with
    status 2 and a one-line message, as `python -m workbench run` does."""
    args, extra = parser().parse_known_args(argv)
    try:
        if extra and args.command != "simulate":
            raise ConfigError(f"unexpected arguments {extra} for `{args.command}`")
        return COMMANDS[args.command](args, extra)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
