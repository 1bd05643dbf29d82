"""FedLoRA's variants (issue 21): bounds, and each one's behaviour against a hand computation."""

import math

import numpy as np
import pytest
import torch
from helpers import make_algorithm, placed

from workbench.algorithms.fedlora.adapters import (
    adapter_disabled,
    adapter_parameters,
    adapter_sites,
    adapter_state,
    inject_lora,
    load_adapter_state,
)
from workbench.config import ConfigError, build_config
from workbench.core.models import build_model
from workbench.core.partition import cap_train, partition

ce = torch.nn.functional.cross_entropy


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"lora_plus_ratio": 0.5}, "lora_plus_ratio=0.5 is out of range: must be >= 1"),
        ({"lora_plus_ratio": 5000}, "lora_plus_ratio=5000.0 is out of range: must be <= 1000"),
        ({"adapter_b_std": 0}, "adapter_b_std=0.0 is out of range: must be > 0"),
        ({"adapter_b_std": 2}, "adapter_b_std=2.0 is out of range: must be <= 1 .a larger B"),
        ({"adapter_init": "zeros"}, "adapter_init='zeros' is not allowed; choose from .'lora', 'gaussian'"),
        ({"adapter_schedule": "sister"}, "adapter_schedule='sister' is not allowed; choose from"),
        ({"adapter_inference": "local"}, "adapter_inference='local' is not allowed; choose from"),
        ({"adapter_weights": "equal"}, "adapter_weights='equal' is not allowed; choose from"),
        ({"use_rslora": "maybe"}, "use_rslora='maybe': expected true or false"),
        ({"max_train_samples": -1}, "max_train_samples=-1 is out of range: must be >= 0"),
        ({"max_train_samples": 1}, "max_train_samples=1 is out of range: each client holds classes_per"),
    ],
)
def test_variant_bounds_are_refused_naming_the_value(flat, message):
    with pytest.raises(ConfigError, match=message):
        build_config(flat)


def randomized(model, seed=4):
    g = torch.Generator().manual_seed(seed)
    load_adapter_state(model, {k: torch.randn(v.shape, generator=g) for k, v in adapter_state(model).items()})
    return model


@pytest.mark.parametrize("placement", ["head", "parallel_logits"])
def test_rslora_scales_the_branch_by_alpha_over_the_root_of_r(placement):
    rslora = placed(placement, 4, lora_alpha=6.0, use_rslora=True, adapter_init="lora")
    model = rslora.attach(build_model("cnn2", 10, 0), 1)
    layer = adapter_sites(model)["head"].module if placement == "head" else model.adapter
    scale = layer.scaling["default"] if placement == "head" else layer.scaling
    assert scale == 6.0 / math.sqrt(4) == 3.0
    randomized(model)
    x = torch.randn(3, 3, 32, 32)
    a, b = (p for k, p in sorted(adapter_parameters(model).items()))
    read = model.features(x) if placement == "head" else x.flatten(1)
    with adapter_disabled(model):
        local = model(x)
    torch.testing.assert_close(model(x), local + (read @ a.T @ b.T) * 3.0)


def test_the_default_variant_is_peft_s_default_lora_bit_for_bit():
    from peft import LoraConfig, inject_adapter_in_model

    ours = inject_lora(build_model("cnn3", 10, 0), ("head",), 4, 8.0, 7)
    config = LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, bias="none", target_modules=["head"])
    torch.manual_seed(7)
    plain = inject_adapter_in_model(config, build_model("cnn3", 10, 0), adapter_name="default")
    for key, value in adapter_state(ours).items():
        assert torch.equal(value, adapter_state(plain)[key])


@pytest.mark.parametrize("placement", ["head", "fc2", "parallel"])
def test_initialisations_draw_a_and_b_as_documented_and_alike_everywhere(placement):
    inits = {}
    for init in ("lora", "gaussian", "small_b"):
        algorithm, clients = make_algorithm(
            models="cnn1,cnn3", adapter_placement=placement, adapter_init=init, adapter_b_std=0.05, rank=4
        )
        factors = adapter_parameters(clients[0].state["model"])
        inits[init] = {k.rsplit(".", 1)[1]: p.detach() for k, p in factors.items()}
        server = algorithm.initial_server_state()
        for c in clients:  # every client and the server start from the same shared factors
            assert all(torch.equal(adapter_state(c.state["model"])[k], v) for k, v in server.items())
    assert not inits["lora"]["lora_B"].any() and not inits["gaussian"]["lora_B"].any()
    assert inits["gaussian"]["lora_A"].std().item() == pytest.approx(1 / 4, rel=0.1)
    assert torch.equal(inits["small_b"]["lora_A"], inits["lora"]["lora_A"])
    assert inits["small_b"]["lora_B"].std().item() == pytest.approx(0.05, rel=0.2)


