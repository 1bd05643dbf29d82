"""Robust aggregation rules against hand-computed values, and their shared validation."""

import math

import pytest
import torch

from workbench.core import facts
from workbench.core.aggregation import (
    AGGREGATORS,
    CLASSWISE_AGGREGATORS,
    InvalidUpdateError,
    Rule,
    aggregate_by,
    aggregate_classwise_by,
    classwise_average,
    classwise_median,
    classwise_norm_bounded,
    classwise_trimmed_mean,
    median,
    norm_bounded,
    trimmed_mean,
    weighted_average,
)


def vec(*values):
    return torch.tensor(values, dtype=torch.float32)


# ---- norm_bounded -------------------------------------------------------------------------
def test_norm_bounded_clips_the_distance_from_the_center_then_averages():
    center = {"a": vec(1.0, 1.0)}
    updates = {
        0: {"a": vec(4.0, 5.0)},  # u = (3, 4): ‖u‖ = 5 → clipped to 2: (1.2, 1.6)
        1: {"a": vec(1.0, 2.0)},
    }  # u = (0, 1): within the bound, unchanged
    out = norm_bounded(updates, {0: 1.0, 1: 3.0}, center, max_norm=2.0, center=center)
    # (1·(2.2, 2.6) + 3·(1, 2)) / 4
    torch.testing.assert_close(out["a"], vec(1.3, 2.15))


def test_norm_bounded_measures_one_norm_over_all_floating_tensors():
    updates = {
        0: {"a": vec(3.0, 0.0), "b": vec(4.0), "n": torch.tensor([7])},  # ‖(3, 0, 4)‖ = 5
        1: {"a": vec(0.0, 0.0), "b": vec(0.0), "n": torch.tensor([1])},
    }
    out = norm_bounded(updates, {0: 1.0, 1: 1.0}, max_norm=2.5)  # center None: zeros
    torch.testing.assert_close(out["a"], vec(0.75, 0.0))  # (1.5 + 0) / 2
    torch.testing.assert_close(out["b"], vec(1.0))  # (2 + 0) / 2
    assert out["n"].tolist() == [4]  # integers are averaged, never clipped


def test_norm_bounded_equals_the_weighted_mean_when_nothing_exceeds_the_bound():
    updates = {0: {"a": vec(0.1, 0.2)}, 1: {"a": vec(-0.3, 0.4)}}
    weights = {0: 2.0, 1: 1.0}
    assert torch.equal(
        norm_bounded(updates, weights, max_norm=1.0)["a"], weighted_average(updates, weights)["a"]
    )


# ---- median and trimmed mean -------------------------------------------------------------
def test_median_is_coordinate_wise_and_averages_the_middle_pair_for_even_counts():
    odd = {0: {"a": vec(1.0, 10.0)}, 1: {"a": vec(5.0, -2.0)}, 2: {"a": vec(3.0, 7.0)}}
    weights = {0: 100.0, 1: 1.0, 2: 1.0}  # one vote per client: weights do not move it
    torch.testing.assert_close(median(odd, weights)["a"], vec(3.0, 7.0))
    even = {**odd, 3: {"a": vec(100.0, 0.0)}}
    torch.testing.assert_close(median(even, {**weights, 3: 1.0})["a"], vec(4.0, 3.5))


def test_median_of_integer_tensors_is_rounded_into_their_dtype():
    updates = {k: {"n": torch.tensor([v])} for k, v in enumerate((1, 2, 5, 100))}
    out = median(updates, dict.fromkeys(updates, 1.0))["n"]
    assert out.dtype == torch.int64 and out.tolist() == [4]  # (2 + 5) / 2 = 3.5 → 4


@pytest.mark.parametrize("trim, expected", [(0.0, 22.0), (0.1, 22.0), (0.2, 3.0), (0.4, 3.0)])
def test_trimmed_mean_drops_floor_trim_k_values_at_each_end(trim, expected):
    updates = {k: {"a": vec(v, -v)} for k, v in enumerate((4.0, 100.0, 1.0, 3.0, 2.0))}
    out = trimmed_mean(updates, dict.fromkeys(updates, 1.0), trim=trim)["a"]
    torch.testing.assert_close(out, vec(expected, -expected))  # ⌊0.1·5⌋ = 0, ⌊0.4·5⌋ = 2


def test_trim_must_leave_values_in_the_middle():
    updates = {0: {"a": vec(1.0)}}
    for trim in (-0.1, 0.5, math.nan):
        with pytest.raises(ValueError, match="trim="):
            trimmed_mean(updates, {0: 1.0}, trim=trim)
    with pytest.raises(ValueError, match="max_norm="):
        norm_bounded(updates, {0: 1.0}, max_norm=0.0)


