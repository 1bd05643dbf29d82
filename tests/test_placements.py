"""Adapter placements: the torch-free description agrees with the built adapters, refusals."""

import pytest
import torch

from workbench.algorithms.fedlora.adapters import (
    adapter_disabled,
    adapter_parameters,
    adapter_state,
    attach_adapter,
    load_adapter_state,
    local_and_combined,
    private_parameters,
)
from workbench.algorithms.fedlora.placements import (
    PLACEMENTS,
    adapter_factors,
    check_placement,
    check_shapes,
    shared_numel,
)
from workbench.core.accounting import payload_bytes
from workbench.core.models import build_model
from workbench.core.params import ConfigError
from workbench.core.zoo import ZOO

CNN_PLACEMENTS = tuple(p for p in PLACEMENTS if p != "attention")  # attention: ViTs only (test_families)


def adapted(placement, name="cnn3", rank=4, seed=1):
    return attach_adapter(build_model(name, 10, seed=0), placement, rank, 8.0, seed)


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
    factors = adapter_factors(placement, name, 10, 3)
    built = {k: tuple(p.shape) for k, p in adapter_parameters(model).items()}
    assert built == {k: shape for k, (shape, _) in factors.items()}
    assert set(adapter_state(model)) == {k for k, (_, shared) in factors.items() if shared}
    assert payload_bytes(adapter_state(model)) == 4 * shared_numel(placement, name, 10, 3)


def test_shared_bytes_per_placement_are_the_factor_sizes():
    r, c = 4, 10
    assert shared_numel("head", "cnn1", c, r) == r * 500 + c * r
    assert shared_numel("fc2", "cnn1", c, r) == 500 * r  # A (r×fc1) stays on the client
    assert shared_numel("parallel", "cnn2", c, r) == r * 3072 + 500 * r
    assert shared_numel("parallel_logits", "cnn5", c, r) == r * 3072 + c * r


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
    local, combined = local_and_combined(model, x)
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
        check_shapes(placement, shapes, rank=4)


def test_fc2_shares_only_the_output_side_so_different_inputs_are_fine():
    check_shapes("fc2", {"a": {"fc2": (2000, 500)}, "b": {"fc2": (1000, 500)}}, rank=4)
    check_placement("fc2", sorted(ZOO), 10, 64, ("head",))


def test_config_level_refusals_name_parameter_value_and_allowed():
    with pytest.raises(ConfigError, match=r"lora_targets='fc1'.*only to adapter_placement='head'"):
        check_placement("parallel", ["cnn1"], 10, 4, ("fc1",))
    with pytest.raises(ConfigError, match=r"rank=11 .*'adapter'.*<= 10"):
        check_placement("parallel_logits", ["cnn1"], 10, 11, ("head",))
    with pytest.raises(ConfigError, match=r"adapter_placement='conv1'.*choose from"):
        check_placement("conv1", ["cnn1"], 10, 4, ("head",))
    with pytest.raises(ConfigError, match=r"'fc2'.*cnn1: 2000→500.*cnn3: 1000→500"):
        check_placement("head", ["cnn1", "cnn3"], 10, 4, ("fc2",))
