"""The validation split: held out of each client's training data, disjoint from its test split,
evaluated and recorded beside test accuracy; val_fraction=0 is the behaviour before it existed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.config import ConfigError, build_config, stored_config
from workbench.core.partition import hold_out, validation_count, validation_splits
from workbench.core.results import Row, to_frame
from workbench.core.summary import summarize
from workbench.loop.rounds import make_clients
from workbench.loop.runner import run_experiment


def _rows_as_bytes(x: torch.Tensor) -> set[bytes]:
    """Each image as bytes, to compare samples across splits by content."""
    return {bytes(img.numpy().tobytes()) for img in x}


def test_validation_is_held_out_of_training_and_disjoint_from_test(tiny) -> None:
    config = build_config({**tiny, "val_fraction": 0.2})
    clients, _ = make_clients(config, torch.device("cpu"))
    without, _ = make_clients(build_config({**tiny, "val_fraction": 0.0}), torch.device("cpu"))
    for c, whole in zip(clients, without):
        d = c.data
        assert d.num_val == validation_count(whole.data.num_train, 0.2) > 0
        assert d.num_train + d.num_val == whole.data.num_train  # carved from training, nothing lost
        val, test, train = _rows_as_bytes(d.val_x), _rows_as_bytes(d.test_x), _rows_as_bytes(d.train_x)
        assert not val & test, "a sample is in both the validation and the test split"
        assert not val & train, "a validation sample is also trained on"
        assert torch.equal(d.test_x, whole.data.test_x)  # the test split does not move
        # stratified: the validation labels are the training labels' classes
        assert set(d.val_y.tolist()) <= set(whole.data.train_y.tolist())


def test_hold_out_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])  # (100,)
    idx = np.arange(100)
    train, val = hold_out(idx, labels, 0.1, np.random.default_rng(3))
    assert len(val) == 10 and np.bincount(labels[val], minlength=4).tolist() == [4, 3, 2, 1]
    assert not set(train) & set(val) and len(train) + len(val) == 100
    again, _ = hold_out(idx, labels, 0.1, np.random.default_rng(3))
    assert np.array_equal(train, again)


def test_a_client_too_small_for_validation_is_refused_by_index() -> None:
    parts = [np.arange(10), np.array([10])]
    with pytest.raises(ValueError, match="client 1 holds 1 training sample"):
        validation_splits(parts, np.zeros(11, np.int64), 0.1, seed=0)
    kept = validation_splits(parts, np.zeros(11, np.int64), 0.0, seed=0)
    assert [len(v) for _, v in kept] == [0, 0]


@pytest.mark.parametrize("value", [-0.1, 0.6, "lots"])
def test_val_fraction_out_of_bounds_is_refused(value) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        build_config({"val_fraction": value})


def test_a_stored_config_from_before_validation_had_none() -> None:
    old = build_config({}).to_flat()
    del old["val_fraction"]
    assert stored_config(old)["val_fraction"] == 0.0


@pytest.mark.slow
def test_runs_record_validation_and_test_accuracy_separately(tiny) -> None:
    result = run_experiment(build_config({**tiny, "val_fraction": 0.2}))
    frame = result.table
    assert frame["val_accuracy"].notna().all() and (frame["num_val"] > 0).all()
    assert not np.allclose(frame["val_accuracy"], frame["accuracy"])  # two splits, two numbers
    assert result.summary["final_val_accuracy"] == pytest.approx(
        frame[frame["round"] == frame["round"].max()]["val_accuracy"].mean()
    )


@pytest.mark.slow
def test_val_fraction_zero_trains_on_every_sample_as_before(tiny) -> None:
    config = build_config({**tiny, "val_fraction": 0.0})
    result = run_experiment(config)
    assert result.table["val_accuracy"].isna().all() and (result.table["num_val"] == 0).all()
    assert result.summary["final_val_accuracy"] is None
    clients, _ = make_clients(config, torch.device("cpu"))
    assert result.table.groupby("client")["num_train"].first().tolist() == [c.data.num_train for c in clients]


def test_old_tables_without_validation_summarize() -> None:
    row = Row(1, 0, "cnn1", "fedavg", True, 0.5, 1.0, 1.0, 10, 1, 1, 10, 5)
    frame = to_frame([row]).drop(columns=["val_accuracy", "val_loss", "num_val"])
    summary = summarize(frame)
    assert summary["final_accuracy"] == 0.5 and summary["best_val_accuracy"] is None
    assert isinstance(frame, pd.DataFrame)
