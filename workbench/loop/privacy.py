"""Client-level differential privacy on what leaves a client: clipping, Gaussian noise, ε.

A client's update is what its upload changes in the global state it was sent (upload − download,
over every floating tensor taken as one vector); `dp_clip` bounds its L2 norm and
`dp_noise_multiplier` σ calibrates Gaussian noise to that bound. Two places, by `dp_mode`:

- central (DP-FedAvg, McMahan et al. 2018; Flower's server-side fixed clipping): the server clips
  each accepted update to C, averages them with uniform weights (the method's own aggregation
  with every weight 1) and adds N(0, (σC)²) to the sum, i.e. N(0, (σC/m)²) to the mean of the m
  aggregated updates. One client's data moves the sum by at most C.
- local: each client clips its own update and adds N(0, (σC)²) before the upload leaves; the
  server aggregates as the method does. Replacing a client's data moves its update by up to 2C.

Noise is drawn from generators seeded by (seed, round[, client], Seed.DP_NOISE), on the CPU in
float64, so in-process and Flower runs draw the same noise. Only methods whose upload mirrors
the global state are covered (`Algorithm.dp_refusal` says why the others are not; refused by
`config.check_privacy`).

ε at `dp_delta` after t rounds comes from Google's dp-accounting (RDP accountant), never from
hand-written bounds. Central: the round samples a fixed m = max(1, round(C·N)) of N clients
without replacement; ε is accounted as Poisson sampling with q = m/N, the usual DP-FedAvg
approximation (exact when every client takes part, q = 1), for add/remove of one client's
data: `PoissonSampledDpEvent(q, GaussianDpEvent(σ))` composed t times. Local: no amplification
by sampling is claimed (the server sees who uploads); each release is a Gaussian mechanism of
sensitivity 2C, `GaussianDpEvent(σ/2)`, composed t times: the worst case of a client sampled in
every round so far. The optional extra `privacy` holds dp-accounting.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping

import pandas as pd
import torch
from torch import Tensor

from workbench.algorithms import Algorithm
from workbench.algorithms.base import Seed, derived_seed
from workbench.config import ExperimentConfig
from workbench.core.aggregation import InvalidUpdateError, aggregate_accepting, clip_update
from workbench.core.errors import UserError
from workbench.core.facts import EPSILON, Payload

EXTRA = "privacy"


def clips(config: ExperimentConfig) -> bool:
    """Whether updates are clipped (dp_clip > 0): DP is on, with or without noise."""
    return config.privacy.clip > 0


def accounts(config: ExperimentConfig) -> bool:
    """Whether noise is added, so that ε is accounted (dp_noise_multiplier > 0)."""
    return config.privacy.noise_multiplier > 0


def check_available(config: ExperimentConfig) -> None:
    """Name the missing extra before any work when a run accounts ε without dp-accounting."""
    if accounts(config) and importlib.util.find_spec("dp_accounting") is None:
        raise UserError(
            f"dp_noise_multiplier={config.privacy.noise_multiplier:g} needs Google's dp-accounting "
            f"for ε: install the extra with `pip install -e '.[{EXTRA}]'`"
        )


def gaussian(reference: Payload, std: float, generator: torch.Generator) -> dict[str, Tensor]:
    """N(0, std²) per coordinate of each floating tensor, in float64 on the CPU, by name order."""
    return {
        name: torch.normal(0.0, std, t.shape, generator=generator, dtype=torch.float64)
        for name, t in sorted(reference.items())
        if t.is_floating_point()
    }


def noised(payload: Payload, noise: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """payload + noise on the noised tensors, in each tensor's own dtype and device."""
    return {
        name: (t.to(torch.float64) + noise[name].to(t.device)).to(t.dtype) if name in noise else t
        for name, t in payload.items()
    }


def local_upload(config: ExperimentConfig, upload: Payload, down: Payload, round_: int, cid: int) -> Payload:
    """dp_mode=local, on the client: its upload with the update clipped to dp_clip and
    N(0, (σ·dp_clip)²) added; the upload unchanged in central mode or without DP."""
    dp = config.privacy
    if not clips(config) or dp.mode != "local" or not upload:
        return upload
    clipped = clip_update(upload, down, dp.clip)
    if not accounts(config):
        return clipped
    generator = torch.Generator().manual_seed(derived_seed(config.run.seed, round_, cid, Seed.DP_NOISE))
    return noised(clipped, gaussian(clipped, dp.noise_multiplier * dp.clip, generator))


def aggregate(
    algorithm: Algorithm,
    server: Payload,
    uploads: Mapping[int, Payload],
    weights: Mapping[int, float],
    round_: int,
) -> tuple[dict, list[InvalidUpdateError]]:
    """The round's aggregate over the uploads the method accepts (`aggregate_accepting`);
    dp_mode=central: of the updates clipped to dp_clip, uniformly weighted, with N(0, (σC)²)
    added to their sum (σC/m on the mean of the m aggregated)."""
    config = algorithm.config
    dp = config.privacy
    method = functools.partial(algorithm.aggregate, server)
    if not clips(config) or dp.mode != "central":
        return aggregate_accepting(method, uploads, weights)
    clipped = {cid: clip_update(u, server, dp.clip) for cid, u in uploads.items()}
    state, refused = aggregate_accepting(method, clipped, dict.fromkeys(clipped, 1.0))
    aggregated = len(clipped) - len(refused)
    if not accounts(config) or aggregated == 0:
        return state, refused
    generator = torch.Generator().manual_seed(derived_seed(config.run.seed, round_, Seed.DP_NOISE))
    reference = {n: state[n] for n in next(iter(clipped.values())) if n in state}
    noise = gaussian(reference, dp.noise_multiplier * dp.clip / aggregated, generator)
    return {**state, **noised(reference, noise)}, refused


def sampling_rate(config: ExperimentConfig) -> float:
    """q = m/N: the share of clients a round samples (`server_round.sample_clients` draws m of N)."""
    fed = config.federation
    return max(1, int(round(fed.fraction * fed.num_clients))) / fed.num_clients


@functools.lru_cache(maxsize=256)
def epsilon(noise_multiplier: float, q: float, rounds: int, delta: float, mode: str) -> float:
    """ε at δ after `rounds` rounds, from dp-accounting's RDP accountant (see the module doc)."""
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    if mode == "local":
        event = dp_event.GaussianDpEvent(noise_multiplier / 2)  # sensitivity 2C: replace-one
    elif q == 1:
        event = dp_event.GaussianDpEvent(noise_multiplier)
    else:
        event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(noise_multiplier))
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))


def run_epsilon(config: ExperimentConfig, rounds: int) -> float:
    """ε at dp_delta spent by this config's run after `rounds` rounds."""
    dp = config.privacy
    return epsilon(dp.noise_multiplier, sampling_rate(config), rounds, dp.delta, dp.mode)


def with_epsilon(table: pd.DataFrame, config: ExperimentConfig) -> pd.DataFrame:
    """The results table with its `epsilon` column when the run adds noise (else unchanged:
    a run without DP writes today's table)."""
    if not accounts(config):
        return table
    spent = {r: run_epsilon(config, int(r)) for r in table["round"].unique()}
    return table.assign(**{EPSILON: table["round"].map(spent).astype(float)})
