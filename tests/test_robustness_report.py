"""The report's accuracy-under-attack figure, from a hand-made point summary."""

import pandas as pd
import pytest

from workbench.lab.report.robustness import robustness_figure, robustness_table


def summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "point": list("abcdef"),
            "algorithm": "fedlora",
            "seed": [0, 0, 0, 0, 1, 1],
            "aggregator": ["mean", "median"] * 3,
            "attack": ["none"] * 2 + ["scale"] * 4,
            "final_accuracy": [0.9, 0.88, 0.1, 0.85, 0.2, 0.83],
            "best_accuracy": 0.9,
            "refused": [0, 0, 1, 0, 2, 0],
        }
    )


def test_accuracy_per_attack_and_aggregator_is_the_mean_over_seeds():
    table = robustness_table(summary())
    scale = table[table["setting"] == "attack=scale"].set_index("aggregator")
    assert scale.loc["mean", "accuracy"] == pytest.approx(0.15)
    assert scale.loc["median", "accuracy"] == pytest.approx(0.84)
    assert scale.loc["mean", "refused"] == 3 and scale.loc["mean", "points"] == 2
    fig = robustness_figure(summary())
    assert [bar.name for bar in fig.data] == ["mean", "median"]
    assert list(fig.data[1].x) == ["attack=none", "attack=scale"]
    assert list(fig.data[1].y) == pytest.approx([0.88, 0.84])


def test_a_sweep_without_attacks_or_aggregators_gets_a_note():
    fig = robustness_figure(summary().drop(columns=["aggregator", "attack"]))
    assert not fig.data and "varies neither" in fig.layout.annotations[0].text
