"""Standalone, FedAvg, LG-FedAvg and FD: wire bytes through the real loop, and each method's
distinctive piece (exact global load, private features, per-class logit averaging, distillation)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_algorithm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import workbench.loop.runner
from workbench.algorithms.fd import FederatedDistillation, distillation_loss
from workbench.algorithms.fedavg import FedAvg
from workbench.algorithms.lg_fedavg import LGFedAvg
from workbench.algorithms.standalone import Standalone
from workbench.config import build_config
from workbench.core.accounting import Ledger
from workbench.core.data import ClientData, Normalizer
from workbench.core.models import build_model, count_parameters
from workbench.loop.rounds import run_round
from workbench.loop.runner import run_experiment

C = 10
CNN5_PARAMS = 670_058
HEAD_BYTES = 4 * (500 * C + C)  # 20,040
FD_UP = 4 * C * C + 8 * C  # (C, C) float32 logits + (C,) int64 counts = 480
FD_DOWN = 4 * C * C + C  # (C, C) float32 teacher logits + (C,) bool mask = 410
CLASSES = {"standalone": Standalone, "fedavg": FedAvg, "lg_fedavg": LGFedAvg, "fd": FederatedDistillation}


def run_tiny(monkeypatch, name, **flat):
    monkeypatch.setitem(workbench.loop.runner.REGISTRY, name, CLASSES[name])
    config = build_config(
        {
            "algorithm": name,
            "dataset": "digits",
            "num_clients": 2,
            "rounds": 1,
            "batch_size": 32,
            "device": "cpu",
            "fedavg_model": "cnn5",
            **flat,
        }
    )
    return run_experiment(config).table


@pytest.mark.parametrize(
    "name, up, down",
    [
        ("standalone", 0, 0),
        ("fedavg", 4 * CNN5_PARAMS, 4 * CNN5_PARAMS),
        ("lg_fedavg", HEAD_BYTES, HEAD_BYTES),
    ],
)
@pytest.mark.slow
def test_one_round_through_the_loop_sends_exactly_the_payload(monkeypatch, name, up, down):
    table = run_tiny(monkeypatch, name)
    assert len(table) == 2 and table["participated"].all()
    assert list(table["bytes_up"]) == [up, up]
    assert list(table["bytes_down"]) == [down, down]
    assert (table["train_flops"] > 0).all() and table["accuracy"].between(0, 1).all()


@pytest.mark.slow
def test_fd_through_the_loop_downloads_nothing_then_teacher_logits_and_mask(monkeypatch):
    # 6 of 10 classes each: the two clients share two classes, so each has a teacher in round 2
    table = run_tiny(monkeypatch, "fd", rounds=2, classes_per_client=6)
    assert len(table) == 4 and table["participated"].all() and (table["train_flops"] > 0).all()
    first, second = table[table["round"] == 1], table[table["round"] == 2]
    assert list(first["bytes_up"]) == [FD_UP, FD_UP]
    assert list(first["bytes_down"]) == [0, 0]  # round 1: no global knowledge yet
    assert list(second["bytes_up"]) == [FD_UP, FD_UP]
    assert list(second["bytes_down"]) == [FD_DOWN, FD_DOWN]


def test_cnn5_parameter_count_behind_the_fedavg_bytes():
    assert count_parameters(build_model("cnn5", C, 0)) == CNN5_PARAMS


# ---- standalone ----------------------------------------------------------------------------
def test_standalone_client_trains_exactly_as_if_it_were_alone():
    pair, clients = make_algorithm(cls=Standalone, algorithm="standalone", num_clients=2)
    alone, (solo,) = make_algorithm(cls=Standalone, algorithm="standalone", num_clients=1)
    run_round(pair, clients, pair.initial_server_state(), 1, Ledger())
    run_round(alone, [solo], alone.initial_server_state(), 1, Ledger())
    trained, reference = clients[0].state["model"].state_dict(), solo.state["model"].state_dict()
    assert all(torch.equal(trained[k], reference[k]) for k in reference)
    assert pair.upload(clients[0]) == {} and pair.broadcast({}, clients[1]) == {}


# ---- FedAvg --------------------------------------------------------------------------------
def test_fedavg_receive_makes_every_client_model_bit_identical_to_the_global_state():
    algorithm, clients = make_algorithm(cls=FedAvg, algorithm="fedavg", num_clients=2)
    server = algorithm.initial_server_state()
    assert set(server) == set(clients[0].state["model"].state_dict())
    for c in clients:
        algorithm.receive(c, algorithm.broadcast(server, c))
        algorithm.local_update(c, torch.Generator().manual_seed(c.cid))
    uploads = {c.cid: algorithm.upload(c) for c in clients}
    assert not torch.equal(uploads[0]["fc1.weight"], uploads[1]["fc1.weight"])
    weights = {0: 1.0, 1: 3.0}
    server = algorithm.aggregate(server, uploads, weights)
    torch.testing.assert_close(
        server["head.bias"], 0.25 * uploads[0]["head.bias"] + 0.75 * uploads[1]["head.bias"]
    )
    for c in clients:
        algorithm.receive(c, algorithm.broadcast(server, c))
        state = c.state["model"].state_dict()
        assert all(torch.equal(state[k], v) for k, v in server.items())
    assert sum(t.numel() for t in uploads[0].values()) == CNN5_PARAMS


def test_fedavg_refuses_a_client_with_another_architecture():
    with pytest.raises(ValueError, match="fedavg_model='cnn5'"):
        make_algorithm(cls=FedAvg, algorithm="fedlora", num_clients=2)  # zoo: cnn1, cnn2


# ---- LG-FedAvg -----------------------------------------------------------------------------
def test_lg_fedavg_receive_changes_only_the_head():
    algorithm, (client,) = make_algorithm(cls=LGFedAvg, algorithm="lg_fedavg", num_clients=1)
    before = {k: v.clone() for k, v in client.state["model"].state_dict().items()}
    g = torch.Generator().manual_seed(3)
    head = algorithm.initial_server_state()
    payload = {k: torch.randn(v.shape, generator=g) for k, v in head.items()}
    assert set(payload) == {"head.weight", "head.bias"}
    algorithm.receive(client, payload)
    after = client.state["model"].state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], payload[k]) if k in payload else torch.equal(after[k], v), k


def test_lg_fedavg_shares_the_head_and_keeps_features_private():
    algorithm, clients = make_algorithm(cls=LGFedAvg, algorithm="lg_fedavg", num_clients=2, models="cnn5")
    server = algorithm.initial_server_state()
    assert all(torch.equal(c.state["model"].head.weight, server["head.weight"]) for c in clients)
    server = run_round(algorithm, clients, server, 1, Ledger())
    trained = [{k: v.clone() for k, v in c.state["model"].state_dict().items()} for c in clients]
    for c in clients:
        algorithm.receive(c, algorithm.broadcast(server, c))
    heads = [c.state["model"].head.weight for c in clients]
    assert torch.equal(heads[0], heads[1]) and torch.equal(heads[0], server["head.weight"])
    for c, own in zip(clients, trained):
        state = c.state["model"].state_dict()
        assert all(torch.equal(state[k], own[k]) for k in own if not k.startswith("head."))
    assert not torch.equal(trained[0]["fc1.weight"], trained[1]["fc1.weight"])


# ---- FD ------------------------------------------------------------------------------------
class PixelLogits(nn.Module):
    """A stub model whose logits are the first row of the first channel's pixel values."""

    def forward(self, x):
        return x[:, 0, 0, :C] * 255.0  # B, C (the test's normalizer is the identity on [0, 1])


