import pytest
import torch
from helpers import placed
from peft.tuners.lora import LoraLayer

from workbench.algorithms.fedlora.adapters import (
    adapter_disabled,
    adapter_parameters,
    adapter_state,
    inject_lora,
    load_adapter_state,
    private_parameters,
    set_trainable,
)
from workbench.core.models import build_model


def lora_model(name="cnn2", rank=4, alpha=8.0, seed=0):
    return inject_lora(build_model(name, 10, seed=0), ("head",), rank, alpha, seed)


def randomize_adapter(model, seed=1):
    """Put the adapter in a non-identity state (B ≠ 0)."""
    g = torch.Generator().manual_seed(seed)
    load_adapter_state(model, {k: torch.randn(v.shape, generator=g) for k, v in adapter_state(model).items()})


def test_peft_layer_wraps_the_head_and_starts_as_identity():
    plain = build_model("cnn2", 10, seed=0)
    model = lora_model()
    assert isinstance(model.head, LoraLayer)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), plain(x))  # B = 0
    state = adapter_state(model)
    assert {k: tuple(v.shape) for k, v in state.items()} == {"head.lora_A": (4, 500), "head.lora_B": (10, 4)}
    assert torch.count_nonzero(state["head.lora_B"]) == 0


def test_branch_is_scaled_alpha_over_r():
    model = lora_model(rank=2, alpha=6.0)
    randomize_adapter(model)
    z = torch.randn(5, 500)
    a, b = model.head.lora_A["default"].weight, model.head.lora_B["default"].weight
    expected = model.head.get_base_layer()(z) + (z @ a.T @ b.T) * (6.0 / 2)
    torch.testing.assert_close(model.head(z), expected)


def test_shared_state_round_trips_exactly_in_a_non_identity_state():
    source, target = lora_model(), lora_model("cnn4")
    randomize_adapter(source)
    load_adapter_state(target, adapter_state(source))
    for key, value in adapter_state(source).items():
        assert torch.equal(adapter_state(target)[key], value)
    z = torch.randn(3, 500)
    delta = lambda m: m.head(z) - m.head.get_base_layer()(z)
    torch.testing.assert_close(delta(source), delta(target))


def test_loading_refuses_wrong_keys_and_shapes():
    model = lora_model()
    with pytest.raises(KeyError, match="adapter keys"):
        load_adapter_state(model, {"head.lora_A": torch.zeros(4, 500)})
    with pytest.raises(ValueError, match="head.lora_B"):
        load_adapter_state(model, {"head.lora_A": torch.zeros(4, 500), "head.lora_B": torch.zeros(10, 5)})


def test_disabled_adapter_gives_local_output_and_keeps_grad_flags():
    model = lora_model()
    randomize_adapter(model)
    set_trainable(model, private=False, adapter=True)
    x = torch.randn(2, 3, 32, 32)
    with adapter_disabled(model):
        local = model(x)
    torch.testing.assert_close(local, model.head.get_base_layer()(model.features(x)))
    assert not torch.allclose(local, model(x))
    assert all(p.requires_grad for p in adapter_parameters(model).values())
    assert not any(p.requires_grad for p in private_parameters(model))


def test_shared_and_private_parameters_partition_the_model():
    model = lora_model()
    shared = adapter_parameters(model)
    assert len(shared) + len(private_parameters(model)) == len(list(model.parameters()))


def built_shapes(models, target):
    """(in, out) of one Linear layer of each built model: the shapes the placement's rule reads."""
    layers = {key: dict(model.named_modules())[target] for key, model in models.items()}
    return {key: {target: (layer.in_features, layer.out_features)} for key, layer in layers.items()}


def test_injection_refuses_heterogeneous_targets_naming_shapes():
    models = {"client 0 (cnn1)": build_model("cnn1", 10, 0), "client 2 (cnn3)": build_model("cnn3", 10, 0)}
    placed("head", lora_targets=("head",)).check_shapes(built_shapes(models, "head"))
    with pytest.raises(ValueError, match=r"'fc2'.*cnn1\): 2000→500.*cnn3\): 1000→500"):
        placed("head", lora_targets=("fc2",)).check_shapes(built_shapes(models, "fc2"))


def test_injection_fails_when_nothing_matches():
    with pytest.raises(ValueError, match="not Linear layers"):
        inject_lora(build_model("cnn1", 10, 0), ("conv1",), 4, 8.0, 0)
    with pytest.raises(ValueError, match="not Linear layers"):
        inject_lora(build_model("cnn1", 10, 0), ("classifier",), 4, 8.0, 0)
