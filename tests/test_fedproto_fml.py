import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_algorithm

import workbench.loop.runner
from workbench.algorithms.base import Algorithm
from workbench.algorithms.fedproto import FedProto, prototype_penalty, prototype_scores
from workbench.algorithms.fml import FML, distill_kl, mutual_losses
from workbench.config import build_config
from workbench.core.accounting import payload_bytes
from workbench.core.aggregation import class_means
from workbench.core.models import count_parameters
from workbench.loop.runner import run_experiment

CNN5_PARAMS = 670_058


# ---- FedProto -------------------------------------------------------------------------------
def test_class_means_by_hand():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    values, counts = class_means(z, torch.tensor([0, 0, 2]), num_classes=3)
    torch.testing.assert_close(values, torch.tensor([[2.0, 3.0], [0.0, 0.0], [10.0, 0.0]]))
    assert counts.tolist() == [2, 0, 1] and counts.dtype == torch.int64


def test_upload_then_aggregate_averages_prototypes_by_class_count():
    algorithm, clients = make_algorithm(cls=FedProto, algorithm="fedproto", num_clients=2)
    d = 500
    # client 0: class 0 mean 1 (3 samples), class 1 mean 2 (1); client 1: class 0 mean 5 (1)
    clients[0].state["upload"] = {
        "values": torch.tensor([1.0, 2.0, 0.0])[:, None].repeat(1, d),
        "counts": torch.tensor([3, 1, 0]),
    }
    clients[1].state["upload"] = {
        "values": torch.tensor([5.0, 0.0, 0.0])[:, None].repeat(1, d),
        "counts": torch.tensor([1, 0, 0]),
    }
    uploads = {c.cid: algorithm.upload(c) for c in clients}
    server = algorithm.aggregate({}, uploads, {0: 4.0, 1: 1.0})
    torch.testing.assert_close(server["values"][:, 0], torch.tensor([2.0, 2.0, 0.0]))
    assert server["counts"].tolist() == [4, 1, 0]
    down = algorithm.broadcast(server, clients[0])
    assert down["mask"].tolist() == [True, True, False]
    assert payload_bytes(down) == 4 * 500 * 3 + 1 * 3  # float32 prototypes + bool mask
    assert algorithm.broadcast({}, clients[0]) == {}


def test_local_update_uploads_class_means_of_the_trained_features():
    algorithm, (client,) = make_algorithm(cls=FedProto, algorithm="fedproto", num_clients=1)
    stats = algorithm.local_update(client, torch.Generator().manual_seed(0))
    payload = algorithm.upload(client)
    d = client.data
    with torch.no_grad():
        z = client.state["model"].features(algorithm.env.normalize(d.train_x))  # N, 500
    assert payload["counts"].tolist() == torch.bincount(d.train_y, minlength=10).tolist()
    for c in d.train_y.unique().tolist():
        torch.testing.assert_close(payload["values"][c], z[d.train_y == c].mean(0))
    assert payload_bytes(payload) == 4 * 500 * 10 + 8 * 10
    # 40 samples: training batches of 16, 16, 8, then one forward-only pass over all 40
    known = algorithm.meter.known()
    train = 2 * known[(("cnn1", "model"), (16, 3, 32, 32))] + known[(("cnn1", "model"), (8, 3, 32, 32))]
    forward = known[("cnn1", "prototypes", (40, 3, 32, 32))]
    assert stats.flops == train + forward and forward > 0


def test_regularizer_by_hand():
    z = torch.tensor([[1.0, 2.0], [3.0, 3.0]], requires_grad=True)
    prototypes, mask = torch.tensor([[0.0, 0.0], [9.0, 9.0]]), torch.tensor([True, False])
    penalty = prototype_penalty(z, torch.tensor([0, 1]), prototypes, mask)
    assert penalty.item() == pytest.approx((1 + 4 + 0 + 0) / 4)  # row 1's class has no prototype
    penalty.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.5, 1.0], [0.0, 0.0]]))


def test_model_loss_is_ce_plus_weighted_penalty_and_plain_ce_without_prototypes():
    algorithm, (client,) = make_algorithm(
        cls=FedProto, algorithm="fedproto", num_clients=1, fedproto_weight=0.7
    )
    model = client.state["model"]
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    z = model.features(x)
    ce = F.cross_entropy(model.head(z), y)
    torch.testing.assert_close(algorithm.model_loss(client)(x, y), ce)
    prototypes = torch.randn(10, 500)
    mask = torch.tensor([True, False, True] + [False] * 7)
    algorithm.receive(client, {"prototypes": prototypes, "mask": mask})
    expected = ce + 0.7 * ((z - prototypes[y]) ** 2)[y != 1].sum() / (6 * 500)
    torch.testing.assert_close(algorithm.model_loss(client)(x, y), expected)


def test_nearest_prototype_scores_on_hand_placed_prototypes():
    prototypes = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    mask = torch.tensor([True, True, False, True])
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    scores = prototype_scores(z, prototypes, mask)
    torch.testing.assert_close(scores, torch.tensor([[-9.0, -1.0, -19.0, -18.0], [-1.0, -17.0, -18.0, -4.0]]))
    assert scores.argmax(1).tolist() == [1, 0]


