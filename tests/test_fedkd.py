import math

import numpy as np
import pytest
import torch
from helpers import make_algorithm

import workbench.loop.runner
from workbench.algorithms.fedkd.algorithm import FedKD, fedkd_losses
from workbench.algorithms.fedkd.compression import (
    compress_state,
    decompress_state,
    energy_schedule,
    merge_payloads,
    rank_for_energy,
    svd_compress,
    svd_decompress,
)
from workbench.config import build_config
from workbench.core.accounting import payload_bytes
from workbench.core.aggregation import InvalidUpdateError
from workbench.loop.runner import run_experiment

CNN5_BYTES = 4 * 670_058


def low_rank(m, n, singular_values, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, len(singular_values), generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, len(singular_values), generator=g))
    return u @ torch.diag(torch.tensor(singular_values)) @ v.T  # m, n


# ---- compression ---------------------------------------------------------------------------
@pytest.mark.parametrize("energy, rank", [(0.6, 1), (9 / 14, 1), (0.9, 2), (13 / 14, 2), (0.95, 3), (1.0, 3)])
def test_rank_for_energy_on_hand_computed_spectrum(energy, rank):
    # σ = [3, 2, 1]: σ² = [9, 4, 1], cumulative energy shares 9/14, 13/14, 14/14
    assert rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), energy) == rank


def test_rank_for_energy_edge_cases():
    assert rank_for_energy(torch.zeros(4), 0.9) == 0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="energy"):
            rank_for_energy(torch.ones(3), bad)


def test_full_energy_round_trip_is_exact():
    g = torch.Generator().manual_seed(1)
    for shape in ((7, 5), (4, 3, 5, 5), (6,)):
        t = torch.randn(shape, generator=g)
        torch.testing.assert_close(svd_decompress(svd_compress(t, 1.0), shape), t)


def test_known_low_rank_matrix_is_sent_as_exact_rank_3_factors():
    a = low_rank(40, 30, [5.0, 3.0, 1.0])
    parts = svd_compress(a, 0.999999)
    assert set(parts) == {".U", ".S", ".V"}
    assert parts[".U"].shape == (40, 3) and parts[".V"].shape == (3, 30)
    torch.testing.assert_close(parts[".S"], torch.tensor([5.0, 3.0, 1.0]))
    torch.testing.assert_close(svd_decompress(parts, a.shape), a, atol=1e-5, rtol=0)


def test_relative_squared_error_equals_one_minus_kept_energy():
    a = torch.randn(12, 9, generator=torch.Generator().manual_seed(2))
    sigma = torch.linalg.svdvals(a).double()
    parts = svd_compress(a, 0.8)
    k = parts[".S"].numel()
    shares = (sigma.square().cumsum(0) / sigma.square().sum()).tolist()
    assert shares[k - 1] >= 0.8 > shares[k - 2]  # the smallest rank reaching the threshold
    error = ((a - svd_decompress(parts, a.shape)).square().sum() / a.square().sum()).item()
    assert error == pytest.approx(1 - shares[k - 1], abs=1e-5)


