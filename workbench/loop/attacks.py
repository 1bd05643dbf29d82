"""Poisoned uploads, to study robust aggregation: scale, sign-flip and Gaussian noise.

An attack rewrites what a malicious client uploads after its honest local training. Where the
upload mirrors the state the client received (a model, a head, an adapter), scale and sign-flip
act on the client's update u = upload − received, so `scale` sends received + s·u; where the
upload is itself an update or a statistic (FedKD's step, FD's class logits, FedProto's
prototypes) `received` is None and they act on the upload as it is. Only floating tensors
change: class counts stay honest. Noise comes from a generator seeded by (seed, round, client),
so an attacked run is reproducible; which clients are malicious is fixed for the whole run.
`poison_upload` is what the round does with a malicious client's upload, in-process and on a
Flower node alike; the algorithm decides what the attack acts on (`Algorithm.poisoned`).
`refusal_advice` says what a run stopped by refused uploads points to: the attack when one is
configured, with the aggregators that bound a single client's pull, else a step too large.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from workbench.algorithms import Algorithm, Client
from workbench.algorithms.base import Seed, derived_seed
from workbench.config import ExperimentConfig, malicious_count
from workbench.core.facts import AGGREGATORS, Payload

ROBUST = tuple(a for a in AGGREGATORS if a != "mean")  # rules that bound what one client moves


def scale(upload: Payload, received: Payload | None, factor: float) -> dict[str, Tensor]:
    """received + factor·(upload − received) on every floating tensor (received None: zeros)."""
    out = {}
    for name, t in upload.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        base = received[name].to(torch.float64) if received is not None else 0.0
        out[name] = (base + factor * (t.to(torch.float64) - base)).to(t.dtype)
    return out


def sign_flip(upload: Payload, received: Payload | None) -> dict[str, Tensor]:
    """The update reversed: received − (upload − received)."""
    return scale(upload, received, -1.0)


def noise(upload: Payload, std: float, generator: torch.Generator) -> dict[str, Tensor]:
    """upload + N(0, std²) on every floating tensor, drawn on the CPU (same values on any device)."""
    out = {}
    for name, t in upload.items():
        if t.is_floating_point():
            draw = torch.randn(t.shape, generator=generator, dtype=torch.float64) * std
            t = (t.to(torch.float64) + draw.to(t.device)).to(t.dtype)
        out[name] = t
    return out


@dataclass(frozen=True)
class Attack:
    """What malicious clients do to their uploads, with its knobs."""

    kind: str = "none"
    factor: float = -10.0  # scale: the multiplier of the update
    std: float = 1.0  # noise: standard deviation added to every coordinate


ATTACKS: dict[str, Callable[[Attack, Payload, Payload | None, torch.Generator], dict[str, Tensor]]] = {
    "none": lambda attack, up, received, gen: dict(up),
    "scale": lambda attack, up, received, gen: scale(up, received, attack.factor),
    "sign_flip": lambda attack, up, received, gen: sign_flip(up, received),
    "noise": lambda attack, up, received, gen: noise(up, attack.std, gen),
}


def attack_generator(seed: int, round_: int, cid: int) -> torch.Generator:
    """The generator of a client's attack in a round, reproducible in any process."""
    return torch.Generator().manual_seed(derived_seed(seed, round_, cid, Seed.ATTACK))


def apply_attack(
    attack: Attack, upload: Payload, received: Payload | None, seed: int, round_: int, cid: int
) -> dict[str, Tensor]:
    """A malicious client's upload, poisoned as `attack` says."""
    if attack.kind not in ATTACKS:
        raise ValueError(f"attack={attack.kind!r} is unknown; choose from {sorted(ATTACKS)}")
    return ATTACKS[attack.kind](attack, upload, received, attack_generator(seed, round_, cid))


@functools.lru_cache(maxsize=64)
def malicious_clients(num_clients: int, amount: float, seed: int) -> frozenset[int]:
    """The run's malicious clients: a fixed set drawn from the seed (not the first ids, which
    would tie the attack to the zoo's round-robin architectures)."""
    count = malicious_count(num_clients, amount)
    rng = np.random.default_rng([seed, Seed.ATTACK])
    return frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def is_malicious(config: ExperimentConfig, cid: int) -> bool:
    """Whether the client poisons its uploads in this run."""
    attack, fed = config.attack, config.federation
    return attack.attack != "none" and cid in malicious_clients(
        fed.num_clients, attack.malicious_clients, config.run.seed
    )


def poison_upload(
    algorithm: Algorithm, client: Client, upload: Payload, down: Payload, round_: int
) -> Payload:
    """A malicious client's upload after the configured attack."""
    cfg = algorithm.config
    attack = Attack(cfg.attack.attack, cfg.attack.attack_scale, cfg.attack.attack_std)
    return algorithm.poisoned(
        client,
        upload,
        down,
        lambda up, received: apply_attack(attack, up, received, cfg.run.seed, round_, client.cid),
    )


def refusal_advice(config: ExperimentConfig) -> str:
    """What to try after a round whose every upload was refused: name the configured attack and
    the aggregators that could have absorbed it; without one, a step too large."""
    attack, fed = config.attack, config.federation
    count = malicious_count(fed.num_clients, attack.malicious_clients) if attack.attack != "none" else 0
    if not count:
        return (
            "A local update that is not finite usually means a step too large: lower lr, "
            "adapter_lr, lora_plus_ratio, lora_alpha or weight_decay."
        )
    what = {
        "scale": f"scale, updates × {attack.attack_scale:g}",
        "sign_flip": "sign_flip, updates reversed",
        "noise": f"noise, std {attack.attack_std:g}",
    }[attack.attack]
    aggregator, others = config.server.aggregator, [a for a in ROBUST if a != config.server.aggregator]
    absorbed = (
        "an aggregator that could have absorbed them"
        if aggregator == "mean"
        else f"aggregator={aggregator} did not absorb them; others that could"
    )
    return (
        f"The run has {count} malicious client(s) (attack={what}): a poisoned upload that reaches "
        f"the aggregate can make the global state non-finite, and then every client's update; "
        f"{absorbed}: {', '.join(others)} (--aggregator; norm_bounded clips each update to "
        f"--max_update_norm)."
    )