def test_predict_uses_prototypes_or_falls_back_to_the_head():
    algorithm, (client,) = make_algorithm(cls=FedProto, algorithm="fedproto", num_clients=1)
    model, x = client.state["model"], torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        z, logits = model.features(x), model(x)
        torch.testing.assert_close(algorithm.predict(client, x), logits)  # nothing received yet
        prototypes = torch.cat([z[:2], torch.zeros(8, 500)])
        mask = torch.tensor([True, True] + [False] * 8)
        algorithm.receive(client, {"prototypes": prototypes, "mask": mask})
        scores = algorithm.predict(client, x[:2])
    assert scores.argmax(1).tolist() == [0, 1] and torch.isfinite(scores).all()
    algorithm.config = algorithm.config.replace(fedproto_predict="head")
    with torch.no_grad():
        torch.testing.assert_close(algorithm.predict(client, x), logits)


# ---- FML ------------------------------------------------------------------------------------
def test_mutual_losses_by_hand_and_kl_direction():
    p, m = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # q_p = .5/.5, q_m = .75/.25
    y = torch.tensor([0])
    kl_m_p = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(q_m ‖ q_p) ≈ 0.1308
    kl_p_m = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(q_p ‖ q_m) ≈ 0.1438
    assert distill_kl(p, m).item() == pytest.approx(kl_m_p)
    private, shared = mutual_losses(p, m, y, alpha=0.3, beta=0.6)
    assert private.item() == pytest.approx(0.3 * math.log(2) + 0.7 * kl_m_p)
    assert shared.item() == pytest.approx(0.6 * math.log(4 / 3) + 0.4 * kl_p_m)


def test_each_loss_only_moves_its_own_model():
    p = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    m = torch.tensor([[1.0, 0.0, -0.5]], requires_grad=True)
    private, shared = mutual_losses(p, m, torch.tensor([1]), alpha=0.5, beta=0.5)
    assert torch.autograd.grad(private, m, allow_unused=True, retain_graph=True)[0] is None
    assert torch.autograd.grad(shared, p, allow_unused=True)[0] is None


def test_only_the_shared_model_travels_and_receive_loads_it_exactly():
    algorithm, clients = make_algorithm(cls=FML, algorithm="fml", num_clients=2)
    server = algorithm.initial_server_state()
    shared = clients[0].state["shared"]
    assert count_parameters(shared) == CNN5_PARAMS
    payload = algorithm.upload(clients[0])
    assert set(payload) == {name for name, _ in shared.named_parameters()}
    assert payload_bytes(payload) == 4 * CNN5_PARAMS
    # the private cnn1 has the same parameter names: tell them apart by shape and value
    assert payload["fc1.weight"].shape == (500, 800) != clients[0].state["model"].fc1.weight.shape
    assert all(torch.equal(t, dict(shared.named_parameters())[k]) for k, t in payload.items())
    assert all(torch.equal(t, server[k]) for k, t in payload.items())  # nobody trained yet: θ⁰
    new_global = {k: v + torch.randn_like(v) for k, v in server.items()}
    algorithm.receive(clients[1], algorithm.broadcast(new_global, clients[1]))
    assert all(torch.equal(t, new_global[k]) for k, t in clients[1].state["shared"].state_dict().items())


def test_local_update_trains_both_models_and_counts_both():
    algorithm, (client,) = make_algorithm(cls=FML, algorithm="fml", num_clients=1, models="cnn5")
    before = {k: [p.detach().clone() for p in client.state[k].parameters()] for k in ("model", "shared")}
    stats = algorithm.local_update(client, torch.Generator().manual_seed(0))
    for k, old in before.items():
        assert not any(torch.equal(a, b) for a, b in zip(old, client.state[k].parameters())), k
    base, (other,) = make_algorithm(cls=Algorithm, algorithm="standalone", num_clients=1, models="cnn5")
    one = base.local_update(other, torch.Generator().manual_seed(0))
    assert stats.flops == 2 * one.flops  # private and shared are both cnn5: twice fwd + bwd


# ---- end to end through the real loop ------------------------------------------------------
@pytest.mark.parametrize(
    "name, cls, up, down",
    [
        ("fedproto", FedProto, 4 * 500 * 10 + 8 * 10, 0),  # round 1: no global prototypes yet
        ("fml", FML, 4 * CNN5_PARAMS, 4 * CNN5_PARAMS),
    ],
)
@pytest.mark.slow
def test_end_to_end_bytes(monkeypatch, name, cls, up, down):
    monkeypatch.setitem(workbench.loop.runner.REGISTRY, name, cls)
    result = run_experiment(
        build_config(
            {
                "algorithm": name,
                "dataset": "digits",
                "num_clients": 2,
                "rounds": 1,
                "batch_size": 32,
                "device": "cpu",
                "models": "cnn5",
            }
        )
    )
    table = result.table
    assert len(table) == 2 and table["participated"].all() and (table["train_flops"] > 0).all()
    assert (table["bytes_up"] == up).all() and (table["bytes_down"] == down).all()
    assert table["loss"].map(math.isfinite).all() and table["accuracy"].between(0, 1).all()