def client_with_logits(client, rows, labels):
    """Give a client training images whose stub logits are `rows` (first two entries)."""
    x = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 0, :2] = torch.tensor(rows, dtype=torch.uint8)
    y = torch.tensor(labels)
    client.data = ClientData(x, y, x, y)
    client.state["model"] = PixelLogits()


def logit_rows(*rows):
    out = torch.zeros(len(rows), C)
    out[:, :2] = torch.tensor(rows, dtype=torch.float32)
    return out


def test_fd_averages_class_logits_by_count_and_excludes_the_receiver():
    algorithm, clients = make_algorithm(cls=FederatedDistillation, algorithm="fd", num_clients=3)
    algorithm.env = dataclasses.replace(algorithm.env, normalize=Normalizer((0.0,) * 3, (1.0,) * 3))
    client_with_logits(clients[0], [[2, 0], [4, 2], [0, 6]], [0, 0, 1])
    client_with_logits(clients[1], [[3, 3], [6, 0], [1, 1]], [1, 1, 2])
    uploads = {}
    for c in clients[:2]:
        algorithm.compute_class_logits(c)
        uploads[c.cid] = algorithm.upload(c)
    torch.testing.assert_close(uploads[0]["logits"][:3], logit_rows([3, 1], [0, 6], [0, 0]))
    assert uploads[0]["counts"].tolist() == [2, 1] + [0] * 8
    assert uploads[1]["counts"].dtype == torch.int64 and uploads[0]["logits"].dtype == torch.float32
    server = algorithm.aggregate({}, uploads, {0: 3.0, 1: 3.0})
    # client 2 took no part: class 1 = (1·[0, 6] + 2·[4.5, 1.5]) / 3 = [3, 3]
    full = algorithm.broadcast(server, clients[2])
    torch.testing.assert_close(full["logits"][:3], logit_rows([3, 1], [3, 3], [1, 1]))
    assert full["mask"].tolist() == [True, True, True] + [False] * 7
    # client 0's teacher excludes its own logits: class 0 has none, class 1 is client 1's alone
    own = algorithm.broadcast(server, clients[0])
    torch.testing.assert_close(own["logits"][1:3], logit_rows([4.5, 1.5], [1, 1]))
    assert own["mask"].tolist() == [False, True, True] + [False] * 7
    assert algorithm.broadcast({}, clients[0]) == {}