def test_dense_fallback_when_factors_are_not_smaller():
    full = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    assert set(svd_compress(full, 0.999)) == {""}  # rank 4: 4·(4+4+1) = 36 > 16
    tie = low_rank(2, 3, [1.0])  # rank 1: 1·(2+3+1) = 6 = 2·3, dense is exact at the same cost
    assert set(svd_compress(tie, 0.99)) == {""}
    state = {"w": low_rank(50, 40, [2.0]), "b": torch.ones(50), "c": full}
    payload = compress_state(state, 0.99)
    assert sorted(payload) == ["b", "c", "w.S", "w.U", "w.V"]
    assert payload_bytes(payload) == 4 * (50 + 16 + 1 * (50 + 40 + 1))
    shapes = {n: t.shape for n, t in state.items()}
    restored = decompress_state(payload, shapes)
    for name in state:
        torch.testing.assert_close(restored[name], state[name], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'x.U'"):
        decompress_state({**payload, "x.U": torch.ones(1)}, shapes)


def test_merged_payloads_decompress_to_the_exact_sum():
    shapes = {"w": torch.Size((30, 20)), "b": torch.Size((30,))}
    first = compress_state({"w": low_rank(30, 20, [3.0, 1.0], 4), "b": torch.ones(30)}, 0.9999)
    second = compress_state({"w": low_rank(30, 20, [2.0], 5), "b": torch.full((30,), 2.0)}, 0.9999)
    merged = merge_payloads([first, second], shapes)
    assert merged["w.S"].numel() == 3  # ranks 2 + 1 stacked
    expected = {n: decompress_state(first, shapes)[n] + decompress_state(second, shapes)[n] for n in shapes}
    for name, t in decompress_state(merged, shapes).items():
        torch.testing.assert_close(t, expected[name], atol=1e-5, rtol=0)
    assert merge_payloads([], shapes) == {}


def test_energy_threshold_schedule_per_round():
    assert [energy_schedule(t, 4, 0.9, 1.0) for t in (1, 2, 3, 4)] == pytest.approx([0.925, 0.95, 0.975, 1.0])
    with pytest.raises(ValueError, match="round 5"):
        energy_schedule(5, 4, 0.9, 1.0)
    algorithm, _ = make_algorithm(
        cls=FedKD, algorithm="fedkd", num_clients=1, rounds=4, fedkd_energy_start=0.9, fedkd_energy_end=1.0
    )
    assert algorithm.energy() == pytest.approx(0.925)
    algorithm.begin_round(2)  # the loop announces each round; an empty aggregate changes nothing
    algorithm.aggregate({}, {}, {})
    assert algorithm.energy() == pytest.approx(0.95)
    algorithm.begin_round(4)
    assert algorithm.energy() == pytest.approx(1.0)


# ---- losses --------------------------------------------------------------------------------
def test_adaptive_losses_equal_hand_computed_values():
    t_logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    s_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    h_t = torch.tensor([[1.0, 0.0]], requires_grad=True)
    h_s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    teacher, student = fedkd_losses(t_logits, s_logits, h_t, h_s, y, temperature=1.0, hidden_weight=2.0)
    p = math.exp(2) / (math.exp(2) + 1)  # teacher's probability of class 0
    ce_t, ce_s = -math.log(p), math.log(2)
    kl_t_to_s = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))  # KL(p_t ‖ p_s)
    kl_s_to_t = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))  # KL(p_s ‖ p_t)
    mse = 0.5
    assert teacher.item() == pytest.approx(ce_t + (kl_s_to_t + 2 * mse) / (ce_t + ce_s), rel=1e-6)
    assert student.item() == pytest.approx(ce_s + (kl_t_to_s + 2 * mse) / (ce_t + ce_s), rel=1e-6)
    grads = torch.autograd.grad(teacher, [s_logits, h_s], allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)  # none reach the student


def test_temperature_softens_both_distributions():
    t_logits, s_logits = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    h, y = torch.zeros(1, 3), torch.tensor([0])
    _, student = fedkd_losses(t_logits, s_logits, h, h, y, temperature=2.0, hidden_weight=1.0)
    p = math.exp(2) / (math.exp(2) + 1)  # softmax([4, 0] / 2)
    ce = math.log(1 + math.exp(-4)) + math.log(2)
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert student.item() == pytest.approx(math.log(2) + kl / ce, rel=1e-6)


# ---- the algorithm -------------------------------------------------------------------------
def play_round(algorithm, clients, server, sampled):
    uploads, weights = {}, {}
    for c in sampled:
        algorithm.receive(c, algorithm.broadcast(server, c))
        algorithm.local_update(c, torch.Generator().manual_seed(c.cid))
        uploads[c.cid] = algorithm.upload(c)
        weights[c.cid] = float(c.data.num_train)
    return algorithm.aggregate(server, uploads, weights)


