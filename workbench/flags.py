"""Command-line flags from the parameter table: one `--name value` per flat parameter.

The workbench's CLI and Flower's share them, so every command accepts exactly the names and
values `build_config` does.
"""

from __future__ import annotations

import argparse

from workbench.config import ConfigError, parameter_table


def add_parameters(parser: argparse.ArgumentParser) -> None:
    """One `--name` flag per config parameter; values are parsed by build_config, not argparse."""
    group = parser.add_argument_group("experiment parameters (see `python -m workbench params`)")
    for name, (_, f) in parameter_table().items():
        group.add_argument(
            f"--{name}", dest=f"param_{name}", default=argparse.SUPPRESS, metavar="V", help=f.metadata["help"]
        )


def flat_parameters(args: argparse.Namespace, extra: list[str]) -> dict[str, str]:
    """The parameters given on the command line; unknown `--name value` pairs are kept so that
    build_config refuses them with its suggestions."""
    flat = {k.removeprefix("param_"): v for k, v in vars(args).items() if k.startswith("param_")}
    if len(extra) % 2 or not all(flag.startswith("--") for flag in extra[::2]):
        raise ConfigError(f"cannot read arguments {extra}: expected --name value pairs")
    flat.update({flag[2:]: value for flag, value in zip(extra[::2], extra[1::2])})
    return flat
