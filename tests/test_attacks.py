"""Attacks on uploads, and robust aggregation of real FedLoRA adapters under a scaling attack."""

import math

import pytest
import torch
from helpers import make_algorithm

from workbench.config import malicious_count
from workbench.core import facts
from workbench.core.aggregation import Rule, aggregate_by, update_norm, weighted_average
from workbench.loop.attacks import ATTACKS, Attack, apply_attack, malicious_clients, noise, scale, sign_flip


def test_scale_and_sign_flip_act_on_the_update_from_the_received_state():
    received = {"a": torch.tensor([1.0, 1.0]), "n": torch.tensor([3])}
    upload = {"a": torch.tensor([2.0, 3.0]), "n": torch.tensor([5])}
    assert scale(upload, received, 10.0)["a"].tolist() == [11.0, 21.0]  # 1 + 10·(1, 2)
    assert sign_flip(upload, received)["a"].tolist() == [0.0, -1.0]  # 1 − (1, 2)
    assert scale(upload, None, 10.0)["a"].tolist() == [20.0, 30.0]  # an update or a statistic
    assert scale(upload, received, 10.0)["n"].tolist() == [5]  # counts stay honest


def test_noise_is_seeded_by_seed_round_and_client_and_has_the_asked_spread():
    upload = {"a": torch.full((200, 100), 3.0), "n": torch.tensor([4])}
    attack = Attack("noise", std=0.5)
    first = apply_attack(attack, upload, None, seed=1, round_=2, cid=3)
    assert torch.equal(first["a"], apply_attack(attack, upload, None, seed=1, round_=2, cid=3)["a"])
    for other in (
        dict(seed=2, round_=2, cid=3),
        dict(seed=1, round_=3, cid=3),
        dict(seed=1, round_=2, cid=4),
    ):
        assert not torch.equal(first["a"], apply_attack(attack, upload, None, **other)["a"])
    drawn = first["a"] - 3.0
    assert abs(drawn.mean().item()) < 0.02 and abs(drawn.std().item() - 0.5) < 0.02
    assert first["n"].tolist() == [4] and first["a"].dtype == torch.float32


def test_none_changes_nothing_and_unknown_attacks_are_refused():
    upload = {"a": torch.tensor([1.0])}
    assert apply_attack(Attack("none"), upload, upload, 0, 1, 0)["a"].tolist() == [1.0]
    with pytest.raises(ValueError, match="attack='backdoor' is unknown; choose from"):
        apply_attack(Attack("backdoor"), upload, None, 0, 1, 0)
    assert tuple(ATTACKS) == facts.ATTACKS == ("none", "scale", "sign_flip", "noise")
    assert noise(upload, 0.0, torch.Generator().manual_seed(0))["a"].tolist() == [1.0]


@pytest.mark.parametrize("amount, count", [(0, 0), (0.2, 1), (0.5, 3), (0.99, 5), (1, 1), (2, 2), (5, 5)])
def test_malicious_amount_is_a_fraction_below_one_or_a_count(amount, count):
    assert malicious_count(5, amount) == count
    chosen = malicious_clients(5, amount, seed=0)
    assert len(chosen) == count and chosen <= set(range(5))
    assert chosen == malicious_clients(5, amount, seed=0)  # fixed for the run


@pytest.mark.parametrize("amount", [-1, 1.5, 6, math.nan])
def test_impossible_malicious_amounts_are_refused(amount):
    with pytest.raises(ValueError, match="malicious_clients="):
        malicious_count(5, amount)


def test_which_clients_are_malicious_depends_on_the_seed():
    assert len({malicious_clients(10, 2, seed) for seed in range(10)}) > 1


# ---- the acceptance test: 1 of 5 FedLoRA clients scales its update ×1e6 ---------------------
def trained_adapters():
    """θ⁰ and the adapters of 5 FedLoRA clients after one honest round of local training."""
    algorithm, clients = make_algorithm(algorithm="fedlora", num_clients=5)
    theta = algorithm.initial_server_state()
    uploads = {}
    for client in clients:
        algorithm.receive(client, theta)
        algorithm.local_update(client, torch.Generator().manual_seed(client.cid))
        uploads[client.cid] = algorithm.upload(client)
    return theta, uploads


@pytest.mark.slow
def test_robust_rules_keep_the_adapter_near_the_honest_mean_under_a_1e6_scaling_attack():
    """Bound: with f = 1 attacker of K = 5, the coordinate-wise median and the trimmed mean that
    drops ⌊0.2·5⌋ = 1 value at each end are, in every coordinate, within the honest clients'
    range; so ‖robust − honest mean‖∞ ≤ spread = max over honest k of ‖θ_k − honest mean‖∞.
    norm_bounded(τ) with τ ≥ every honest update norm moves it by (w_a/W)·‖u_a' − ū_h‖ ≤
    (w_a/W)·(τ + ‖ū_h‖). The plain mean moves by (w_a/W)·1e6·‖u_a‖."""
    theta, uploads = trained_adapters()
    assert set(theta) == {"head.lora_A", "head.lora_B"}
    assert theta["head.lora_A"].shape == (4, 500) and theta["head.lora_B"].shape == (10, 4)
    attacker = 2
    honest = {cid: u for cid, u in uploads.items() if cid != attacker}
    poisoned = {
        **uploads,
        attacker: apply_attack(
            Attack("scale", factor=1e6), uploads[attacker], theta, seed=0, round_=1, cid=attacker
        ),
    }
    weights = dict.fromkeys(poisoned, 40.0)
    honest_mean = weighted_average(honest, {c: weights[c] for c in honest})

    def deviation(state):  # ‖state − honest mean‖∞ over both tensors
        return max((state[n] - honest_mean[n]).abs().max().item() for n in theta)

    spread = max(deviation(u) for u in honest.values())
    assert 0 < spread < 1  # honest clients disagree a little

    for rule in (Rule("median"), Rule("trimmed_mean", trim=0.2)):
        robust = aggregate_by(rule, poisoned, weights, reference=theta)
        for name in theta:  # inside the honest range, coordinate by coordinate
            stack = torch.stack([u[name] for u in honest.values()])
            assert (robust[name] >= stack.min(0).values - 1e-6).all(), rule
            assert (robust[name] <= stack.max(0).values + 1e-6).all(), rule
        assert deviation(robust) <= spread + 1e-6, rule

    tau = max(update_norm(u, theta) for u in honest.values())
    bounded = aggregate_by(Rule("norm_bounded", max_norm=tau), poisoned, weights, theta, theta)
    mean_step = update_norm(honest_mean, theta)
    l2 = math.sqrt(sum(((bounded[n] - honest_mean[n]).double() ** 2).sum().item() for n in theta))
    assert l2 <= 0.2 * (tau + mean_step) + 1e-5

    plain = aggregate_by(Rule("mean"), poisoned, weights, reference=theta)
    assert deviation(plain) > 1e4 * spread  # the plain mean is dragged away
    assert deviation(plain) == pytest.approx(
        max(
            ((poisoned[attacker][n] - theta[n]) / 5 - (honest_mean[n] - theta[n]) / 5).abs().max().item()
            for n in theta
        ),
        rel=1e-3,
    )