def same_payload(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_student_is(client, server, atol):
    for name, t in client.state["student"].state_dict().items():
        torch.testing.assert_close(t, server[name], atol=atol, rtol=0)


@pytest.mark.slow
def test_after_a_round_every_client_holds_the_global_student():
    algorithm, clients = make_algorithm(cls=FedKD, algorithm="fedkd", num_clients=2, rounds=2, models="cnn5")
    start = algorithm.initial_server_state()
    assert all(algorithm.broadcast(start, c) == {} for c in clients)  # shared θ⁰: round 1 is free
    algorithm.synced.clear()
    server = play_round(algorithm, clients, start, clients)
    assert any(not torch.equal(server[n], start[n]) for n in server)
    for c in clients:
        down = algorithm.broadcast(server, c)
        assert same_payload(down, algorithm.history[0])  # the round's compressed global step
        assert 0 < payload_bytes(down) < CNN5_BYTES
        algorithm.receive(c, down)
        assert_student_is(c, server, atol=0)  # the very same step on the very same start


@pytest.mark.slow
def test_a_client_that_missed_rounds_lands_exactly_on_the_global_student():
    algorithm, (first, late) = make_algorithm(
        cls=FedKD, algorithm="fedkd", num_clients=2, rounds=3, models="cnn5"
    )
    server = algorithm.initial_server_state()
    for _ in range(2):
        server = play_round(algorithm, [first, late], server, [first])
    resumed = FedKD(algorithm.config, algorithm.env)  # as after loading a checkpoint
    resumed.load_state_dict(algorithm.state_dict())
    down = algorithm.broadcast(server, late)
    assert same_payload(resumed.broadcast(server, late), down)
    ranks = [h["fc1.weight.S"].numel() for h in algorithm.history if "fc1.weight.S" in h]
    if len(ranks) == 2 and sum(ranks) * (500 + 800 + 1) < 500 * 800:
        assert down["fc1.weight.S"].numel() == sum(ranks)  # both steps' factors, stacked
    assert payload_bytes(down) <= CNN5_BYTES
    algorithm.receive(late, down)
    assert_student_is(late, server, atol=1e-5)
    assert same_payload(algorithm.broadcast(server, first), algorithm.history[1])


@pytest.mark.slow
def test_steps_no_client_needs_are_folded_so_history_stays_bounded():
    algorithm, (first, late) = make_algorithm(
        cls=FedKD, algorithm="fedkd", num_clients=2, rounds=5, models="cnn5"
    )
    server = algorithm.initial_server_state()
    for _ in range(5):
        server = play_round(algorithm, [first, late], server, [first])
        assert len(algorithm.history) <= 2  # from θ⁰ (late's version) and from first's version
    assert algorithm.version == 5
    resumed = FedKD(algorithm.config, algorithm.env)  # the folded history survives a checkpoint
    resumed.load_state_dict(algorithm.state_dict())
    down = algorithm.broadcast(server, late)
    assert same_payload(resumed.broadcast(server, late), down)
    algorithm.receive(late, down)
    assert_student_is(late, server, atol=1e-5)  # still lands exactly on the global student


@pytest.mark.slow
def test_bad_updates_are_refused_naming_the_client():
    algorithm, clients = make_algorithm(cls=FedKD, algorithm="fedkd", num_clients=2)
    server = algorithm.initial_server_state()
    good = algorithm.upload(clients[0])  # zero update: rank-0 factors and zero biases
    nan = {k: torch.full_like(v, float("nan")) if k == "fc2.bias" else v for k, v in good.items()}
    with pytest.raises(InvalidUpdateError, match="client 1.*fc2.bias"):
        algorithm.aggregate(server, {0: good, 1: nan}, {0: 1.0, 1: 1.0})
    broken = {k: v for k, v in good.items() if k != "head.bias"}
    with pytest.raises(InvalidUpdateError, match="client 1.*head.bias"):
        algorithm.aggregate(server, {0: good, 1: broken}, {0: 1.0, 1: 1.0})
    wide = {k: v.double() if k == "fc1.bias" else v for k, v in good.items()}
    with pytest.raises(InvalidUpdateError, match="client 1.*fc1.bias.*float64"):
        algorithm.aggregate(server, {0: good, 1: wide}, {0: 1.0, 1: 1.0})
    assert algorithm.history == []  # nothing refused reached the global student


def expected_upload_bytes(update, energy):
    """4 bytes × (k·(m+n+1) per factored matrix, else its numel), k from a hand-rolled threshold."""
    total = 0
    for t in update.values():
        m = t.shape[0]
        n = t.numel() // m
        if t.dim() >= 2:
            sq = torch.linalg.svdvals(t.reshape(m, n)).double().square().numpy()
            k = int(np.argmax(np.cumsum(sq) / sq.sum() >= energy)) + 1 if sq.sum() > 0 else 0
            total += min(k * (m + n + 1), m * n)  # a tie goes dense at the same size
        else:
            total += t.numel()
    return 4 * total


@pytest.mark.slow
def test_two_clients_one_round_through_the_real_loop(monkeypatch):
    monkeypatch.setitem(workbench.loop.runner.REGISTRY, "fedkd", FedKD)
    expected, upload = {}, FedKD.upload

    def spy(self, client):
        received = client.state["received"]
        student = client.state["student"].state_dict()
        update = {n: t.detach() - received[n] for n, t in student.items()}
        expected[client.cid] = expected_upload_bytes(update, self.energy())
        return upload(self, client)

    monkeypatch.setattr(FedKD, "upload", spy)
    config = build_config(
        {
            "algorithm": "fedkd",
            "dataset": "digits",
            "num_clients": 2,
            "rounds": 1,
            "batch_size": 64,
            "device": "cpu",
        }
    )
    table = run_experiment(config).table
    assert list(table["model"]) == ["cnn1", "cnn2"]  # the teachers are evaluated
    assert dict(zip(table["client"], table["bytes_up"])) == expected
    # the same numbers pinned (ranks 1-4 at T = 0.98: one round's updates are nearly rank-1)
    assert list(table["bytes_up"]) == [30_452, 36_500]
    assert ((table["bytes_up"] > 0) & (table["bytes_up"] < CNN5_BYTES)).all()
    assert (table["bytes_down"] == 0).all()  # round 1: everyone already holds θ⁰
    assert (table["train_flops"] > 0).all()