# ---- validation is shared with weighted_average ---------------------------------------------
@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_rule_refuses_a_bad_update_naming_the_client(name):
    good = {"a": vec(1.0, 2.0)}
    bad = {"a": vec(1.0, math.inf)}
    with pytest.raises(InvalidUpdateError, match="client 7, tensor 'a'"):
        aggregate_by(Rule(name), {3: good, 7: bad}, {3: 1.0, 7: 1.0}, reference=good, center=good)
    with pytest.raises(ValueError, match="positive"):
        aggregate_by(Rule(name), {3: good}, {3: 0.0})
    with pytest.raises(ValueError, match="weights given"):
        aggregate_by(Rule(name), {3: good}, {4: 1.0})
    with pytest.raises(ValueError, match="no updates"):
        aggregate_by(Rule(name), {}, {})


def test_dispatch_by_name_calls_the_named_rule_with_its_knobs():
    updates = {k: {"a": vec(v)} for k, v in enumerate((0.0, 1.0, 2.0, 3.0, 50.0))}
    weights = dict.fromkeys(updates, 1.0)
    assert aggregate_by(Rule("mean"), updates, weights)["a"].item() == pytest.approx(11.2)
    assert aggregate_by(Rule("median"), updates, weights)["a"].item() == 2.0
    assert aggregate_by(Rule("trimmed_mean", trim=0.2), updates, weights)["a"].item() == 2.0
    center = {"a": vec(0.0)}
    # each clipped to |u| ≤ 1: (0 + 1 + 1 + 1 + 1) / 5
    assert aggregate_by(Rule("norm_bounded", max_norm=1.0), updates, weights, center=center)[
        "a"
    ].item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="aggregator='krum' is unknown; choose from"):
        aggregate_by(Rule("krum"), updates, weights)
    assert tuple(AGGREGATORS) == tuple(CLASSWISE_AGGREGATORS) == facts.AGGREGATORS  # config's choices


# ---- class-wise variants -------------------------------------------------------------------
def tables():
    """Three clients, 2 classes, 1-d rows; client 0 lacks class 1 (its row there is ignored)."""
    return {
        0: {"values": torch.tensor([[1.0], [9.0]]), "counts": torch.tensor([1, 0])},
        1: {"values": torch.tensor([[3.0], [5.0]]), "counts": torch.tensor([2, 4])},
        2: {"values": torch.tensor([[10.0], [7.0]]), "counts": torch.tensor([1, 1])},
    }


def test_classwise_median_uses_only_the_clients_holding_each_class():
    out = classwise_median(tables())
    torch.testing.assert_close(out["values"], torch.tensor([[3.0], [6.0]]))  # med(1,3,10); (5+7)/2
    assert out["counts"].tolist() == [4, 5]


def test_classwise_trimmed_mean_trims_per_class_by_its_holders():
    out = classwise_trimmed_mean(tables(), trim=0.34)  # class 0: drop ⌊1.02⌋ = 1; class 1: 0
    torch.testing.assert_close(out["values"], torch.tensor([[3.0], [6.0]]))
    out = classwise_trimmed_mean(tables(), trim=0.2)  # nothing dropped: plain means
    torch.testing.assert_close(out["values"], torch.tensor([[14.0 / 3], [6.0]]))


def test_classwise_norm_bounded_clips_each_row_then_weights_by_counts():
    out = classwise_norm_bounded(tables(), max_norm=2.0)  # rows clipped to |row| ≤ 2
    # class 0: (1·1 + 2·2 + 1·2) / 4; class 1: (4·2 + 1·2) / 5
    torch.testing.assert_close(out["values"], torch.tensor([[1.75], [2.0]]))
    center = torch.tensor([[3.0], [6.0]])  # distances: class 0 (−2, 0, 7), class 1 (−1, 1)
    out = classwise_norm_bounded(tables(), max_norm=2.0, center=center)
    # class 0: (1·1 + 2·3 + 1·5) / 4 = 3; class 1: (4·5 + 1·7) / 5 = 5.4
    torch.testing.assert_close(out["values"], torch.tensor([[3.0], [5.4]]))
    big = classwise_norm_bounded(tables(), max_norm=100.0)
    torch.testing.assert_close(big["values"], classwise_average(tables())["values"])


@pytest.mark.parametrize("name", sorted(CLASSWISE_AGGREGATORS))
def test_every_classwise_rule_refuses_negative_counts_and_unknown_classes_stay_zero(name):
    bad = {**tables(), 2: {"values": torch.tensor([[1.0], [1.0]]), "counts": torch.tensor([1, -1])}}
    with pytest.raises(InvalidUpdateError, match="client 2, tensor 'counts'"):
        aggregate_classwise_by(Rule(name), bad)
    absent = {
        k: {"values": v["values"], "counts": v["counts"] * torch.tensor([1, 0])} for k, v in tables().items()
    }
    out = aggregate_classwise_by(Rule(name, max_norm=1.0, trim=0.2), absent)
    assert out["values"][1].tolist() == [0.0] and out["counts"].tolist() == [4, 0]
