"""Model families beyond the CNNs: ResNets and ViTs in the zoo, named groups, FedBN-private norms,
exact FLOPs of attention and normalisation, and the attention placement's homogeneity rule."""

import pytest
import torch
from helpers import make_algorithm, placed

from workbench.algorithms.base import load_shared, private_norm_names, state_copy
from workbench.algorithms.fedlora.placements.attention import attention_sites
from workbench.config import ConfigError, build_config
from workbench.core.accounting import NORM_FLOPS, flop_counter_mode
from workbench.core.models import build_model, count_parameters
from workbench.core.zoo import FAMILIES, GROUPS, MODELS, RESNETS, VITS, ZOO, linear_shapes


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet8_w8", 41_134),
        ("resnet8_w16", 114_902),
        ("resnet14_w16", 212_118),
        ("vit48_l2_p4_h2", 73_046),
        ("vit48_l2_p4_h4", 91_670),
        ("vit48_l2_p8_h6", 77_654),
        ("vit32_l1_p8_h2", 36_870),
        ("vit64_l3_p4_h4", 145_414),
    ],
)
def test_new_families_are_small_and_pinned(name, expected):
    assert count_parameters(build_model(name, 10, seed=0)) == expected


@pytest.mark.parametrize("name", sorted({**RESNETS, **VITS}))
def test_every_family_exposes_features_and_head_through_the_projection(name):
    model = build_model(name, 10, seed=0)
    x = torch.randn(3, 3, 32, 32)
    z = model.features(x)
    assert z.shape == (3, 500) and (z >= 0).all()
    assert torch.equal(model.head(z), model(x))
    assert model.fc2.in_features == MODELS[name].trunk_dim and model.fc2.out_features == 500
    shapes = {
        n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    assert shapes == linear_shapes(name, 10)


def test_groups_expand_and_the_default_is_todays_five_cnns():
    assert (
        build_config({}).federation.models
        == ("cnn1", "cnn2", "cnn3", "cnn4", "cnn5")
        == GROUPS["cnn"]
        == tuple(ZOO)
    )
    assert build_config({"models": "mixed"}).federation.models == GROUPS["mixed"]
    assert {FAMILIES[m] for m in GROUPS["mixed"]} == {"cnn", "resnet", "vit"}
    assert build_config({"models": "vit,cnn1"}).federation.models == (*GROUPS["vit"], "cnn1")
    with pytest.raises(
        ConfigError, match=r"models='mixd' is not allowed; choose from .*'resnet8_w8'.*'mixed'"
    ):
        build_config({"models": "mixd"})


def test_cnn_payloads_are_whole_models_and_norm_layers_stay_private():
    cnn = build_model("cnn5", 10, seed=0)
    assert state_copy(cnn).keys() == cnn.state_dict().keys()  # nothing private on the CNNs
    resnet = build_model("resnet8_w8", 10, seed=0)
    private = private_norm_names(resnet)
    assert "body.1.running_mean" in private and "body.1.weight" in private
    shared = state_copy(resnet)
    assert not private & set(shared) and set(shared) | private == set(resnet.state_dict())
    other = build_model("resnet8_w8", 10, seed=1)
    before = {n: t.clone() for n, t in other.state_dict().items() if n in private}
    load_shared(other, shared)
    assert all(torch.equal(other.state_dict()[n], before[n]) for n in private)
    assert all(torch.equal(other.state_dict()[n], t) for n, t in shared.items())


def test_fedavg_on_a_resnet_keeps_each_clients_batchnorm_statistics():
    algorithm, clients = make_algorithm(
        algorithm="fedavg", fedavg_model="resnet8_w8", num_clients=2, models="resnet8_w8"
    )
    generator = torch.Generator().manual_seed(0)
    uploads = {}
    for client in clients:
        algorithm.local_update(client, generator)
        uploads[client.cid] = algorithm.upload(client)
    assert not any("running" in n or n.startswith("body.1.") for n in uploads[0])
    stats = [c.state["model"].state_dict()["body.1.running_mean"] for c in clients]
    assert not torch.equal(stats[0], stats[1])  # each client's own data made its statistics


def counted(module: torch.nn.Module, x: torch.Tensor) -> int:
    with flop_counter_mode() as counter:
        module(x).sum().backward()
    return int(counter.get_total_flops())


def test_a_resnet_block_counts_convolutions_and_batchnorm_exactly():
    model = build_model("resnet8_w16", 10, seed=0)
    block = model.body[4]  # stage 2's first block: 16→32, stride 2, with a 1×1 downsample
    b, side = 2, 16  # output side 16 from a 32×32 input
    x = torch.randn(b, 16, 32, 32, requires_grad=True)
    conv_forward = 2 * b * side * side * 32 * (16 * 9 + 32 * 9 + 16)  # conv1, conv2, downsample
    norm = sum(NORM_FLOPS.values()) * 3 * b * 32 * side * side  # bn1, bn2, downsample's bn
    assert counted(block, x) == 3 * conv_forward + norm  # forward + input and weight gradients


def test_a_vit_block_counts_attention_and_layernorm_exactly():
    spec = VITS["vit48_l2_p4_h4"]
    block = build_model("vit48_l2_p4_h4", 10, seed=0).vit.encoder.layers[0]
    b, n, d, m = 2, spec.tokens, spec.dim, spec.mlp
    x = torch.randn(b, n, d, requires_grad=True)
    linear_forward = 2 * b * n * (4 * d * d + 2 * d * m)  # query, key, value, out_proj, the MLP
    sdpa = 4 * b * n * n * d + 10 * b * n * n * d  # QKᵀ and P·V; torch's five backward products
    norm = sum(NORM_FLOPS.values()) * 2 * b * n * d  # ln_1, ln_2
    assert counted(block, x) == 3 * linear_forward + sdpa + norm


def test_attention_sites_are_every_blocks_query_and_value():
    assert attention_sites("vit64_l3_p4_h4")[-1] == "vit.encoder.layers.encoder_layer_2.self_attention.value"
    assert len(attention_sites("vit64_l3_p4_h4")) == 6 and attention_sites("cnn5") == ()
    factors = placed("attention", 4).factors("vit48_l2_p4_h2", 10)
    assert len(factors) == 8 and all(shared for _, shared in factors.values())
    assert placed("attention", 4).shared_numel("vit48_l2_p4_h2", 10) == 4 * (4 * 48 + 48 * 4)


@pytest.mark.parametrize(
    "models, shapes",
    [
        (
            ["vit48_l2_p4_h2", "vit64_l3_p4_h4"],
            "vit48_l2_p4_h2: 2 blocks of query/value 48→48, vit64_l3_p4_h4: 3 blocks of query/value 64→64",
        ),
        (
            ["cnn5", "vit48_l2_p4_h2"],
            "cnn5: no attention layers, vit48_l2_p4_h2: 2 blocks of query/value 48→48",
        ),
    ],
)
def test_attention_placement_with_differing_shapes_is_refused_naming_them(models, shapes):
    with pytest.raises(ConfigError, match="adapter_placement='attention'") as refused:
        placed("attention", 4).check(models, 10)
    assert shapes in str(refused.value)
    with pytest.raises(ConfigError, match="vit64_l3_p4_h4"):
        build_config({"models": "vit48_l2_p4_h2,vit64_l3_p4_h4", "adapter_placement": "attention"})


def test_the_vit_group_shares_one_attention_adapter_and_fc1_targets_are_refused_off_the_cnns():
    placed("attention", 8).check(list(GROUPS["vit"]), 10)
    for placement in ("head", "fc2", "parallel", "parallel_logits"):
        placed(placement, 4).check(list(GROUPS["mixed"]), 10)
    with pytest.raises(ConfigError, match="model resnet8_w16 has no Linear layer fc1"):
        build_config({"models": "mixed", "lora_targets": "fc1"})


def test_attention_adapter_is_what_crosses_the_wire():
    algorithm, clients = make_algorithm(models="vit", num_clients=3, adapter_placement="attention", rank=2)
    state = algorithm.initial_server_state()
    assert len(state) == 8 and all("self_attention" in n for n in state)
    generator = torch.Generator().manual_seed(0)
    algorithm.local_update(clients[0], generator)
    upload = algorithm.upload(clients[0])
    assert upload.keys() == state.keys()
    assert sum(t.numel() for t in upload.values()) == placed("attention", 2).shared_numel(
        "vit48_l2_p4_h2", 10
    )
    assert not all(torch.equal(upload[n], state[n]) for n in state)  # the adapter trained
