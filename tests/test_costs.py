import math

import pandas as pd
import pytest
from test_flops import analytic_step

from workbench.cli import main
from workbench.core.summary import cost_to_target
from workbench.core.zoo import ZOO
from workbench.tools.costs import cost_ratios, per_round_costs

FLAT = {"dataset": "digits", "batch_size": 16, "augment": False}


@pytest.mark.slow
def test_per_round_costs_are_the_simulations_own_counts():
    table = per_round_costs(FLAT, ["fedlora", "standalone", "lg_fedavg", "fd"], samples_per_client=16)
    fedlora = table[table["algorithm"] == "fedlora"].set_index("model")
    assert list(fedlora.index) == sorted(ZOO)  # one client per architecture
    for name in ZOO:  # one step per phase at 16 samples, batch 16
        expected = analytic_step(name, "model", 0.5, 16) + analytic_step(name, "adapter", 0.5, 16)
        assert fedlora.loc[name, "train_flops"] == expected
    assert (fedlora["bytes_up"] == 4 * 4 * 510).all() and (fedlora["bytes_down"] == 4 * 4 * 510).all()
    by = table.groupby("algorithm")
    assert by["bytes_up"].max()["standalone"] == 0
    assert set(by["bytes_up"].unique()["lg_fedavg"]) == {4 * (500 * 10 + 10)}
    fd = table[table["algorithm"] == "fd"]
    assert (fd["bytes_up"] == 4 * 100 + 8 * 10).all() and (fd["bytes_down"] == 4 * 100 + 10).all()
    ratios = cost_ratios(table).set_index("algorithm")
    assert ratios.loc["fedlora", "flops_vs_fedlora"] == 1.0
    assert ratios.loc["standalone", "flops_vs_fedlora"] < 1.0
    assert ratios.loc["lg_fedavg", "bytes_vs_fedlora"] == pytest.approx(20040 / 8160)


def test_per_round_costs_refuse_unknown_algorithms_and_sizes():
    with pytest.raises(ValueError, match="'fedsgd'"):
        per_round_costs(FLAT, ["fedsgd"])
    with pytest.raises(ValueError, match="samples_per_client=0"):
        per_round_costs(FLAT, ["fedlora"], samples_per_client=0)


def run_table(accuracies, flops=10, up=3, down=2):
    """Two clients per round with the given mean accuracy per round."""
    rows = [
        {"round": r, "client": c, "accuracy": a, "train_flops": flops, "bytes_up": up, "bytes_down": down}
        for r, a in enumerate(accuracies, 1)
        for c in (0, 1)
    ]
    return pd.DataFrame(rows)


def test_cost_to_target_by_hand():
    table = cost_to_target(
        {
            "fedlora": run_table([0.5, 0.8, 0.9]),
            "fml": run_table([0.7, 0.85, 0.6], flops=40, up=100),
            "fd": run_table([0.1, 0.2, 0.3]),
        },
        target=0.8,
    ).set_index("run")
    assert table.loc["fedlora", "round"] == 2 and table.loc["fml", "round"] == 2
    assert table.loc["fedlora", "cum_train_flops"] == 2 * 2 * 10
    assert table.loc["fedlora", "cum_bytes"] == 2 * 2 * (3 + 2)
    assert table.loc["fml", "flops_vs_fedlora"] == 4.0
    assert table.loc["fml", "bytes_vs_fedlora"] == pytest.approx((100 + 2) / 5)
    assert not table.loc["fd", "reached"] and math.isnan(table.loc["fd", "cum_bytes"])
    with pytest.raises(ValueError, match="target=1.5"):
        cost_to_target({}, target=1.5)


@pytest.mark.slow
def test_costs_and_target_commands(tiny, tmp_path, capsys):
    csv = tmp_path / "costs.csv"
    assert (
        main(
            [
                "costs",
                "--algorithms",
                "fedlora,standalone",
                "--samples_per_client",
                "16",
                "--batch_size",
                "16",
                "--csv",
                str(csv),
            ]
        )
        == 0
    )
    assert set(pd.read_csv(csv)["algorithm"]) == {"fedlora", "standalone"}
    assert "flops_vs_fedlora" in capsys.readouterr().out
    args = [f"--{k}={v}" for k, v in tiny.items()] + ["--quiet"]
    assert main(["run", *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", *args, "--algorithm", "standalone", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["target", str(tmp_path / "a"), str(tmp_path / "b"), "--target", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "fedlora" in out and "standalone" in out and "rounds_vs_fedlora" in out
    target = ["target", str(tmp_path / "a"), str(tmp_path / "b"), "--target", "0.05"]
    assert main([*target, "--reference", "standalone"]) == 0
    assert "rounds_vs_standalone" in capsys.readouterr().out
    assert main([*target, "--reference", "fedavg"]) == 2
    assert (
        "--reference 'fedavg' is not among the runs' labels: ['fedlora', 'standalone']"
        in capsys.readouterr().err
    )
    assert main(["costs", "--algorithms", "fedlora,fd", "--reference", "fml"]) == 2  # before any round
    assert "--reference 'fml' is not among --algorithms: ['fedlora', 'fd']" in capsys.readouterr().err
