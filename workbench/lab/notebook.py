"""Glue for notebooks/fedlora.ipynb: its parameters cell, strict collection, running, tuning.

The parameters cell is generated from the config table, so the notebook, the CLI and sweeps
share names, defaults and help. Papermill only warns about unknown injected names; `collect`
refuses them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbench.config import ExperimentConfig, build_config, defaults, parameter_table

NOTEBOOK_OPTIONS: dict[str, tuple[Any, str]] = {
    "interactive": (
        True,
        "live tuner: each method's knobs and the preview size drive "
        "accuracy, FLOPs and bytes figures (JupyterLab); batch runs set False",
    ),
    "out_dir": ("", "run directory to write (sweeps set it); empty: keep results in memory"),
    "compare": (
        "",
        "comma-separated algorithms to run beside it on the same data, e.g. 'fedproto,lg_fedavg'",
    ),
    "trial": ("", "tune sets it: the Optuna trial this run reports validation accuracy to (JSON)"),
}


@dataclass(frozen=True)
class NotebookOptions:
    """Notebook-only switches (not part of an experiment's config)."""

    interactive: bool
    out_dir: str
    compare: tuple[str, ...]
    trial: str = ""  # a tuning trial's ticket (`workbench.lab.pruning`); empty: not a trial


def _literal(value: Any) -> tuple[str, str]:
    """(annotation, literal) of a default; tuples are written as comma-separated strings."""
    if isinstance(value, (list, tuple)):
        return "str", repr(",".join(value))
    return type(value).__name__, repr(value)


def parameters_source() -> str:
    """The source of the notebook's `parameters` cell: flat annotated literals with help."""
    lines = ["# Parameters (papermill: `papermill --help-notebook notebooks/fedlora.ipynb`)"]
    values = defaults()
    for name, (_, f) in parameter_table().items():
        kind, literal = _literal(values[name])
        lines.append(f"{name}: {kind} = {literal}  # {f.metadata['help']}")
    for name, (value, help_) in NOTEBOOK_OPTIONS.items():
        kind, literal = _literal(value)
        lines.append(f"{name}: {kind} = {literal}  # {help_}")
    return "\n".join(lines)


def _literal_value(value: Any) -> bool:
    """Whether a value could have come from a parameters cell (papermill injects literals)."""
    if isinstance(value, (list, tuple)):
        return all(_literal_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal_value(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def collect(namespace: Mapping[str, Any], before: set[str]) -> tuple[ExperimentConfig, NotebookOptions]:
    """Config and options from the names the parameters (and injected) cells defined.

    Objects that later cells made (`config`, `table`, figures, a tuner) are not parameters, so
    the parameters cell can be edited and re-run after a full run; a literal with an unknown
    name is refused (a misspelt injected parameter). Prefix a helper literal with `_`.
    """
    new = {
        k: v for k, v in namespace.items() if k not in before and not k.startswith("_") and _literal_value(v)
    }
    known = set(parameter_table()) | set(NOTEBOOK_OPTIONS)
    unknown = sorted(set(new) - known)
    if unknown:
        build_config({k: new[k] for k in unknown})  # raises with "did you mean" hints
    config = build_config({k: v for k, v in new.items() if k in parameter_table()})
    options = {k: new.get(k, default) for k, (default, _) in NOTEBOOK_OPTIONS.items()}
    compare = tuple(a for a in str(options["compare"]).split(",") if a.strip())
    for name in compare:
        build_config({**config.to_flat(), "algorithm": name.strip()})
    return config, NotebookOptions(
        bool(options["interactive"]),
        str(options["out_dir"]),
        tuple(a.strip() for a in compare),
        str(options["trial"]),
    )


def run(config: ExperimentConfig, options: NotebookOptions) -> pd.DataFrame:
    """Run the configured experiment and any compared algorithms; one combined table."""
    from workbench.core.diagnostics import format_warnings
    from workbench.core.summary import format_summary
    from workbench.loop.runner import run_experiment

    tables = []
    for name in (config.run.algorithm, *options.compare):
        run_config = config if name == config.run.algorithm else config.replace(algorithm=name)
        progress = None
        if options.trial and name == config.run.algorithm:  # a tuning trial reports to Optuna
            from workbench.lab.pruning import TrialReporter

            progress = TrialReporter(run_config, options.trial)
        out_dir = run_directory(options.out_dir, name, config)
        result = run_experiment(run_config, out_dir=out_dir, progress=progress)
        print(f"[{name}]\n{format_summary(result.summary, warnings=False)}\n", flush=True)
        for line in format_warnings(result.summary["warnings"]):  # stderr: JupyterLab shades it
            print(f"[{name}] {line}", file=sys.stderr, flush=True)
        tables.append(result.table)
    return pd.concat(tables, ignore_index=True)


def run_directory(out_dir: str, name: str, config: ExperimentConfig) -> str | None:
    """Where a run of `name` is written: out_dir for the main algorithm, out_dir-NAME beside it
    for a compared one, nowhere when out_dir is empty."""
    if not out_dir:
        return None
    return out_dir if name == config.run.algorithm else f"{out_dir}-{name}"
