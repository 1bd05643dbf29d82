"""User errors are messages: a probe of every parameter, and the CLI's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_type_hints

import pandas as pd
import pytest

from workbench.cli import main
from workbench.config import ConfigError, build_config, parameter_table
from workbench.core.errors import UserError
from workbench.core.run_files import write_run

ROOT = Path(__file__).resolve().parents[1]


def out_of_range(cls: type, field: Any) -> list[Any]:
    """Values just past each of a parameter's bounds, an unknown choice, a repeated list item,
    an empty string; an integer other than 0/1 for a flag."""
    kind, meta = get_type_hints(cls)[field.name], field.metadata
    choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    if kind is bool:
        return [2]
    if kind == tuple[str, ...]:
        return [f"{choices[0]},{choices[0]}" if meta.get("unique") else "nope", " "]
    if kind is str:
        return ["nope"] if choices else [" "]
    cases = []
    for key, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        if meta[key] is not None:
            bound = meta[key]
            cases.append(
                bound + step
                if key in ("ge", "le") and kind is int
                else bound - max(1, abs(bound))
                if key == "ge"
                else bound + max(1, abs(bound))
                if key == "le"
                else bound
            )
    return cases


WRONG_TYPE = {bool: "maybe", int: "1.5", float: "abc", str: 5, tuple[str, ...]: 5}


def probes() -> list[tuple[str, str, Any]]:
    """(parameter, 'out of range' or 'wrong type', value) for every parameter."""
    cases = []
    for name, (cls, field) in parameter_table().items():
        cases += [(name, "out of range", v) for v in out_of_range(cls, field)]
        cases.append((name, "wrong type", WRONG_TYPE[get_type_hints(cls)[field.name]]))
    return cases


def test_every_parameter_has_an_out_of_range_and_a_wrong_type_case():
    kinds: dict[str, set[str]] = {}
    for name, kind, _ in probes():
        kinds.setdefault(name, set()).add(kind)
    lacking = sorted(n for n in parameter_table() if kinds.get(n) != {"out of range", "wrong type"})
    assert not lacking, f"parameters without a range to probe (give them bounds): {lacking}"


@pytest.mark.parametrize("name, kind, value", probes())
def test_every_bad_value_is_refused_naming_the_parameter(name, kind, value):
    with pytest.raises(ConfigError, match=rf"parameter {name}\b"):
        build_config({name: value})


@pytest.mark.parametrize(
    "flat, fragment",
    [
        ({"seed": 2**32}, "must be <= 4294967295 (numpy and scikit-learn take seeds below 2**32)"),
        ({"lora_targets": "head,head", "algorithm": "fd"}, "names ['head'] more than once"),
        ({"rounds": 10**12}, "must be <= 100000 (far beyond any federated schedule"),
        ({"num_clients": 10**6}, "(each client needs a local test split, and CIFAR holds 10,000"),
        ({"malicious_clients": 1.5}, "malicious_clients=1.5 is out of range: give a fraction in [0, 1)"),
        ({"malicious_clients": 11}, "whole count from 1 to num_clients=10"),
        ({"aggregator": "krum"}, "choose from ['mean', 'norm_bounded', 'median', 'trimmed_mean']"),
        ({"data_dir": ""}, "parameter data_dir='' is empty"),
    ],
)
def test_validation_gaps_are_closed_with_the_reason(flat, fragment):
    with pytest.raises(ConfigError) as error:
        build_config(flat)
    assert fragment in str(error.value)


def workbench_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m workbench ARGS` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


@pytest.mark.slow
def test_the_cli_prints_one_message_and_exits_2_without_a_traceback(tmp_path):
    bad_seed = workbench_cli("run", "--seed", "4294967296", "--out", str(tmp_path / "a"))
    assert bad_seed.returncode == 2 and bad_seed.stdout == ""
    assert bad_seed.stderr.strip().startswith("error: parameter seed=4294967296 is out of range")
    assert "Traceback" not in bad_seed.stderr and len(bad_seed.stderr.splitlines()) == 1
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)  # a corrupt copy
    (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    no_data = workbench_cli(
        "run",
        "--dataset",
        "cifar10",
        "--data_dir",
        str(tmp_path / "cifar"),
        "--download",
        "false",
        "--out",
        str(tmp_path / "b"),
    )
    assert no_data.returncode == 2 and "Traceback" not in no_data.stderr
    assert "error: dataset 'cifar10' is unavailable in data_dir" in no_data.stderr
    assert not (tmp_path / "b").exists()


def test_debug_shows_the_traceback_instead():
    with pytest.raises(ConfigError, match="seed=4294967296"):
        main(["run", "--seed", "4294967296", "--debug"])


def test_ctrl_c_is_a_message_and_status_130_not_a_traceback(monkeypatch, capsys):
    import workbench.cli as cli

    def interrupted(args, extra):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "sweep", interrupted)
    assert main(["sweep", "spec.yaml", "--out", "x"]) == 130
    assert capsys.readouterr().err.startswith("interrupted: finished points")
    with pytest.raises(KeyboardInterrupt):
        main(["sweep", "spec.yaml", "--out", "x", "--debug"])


def test_runtime_user_errors_are_messages(tmp_path, capsys):
    empty_client = [
        "run",
        "--partition",
        "dirichlet",
        "--dirichlet_alpha",
        "0.01",
        "--num_clients",
        "100",
        "--out",
        str(tmp_path / "d"),
    ]
    assert main(empty_client) == 2
    assert "error: cannot partition digits: client" in capsys.readouterr().err
    other = build_config({"rank": 2, "rounds": 3}).to_flat()
    write_run(
        tmp_path / "taken",
        other,
        pd.DataFrame(columns=["round", "client", "accuracy", "train_flops", "bytes_up", "bytes_down"]),
    )
    assert main(["run", "--out", str(tmp_path / "taken"), "--rounds", "4"]) == 2
    err = capsys.readouterr().err
    assert "already holds results of other parameters (rank: 2 there, 4 here; rounds: 3 there, 4 here)" in err
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert "sweep spec" in capsys.readouterr().err
    assert main(["target", str(tmp_path), "--target", "0.5"]) == 2
    assert f"run directory {tmp_path} holds no results.csv" in capsys.readouterr().err


def test_a_notebook_shows_a_user_error_as_one_line():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell(
        "from workbench.config import build_config\nbuild_config({'seed': 2**32})", silent=True
    )
    assert isinstance(result.error_in_exec, UserError)
    assert result.error_in_exec._render_traceback_() == [
        "ConfigError: parameter seed=4294967296 is out of range: must be <= 4294967295 (numpy and "
        "scikit-learn take seeds below 2**32)"
    ]
