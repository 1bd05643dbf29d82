"""Adapter placements: the torch-free description agrees with the built adapters, refusals."""

import pytest
import torch
from helpers import placed

from workbench.algorithms.fedlora.adapters import (
    adapter_disabled,
    adapter_parameters,
    adapter_state,
    load_adapter_state,
    private_parameters,
)
from workbench.algorithms.fedlora.placements import PLACEMENTS
from workbench.core.accounting import payload_bytes
from workbench.core.models import build_model
from workbench.core.params import ConfigError
from workbench.core.zoo import ZOO

CNN_PLACEMENTS = tuple(p for p in PLACEMENTS if p != "attention")  # attention: ViTs only (test_families)


def adapted(placement, name="cnn3", rank=4, seed=1):
    """The placement's adapter as PEFT draws LoRA (B = 0), scaled α/r with α = 8."""
    at = placed(placement, rank, lora_alpha=8.0, use_rslora=False, adapter_init="lora")
    return at.attach(build_model(name, 10, seed=0), seed)


def perturb(model, seed=3):
    """A non-identity state: every adapter factor (shared or kept) moved off its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_built_adapter_matches_its_description_and_bytes(placement, name):
    model = adapted(placement, name, rank=3)
    factors = placed(placement, 3).factors(name, 10)
    built = {k: tuple(p.shape) for k, p in adapter_parameters(model).items()}
    assert built == {k: shape for k, (shape, _) in factors.items()}
    assert set(adapter_state(model)) == {k for k, (_, shared) in factors.items() if shared}
    assert payload_bytes(adapter_state(model)) == 4 * placed(placement, 3).shared_numel(name, 10)


def test_shared_bytes_per_placement_are_the_factor_sizes():
    r, c = 4, 10
    assert placed("head", r).shared_numel("cnn1", c) == r * 500 + c * r
    assert placed("fc2", r).shared_numel("cnn1", c) == 500 * r  # A (r×fc1) stays on the client
    assert placed("parallel", r).shared_numel("cnn2", c) == r * 3072 + 500 * r
    assert placed("parallel_logits", r).shared_numel("cnn5", c) == r * 3072 + c * r


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_adapter_starts_as_identity_and_shared_part_is_the_same_on_every_model(placement):
    x = torch.randn(4, 3, 32, 32)
    plain, model = build_model("cnn1", 10, seed=0), adapted(placement, "cnn1")
    assert torch.equal(model(x), plain(x))
    other = adapted(placement, "cnn4")
    for key, value in adapter_state(model).items():
        assert torch.equal(adapter_state(other)[key], value)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_local_and_combined_are_the_model_without_and_with_its_adapter(placement):
    model = adapted(placement)
    perturb(model)
    x = torch.randn(5, 3, 32, 32)
    local, combined = placed(placement).local_and_combined(model, x)
    with adapter_disabled(model):
        torch.testing.assert_close(local, model(x))
    torch.testing.assert_close(combined, model(x))
    assert not torch.allclose(local, combined)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_adapter_and_private_parameters_partition_the_model(placement):
    model = adapted(placement)
    shared = adapter_parameters(model)
    assert len(shared) + len(private_parameters(model)) == len(list(model.parameters()))


def test_fc2_keeps_its_model_specific_factor_on_the_client():
    source, target = adapted("fc2", "cnn1"), adapted("fc2", "cnn5")
    perturb(source)
    kept = adapter_parameters(target)["fc2.lora_A"].detach().clone()
    load_adapter_state(target, adapter_state(source))
    assert torch.equal(adapter_parameters(target)["fc2.lora_B"], adapter_parameters(source)["fc2.lora_B"])
    assert torch.equal(adapter_parameters(target)["fc2.lora_A"], kept)
    with pytest.raises(KeyError, match="adapter keys"):
        load_adapter_state(target, {**adapter_state(source), "fc2.lora_A": kept})


def test_parallel_branch_is_added_where_its_placement_says():
    x = torch.randn(3, 3, 32, 32)
    rep, logits = adapted("parallel"), adapted("parallel_logits")
    perturb(rep), perturb(logits)
    base = rep.base
    torch.testing.assert_close(rep(x), base.head(base.features(x) + rep.adapter(x)))
    torch.testing.assert_close(logits(x), logits.base(x) + logits.adapter(x))
    a, b = logits.adapter.lora_A.weight, logits.adapter.lora_B.weight
    torch.testing.assert_close(logits.adapter(x), x.flatten(1) @ a.T @ b.T * (8.0 / 4))


@pytest.mark.parametrize(
    "placement, site, shapes",
    [
        ("head", "fc2", {"cnn1": {"fc2": (2000, 500)}, "cnn3": {"fc2": (1000, 500)}}),
        ("fc2", "fc2", {"a": {"fc2": (2000, 500)}, "b": {"fc2": (1000, 400)}}),
        ("parallel", "adapter", {"a": {"adapter": (3072, 500)}, "b": {"adapter": (768, 500)}}),
        ("parallel_logits", "adapter", {"a": {"adapter": (3072, 10)}, "b": {"adapter": (3072, 12)}}),
    ],
)
def test_a_shared_factor_of_two_shapes_is_refused_naming_the_shapes(placement, site, shapes):
    with pytest.raises(ConfigError, match=rf"layer '{site}' is not homogeneous.*→.*→.*one"):
        placed(placement, rank=4).check_shapes(shapes)


def test_fc2_shares_only_the_output_side_so_different_inputs_are_fine():
    placed("fc2", rank=4).check_shapes({"a": {"fc2": (2000, 500)}, "b": {"fc2": (1000, 500)}})
    placed("fc2", 64).check(sorted(ZOO), 10)


def test_config_level_refusals_name_parameter_value_and_allowed():
    with pytest.raises(ConfigError, match=r"lora_targets='fc1'.*only to adapter_placement='head'"):
        placed("parallel", 4, lora_targets=("fc1",)).check(["cnn1"], 10)
    with pytest.raises(ConfigError, match=r"rank=11 .*'adapter'.*<= 10"):
        placed("parallel_logits", 11).check(["cnn1"], 10)
    with pytest.raises(ConfigError, match=r"adapter_placement='conv1'.*choose from"):
        placed("conv1", 4).check(["cnn1"], 10)
    with pytest.raises(ConfigError, match=r"'fc2'.*cnn1: 2000→500.*cnn3: 1000→500"):
        placed("head", 4, lora_targets=("fc2",)).check(["cnn1", "cnn3"], 10)
