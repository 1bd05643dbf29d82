"""FedLoRA with every adapter placement: alternation invariants, exact bytes, μ schedule, CLI."""

import pytest
import torch
from helpers import make_algorithm, placed

from workbench.algorithms.fedlora.adapters import adapter_parameters, private_parameters, shared_parameters
from workbench.algorithms.fedlora.algorithm import mu_at
from workbench.algorithms.fedlora.placements import PLACEMENTS
from workbench.cli import main
from workbench.config import ConfigError, build_config
from workbench.core.accounting import payload_bytes
from workbench.core.run_files import read_run
from workbench.core.zoo import ZOO

CNN_PLACEMENTS = tuple(p for p in PLACEMENTS if p != "attention")  # attention: ViTs only (test_families)


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def perturb(model, seed=5):
    """Every adapter factor off its initial value (B ≠ 0), so every gradient path is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def unchanged(before, after):
    return all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_adapter_phase_changes_only_the_adapter(placement):
    algorithm, (client,) = make_algorithm(num_clients=1, models="cnn2", adapter_placement=placement)
    model = client.state["model"]
    perturb(model)
    private, adapter = snapshot(private_parameters(model)), snapshot(adapter_parameters(model).values())
    algorithm.train_adapter(client, torch.Generator().manual_seed(0))
    assert unchanged(private, private_parameters(model))
    after = list(adapter_parameters(model).values())
    assert all(not torch.equal(a, b) for a, b in zip(adapter, after))  # kept factors train too


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_model_phase_changes_only_the_private_model(placement):
    algorithm, (client,) = make_algorithm(num_clients=1, models="cnn2", adapter_placement=placement, mu=0.5)
    model = client.state["model"]
    perturb(model)
    private, adapter = snapshot(private_parameters(model)), snapshot(adapter_parameters(model).values())
    algorithm.train_model(client, torch.Generator().manual_seed(0))
    assert unchanged(adapter, adapter_parameters(model).values())
    assert not unchanged(private, private_parameters(model))


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_mixed_loss_equals_its_definition(placement):
    algorithm, (client,) = make_algorithm(num_clients=1, models="cnn4", adapter_placement=placement, mu=0.3)
    model = client.state["model"]
    perturb(model)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6)
    ce = torch.nn.functional.cross_entropy
    from workbench.algorithms.fedlora.adapters import adapter_disabled

    with adapter_disabled(model):
        local = ce(model(x), y)
    expected = 0.7 * local + 0.3 * ce(model(x), y)
    torch.testing.assert_close(algorithm.model_loss(model)(x, y), expected)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_round_bytes_are_the_shared_factors_exactly(placement):
    algorithm, clients = make_algorithm(num_clients=5, adapter_placement=placement, rank=3)
    server = algorithm.initial_server_state()
    for client in clients:
        algorithm.receive(client, algorithm.broadcast(server, client))
        up = algorithm.upload(client)
        assert set(up) == set(shared_parameters(client.state["model"])) == set(server)
        assert payload_bytes(up) == 4 * placed(placement, 3).shared_numel(client.model_name, 10)
    # homogeneous: every architecture sends the same bytes, and the server can average them
    assert len({payload_bytes(algorithm.upload(c)) for c in clients}) == 1
    merged = algorithm.aggregate(
        server, {c.cid: algorithm.upload(c) for c in clients}, {c.cid: 1.0 for c in clients}
    )
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in server.items()}


def test_fc2_clients_keep_their_own_a_and_share_b():
    algorithm, clients = make_algorithm(num_clients=2, models="cnn1,cnn3", adapter_placement="fc2")
    shapes = [tuple(adapter_parameters(c.state["model"])["fc2.lora_A"].shape) for c in clients]
    assert shapes == [(4, 2000), (4, 1000)]
    assert set(algorithm.upload(clients[0])) == {"fc2.lora_B"}


def test_mu_warmup_rises_linearly_then_holds():
    params = build_config({"mu": 0.6, "mu_schedule": "warmup", "mu_warmup_rounds": 3}).params_of("fedlora")
    assert [mu_at(params, t) for t in (1, 2, 3, 4, 10)] == pytest.approx([0.2, 0.4, 0.6, 0.6, 0.6])
    constant = build_config({"mu": 0.6}).params_of("fedlora")
    assert mu_at(constant, 1) == 0.6 and mu_at(params, None) == 0.6


def test_the_round_s_mu_reaches_the_loss():
    algorithm, (client,) = make_algorithm(num_clients=1, mu=0.6, mu_schedule="warmup", mu_warmup_rounds=2)
    model = client.state["model"]
    perturb(model)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    losses = []
    for round_ in (1, 2, 3):
        algorithm.begin_round(round_)
        losses.append(algorithm.model_loss(model)(x, y))
    assert not torch.equal(losses[0], losses[1]) and torch.equal(losses[1], losses[2])


def test_gradient_clipping_reaches_the_optimizer():
    algorithm, _ = make_algorithm(num_clients=1, max_grad_norm=50.0)
    assert algorithm.sgd(0.1).max_grad_norm == 50.0 and algorithm.sgd(0.1).lr == 0.1


def test_placement_refusals_name_parameter_value_and_allowed():
    with pytest.raises(ConfigError, match=r"adapter_placement='conv1' is not allowed; choose from"):
        build_config({"adapter_placement": "conv1"})
    with pytest.raises(ConfigError, match=r"lora_targets='fc2' applies only to adapter_placement='head'"):
        build_config({"adapter_placement": "fc2", "lora_targets": "fc2", "models": "cnn3"})
    with pytest.raises(ConfigError, match=r"rank=11 .*parallel_logits.*<= 10"):
        build_config({"adapter_placement": "parallel_logits", "rank": 11})
    with pytest.raises(ConfigError, match=r"lora_targets: layer 'fc1' is not homogeneous.*cnn2: 400→2000"):
        build_config({"lora_targets": "fc1", "models": "cnn1,cnn2"})
    build_config({"adapter_placement": "fc2", "rank": 64})  # B is 500×r on every model


@pytest.mark.slow
@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
def test_the_cli_runs_each_placement(placement, tiny, tmp_path):
    args = [f"--{k}={v}" for k, v in {**tiny, "rounds": 1, "num_clients": len(ZOO)}.items()]
    out = tmp_path / placement
    assert main(["run", *args, "--adapter_placement", placement, "--quiet", "--out", str(out)]) == 0
    flat, table = read_run(out)
    assert flat["adapter_placement"] == placement
    expected = sum(4 * placed(placement, flat["rank"]).shared_numel(m, 10) for m in table["model"])
    assert table["bytes_up"].sum() == expected == table["bytes_down"].sum()


@pytest.mark.parametrize("placement", ["fc2", "parallel_logits"])
def test_without_sharing_adapters_train_but_nothing_is_sent(placement):
    from workbench.core.accounting import Ledger
    from workbench.loop.rounds import run_round

    algorithm, clients = make_algorithm(
        num_clients=2, models="cnn1,cnn3", adapter_placement=placement, share_adapter=False
    )
    server, ledger = algorithm.initial_server_state(), Ledger()
    assert server == {}
    before = [snapshot(shared_parameters(c.state["model"]).values()) for c in clients]
    server = run_round(algorithm, clients, server, 1, ledger)
    assert server == {} and all(ledger.up[c.cid] == ledger.down[c.cid] == 0 for c in clients)
    after = [list(shared_parameters(c.state["model"]).values()) for c in clients]
    assert all(not unchanged(b, a) for b, a in zip(before, after))  # each adapter trained locally
    assert not torch.equal(after[0][-1], after[1][-1])  # and the two were never averaged
