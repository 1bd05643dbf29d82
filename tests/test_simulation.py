import pandas as pd
import pytest

from workbench.cli import main
from workbench.config import build_config
from workbench.core.run_files import read_run
from workbench.loop.runner import run_experiment
from workbench.loop.server_round import sample_clients

COLUMNS = [
    "round",
    "client",
    "model",
    "algorithm",
    "accuracy",
    "loss",
    "train_flops",
    "bytes_up",
    "bytes_down",
]


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 4])
def test_each_participant_uploads_exactly_4_r_510_bytes(tiny, rank):
    # one rate for A and B: at rank 1 LoRA+'s default 16 diverges within this run's two rounds
    # (B's step grows as alpha/r; lora_plus_ratio's help says so), and bytes do not depend on it
    result = run_experiment(build_config({**tiny, "rank": rank, "fraction": 0.5, "lora_plus_ratio": 1}))
    table = result.table
    took_part = table[table["participated"]]
    assert len(took_part) == 2 * 2  # 2 of 4 clients in each of 2 rounds
    assert (took_part["bytes_up"] == 4 * rank * (500 + 10)).all()
    assert (took_part["bytes_down"] == 4 * rank * (500 + 10)).all()
    assert (took_part["train_flops"] > 0).all()
    idle = table[~table["participated"]]
    assert (idle[["train_flops", "bytes_up", "bytes_down"]] == 0).all().all()
    sampled = {r: sample_clients(4, 0.5, 0, r) for r in (1, 2)}
    assert set(zip(took_part["round"], took_part["client"])) == {
        (r, c) for r, cs in sampled.items() for c in cs
    }


@pytest.mark.slow
def test_same_config_and_seed_give_identical_tables(tiny):
    config = build_config(tiny)
    first, second = run_experiment(config).table, run_experiment(config).table
    pd.testing.assert_frame_equal(first, second)
    other = run_experiment(config.replace(seed=1)).table
    assert not first["accuracy"].equals(other["accuracy"])


@pytest.mark.slow
def test_run_directory_holds_config_and_table(tiny, tmp_path):
    config = build_config(tiny)
    result = run_experiment(config, out_dir=tmp_path / "run")
    flat, table = read_run(tmp_path / "run")
    assert build_config(flat) == config
    assert set(COLUMNS) <= set(table.columns)
    assert len(table) == 4 * 2 and sorted(table["round"].unique()) == [1, 2]
    assert list(table["model"][:4]) == ["cnn1", "cnn2", "cnn3", "cnn4"]
    pd.testing.assert_frame_equal(table, result.table, check_dtype=False)


@pytest.mark.slow
def test_eval_every_keeps_total_costs(tiny):
    every = run_experiment(build_config({**tiny, "rounds": 3}))
    sparse = run_experiment(build_config({**tiny, "rounds": 3, "eval_every": 2}))
    assert sorted(sparse.table["round"].unique()) == [2, 3]
    for column in ("train_flops", "bytes_up", "bytes_down"):
        assert sparse.table[column].sum() == every.table[column].sum()
    assert sparse.summary["final_accuracy"] == every.summary["final_accuracy"]


@pytest.mark.slow
def test_cli_runs_and_prints_a_summary(tiny, tmp_path, capsys):
    args = [f"--{k}={v}" for k, v in tiny.items()] + ["--out", str(tmp_path / "cli"), "--quiet"]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "mean accuracy: final" in out and "training FLOPs" in out and "bytes: up" in out
    assert (tmp_path / "cli" / "results.csv").exists()


@pytest.mark.parametrize(
    "flag",
    [
        ["--rank", "0"],
        ["--mu", "2"],
        ["--fraction", "0"],
        ["--classes_per_client", "12"],
        ["--dataset", "svhn"],
        ["--algorithm", "nope"],
        ["--rounds", "-1"],
        ["--lr", "0"],
        ["--batch_size", "0"],
        ["--model_epochs", "0"],
        ["--bogus", "1"],
    ],
)
def test_cli_refuses_bad_values_before_any_work(flag, tmp_path, capsys, monkeypatch):
    import workbench.loop.rounds as rounds

    monkeypatch.setattr(rounds, "load_dataset", lambda *a, **k: pytest.fail("data was loaded"))
    assert main(["run", *flag, "--out", str(tmp_path / "x")]) == 2
    assert flag[0][2:] in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cached_evaluations_equal_fresh_ones_and_skip_idle_clients(tiny, monkeypatch):
    from workbench.algorithms.fedlora import FedLoRA

    config = build_config({**tiny, "rounds": 3, "fraction": 0.25})
    calls = []
    original = FedLoRA.evaluation_probe  # one per evaluation pass of a client
    monkeypatch.setattr(FedLoRA, "evaluation_probe", lambda self, c: calls.append(c.cid) or original(self, c))
    cached = run_experiment(config).table
    cached_calls = len(calls)
    monkeypatch.setattr(FedLoRA, "evaluation_is_local", False)
    calls.clear()
    fresh = run_experiment(config).table
    pd.testing.assert_frame_equal(cached, fresh)
    assert cached_calls < len(calls)  # idle clients were not evaluated again