def test_distillation_term_equals_the_hand_computed_value():
    # T = 2: teacher of class 0 = [2 ln 3, 0] → softmax(g/T) = [3/4, 1/4];
    # student logits [0, 0] → [1/2, 1/2]
    teacher = torch.tensor([[2 * math.log(3.0), 0.0], [5.0, -5.0]])
    mask = torch.tensor([True, False])  # class 1 has no global logits: its sample adds 0
    logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 2.0**2 * kl / 2  # T² · KL of sample 0, averaged over the batch of 2
    torch.testing.assert_close(distillation_loss(logits, y, teacher, mask, 2.0), torch.tensor(expected))


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_fd_loss_is_plain_cross_entropy_exactly_when_lambda_is_zero(weight):
    algorithm, (client,) = make_algorithm(
        cls=FederatedDistillation, algorithm="fd", num_clients=1, fd_weight=weight, fd_temperature=2.0
    )
    g = torch.Generator().manual_seed(0)
    algorithm.receive(
        client, {"logits": torch.randn(C, C, generator=g) * 3, "mask": torch.ones(C, dtype=torch.bool)}
    )
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.arange(6)
    ce = F.cross_entropy(client.state["model"](x), y)
    loss = algorithm.model_loss(client)(x, y)
    assert torch.equal(loss, ce) is (weight == 0.0)


def test_fd_counts_the_logit_pass_as_forward_only_training_flops():
    fd, (client,) = make_algorithm(cls=FederatedDistillation, algorithm="fd", num_clients=1, models="cnn5")
    plain, (twin,) = make_algorithm(cls=Standalone, algorithm="standalone", num_clients=1, models="cnn5")
    extra = (
        fd.local_update(client, torch.Generator().manual_seed(0)).flops
        - plain.local_update(twin, torch.Generator().manual_seed(0)).flops
    )
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        build_model("cnn5", C, 0)(torch.zeros(1, 3, 32, 32))
    assert extra == client.data.num_train * counter.get_total_flops()
    assert set(fd.upload(client)) == {"logits", "counts"} and client.state["upload"] == {}
