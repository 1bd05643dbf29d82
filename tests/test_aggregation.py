import pytest
import torch

from workbench.core.aggregation import InvalidUpdateError, validate_update, weighted_average


def test_weighted_average_by_sample_counts_matches_hand_computation():
    updates = {
        0: {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])},
        1: {"a": torch.tensor([4.0, 8.0]), "b": torch.tensor([[3.0]])},
    }
    out = weighted_average(updates, {0: 1.0, 1: 2.0})
    torch.testing.assert_close(out["a"], torch.tensor([3.0, 6.0]))  # (1·1 + 2·4)/3, (2 + 16)/3
    torch.testing.assert_close(out["b"], torch.tensor([[2.0]]))
    assert out["a"].dtype == torch.float32


def good():
    return {"a": torch.zeros(2, 3), "b": torch.ones(4)}


@pytest.mark.parametrize(
    "update, tensor, fragment",
    [
        ({"a": torch.zeros(2, 3)}, None, "missing ['b']"),
        ({**good(), "c": torch.zeros(1)}, None, "unexpected ['c']"),
        ({"a": torch.zeros(3, 2), "b": torch.ones(4)}, "a", "shape (3, 2) != (2, 3)"),
        ({"a": torch.zeros(2, 3, dtype=torch.float64), "b": torch.ones(4)}, "a", "dtype"),
        ({"a": torch.zeros(2, 3), "b": torch.tensor([1.0, float("nan"), 0, 0])}, "b", "NaN"),
        ({"a": torch.zeros(2, 3), "b": torch.tensor([1.0, float("inf"), 0, 0])}, "b", "infinity"),
    ],
)
def test_bad_update_is_refused_naming_client_and_tensor(update, tensor, fragment):
    global_state = good()
    before = {k: v.clone() for k, v in global_state.items()}
    with pytest.raises(InvalidUpdateError) as error:
        weighted_average({3: good(), 7: update}, {3: 1.0, 7: 1.0}, reference=global_state)
    assert "client 7" in str(error.value) and fragment in str(error.value)
    assert error.value.client == 7 and error.value.tensor == tensor
    if tensor:
        assert f"tensor {tensor!r}" in str(error.value)
    assert all(torch.equal(global_state[k], before[k]) for k in before)


def test_weights_must_match_updates_and_be_positive():
    with pytest.raises(ValueError, match="weights given"):
        weighted_average({0: good()}, {1: 1.0})
    with pytest.raises(ValueError, match="positive"):
        weighted_average({0: good()}, {0: 0.0})
    with pytest.raises(ValueError, match="no updates"):
        weighted_average({}, {})
    validate_update(0, good(), good())


def test_classwise_average_weights_each_class_by_its_counts():
    from workbench.core.aggregation import classwise_average

    a = {"values": torch.tensor([[1.0, 1.0], [5.0, 0.0], [9.0, 9.0]]), "counts": torch.tensor([1, 3, 0])}
    b = {"values": torch.tensor([[4.0, 7.0], [0.0, 0.0], [0.0, 0.0]]), "counts": torch.tensor([2, 0, 0])}
    out = classwise_average({0: a, 1: b})
    torch.testing.assert_close(out["values"], torch.tensor([[3.0, 5.0], [5.0, 0.0], [0.0, 0.0]]))
    assert out["counts"].tolist() == [3, 3, 0]
    with pytest.raises(InvalidUpdateError, match="client 1"):
        classwise_average({0: a, 1: {**b, "counts": torch.tensor([1, -1, 0])}})