def test_lora_plus_gives_b_its_own_learning_rate():
    """One full-batch SGD step without momentum or decay: ΔA = −lr·∂A, ΔB = −λ·lr·∂B."""
    algorithm, (client,) = make_algorithm(
        num_clients=1, adapter_lr=0.01, lora_plus_ratio=4, momentum=0, weight_decay=0, batch_size=64
    )
    model = randomized(client.state["model"])
    before = {k: p.detach().clone() for k, p in adapter_parameters(model).items()}
    x, y = algorithm.env.normalize(client.data.train_x), client.data.train_y
    ce(model(x), y).backward()
    grads = {k: p.grad.clone() for k, p in adapter_parameters(model).items()}
    model.zero_grad(set_to_none=True)
    algorithm.train_adapter(client, torch.Generator().manual_seed(0))
    after = adapter_parameters(model)
    torch.testing.assert_close(after["head.lora_A"] - before["head.lora_A"], -0.01 * grads["head.lora_A"])
    torch.testing.assert_close(after["head.lora_B"] - before["head.lora_B"], -0.04 * grads["head.lora_B"])


@pytest.mark.parametrize(("schedule", "epochs"), [("fixed", 3), ("model_plus", 2 + 3)])
def test_adapter_schedule_fixed_or_model_epochs_plus_k(schedule, epochs):
    algorithm, (client,) = make_algorithm(
        num_clients=1, model_epochs=2, adapter_epochs=3, adapter_schedule=schedule, batch_size=16
    )
    stats = algorithm.train_adapter(client, torch.Generator().manual_seed(0))
    assert stats.steps == epochs * math.ceil(client.data.num_train / 16)


def test_uniform_weights_average_adapters_uniformly():
    uploads = {0: {"w": torch.tensor([0.0, 4.0])}, 1: {"w": torch.tensor([8.0, 0.0])}}
    server, weights = {"w": torch.zeros(2)}, {0: 1.0, 1: 3.0}
    for choice, expected in (("samples", [6.0, 1.0]), ("uniform", [4.0, 2.0])):
        algorithm, _ = make_algorithm(num_clients=1, adapter_weights=choice)
        assert torch.equal(algorithm.aggregate(server, uploads, weights)["w"], torch.tensor(expected))


def test_private_inference_is_the_private_model_alone():
    for path in ("combined", "private"):
        algorithm, (client,) = make_algorithm(num_clients=1, adapter_inference=path)
        model = randomized(client.state["model"])
        x = torch.randn(5, 3, 32, 32)
        with adapter_disabled(model):
            private = model(x)
        assert torch.equal(algorithm.predict(client, x), private) is (path == "private")


def test_private_inference_is_evaluated_alone_while_the_adapter_s_contribution_is_measured():
    from workbench.loop.rounds import evaluate_client

    combined_algorithm, (client,) = make_algorithm(num_clients=1)
    randomized(client.state["model"])
    combined = evaluate_client(combined_algorithm, client)
    with adapter_disabled(client.state["model"]):
        alone = evaluate_client(combined_algorithm, client)[:2]  # the private model's accuracy, loss
    private = evaluate_client(make_algorithm(num_clients=1, adapter_inference="private")[0], client)
    assert private[:2] == alone != combined[:2]
    assert private[2]["adapter_contribution"] == combined[2]["adapter_contribution"] > 0


def test_the_cap_keeps_at_most_n_training_samples_in_each_client_s_label_mix():
    rng = np.random.default_rng(0)
    train = rng.permutation(np.repeat(np.arange(10), 100))
    test = rng.permutation(np.repeat(np.arange(10), 20))
    splits = partition(train, test, 5, "pathological", 2, 0.5, seed=3)
    capped = cap_train(splits, train, 10, np.random.default_rng(1))
    for (full, full_test), (kept, kept_test) in zip(splits, capped):
        assert len(kept) == 10 and set(kept) <= set(full) and np.array_equal(kept_test, full_test)
        share = np.mean(train[full] == train[full][0])  # the first class's share of the client
        assert abs(np.mean(train[kept] == train[full][0]) - share) <= 0.1  # within one sample
    assert cap_train(splits, train, 0, rng) is splits
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(cap_train(splits, train, 10_000, rng), splits))


def test_a_run_with_the_cap_trains_each_client_on_that_many_samples():
    from workbench.loop.rounds import make_clients

    config = build_config({"num_clients": 4, "max_train_samples": 13, "val_fraction": 0, "device": "cpu"})
    clients, _ = make_clients(config, torch.device("cpu"))
    whole, _ = make_clients(config.replace(max_train_samples=0), torch.device("cpu"))
    assert [c.data.num_train for c in clients] == [13] * 4
    assert [c.data.num_test for c in clients] == [c.data.num_test for c in whole]
    # validation is held out of what the client keeps: the cap bounds train + validation
    held, _ = make_clients(config.replace(val_fraction=0.1), torch.device("cpu"))
    assert [(c.data.num_train, c.data.num_val) for c in held] == [(12, 1)] * 4
