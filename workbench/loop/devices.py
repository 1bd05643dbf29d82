"""Unreliable clients and a simulated clock: who drops out of a round, how long each client's
round takes on its device, and which uploads miss the round's deadline (issue 29).

Applied by the server's side of a round (`workbench.loop.server_round.ServerRound`), which the
in-process round and the Flower strategy share, so both drop the same clients and close each
round at the same simulated second.

- **Dropout**: each sampled client drops out of a round with probability `dropout`, drawn from
  (seed, round, `Seed.DROPOUT`): it receives nothing, trains nothing, sends nothing, and the
  round goes on without it (an event `dropped`).
- **Devices**: each client gets a compute speed (FLOP/s) and a bandwidth (bytes/s, up and
  down alike), the medians `device_flops` and `device_bandwidth` spread by `device_profile`,
  drawn once from (seed, `Seed.DEVICES`). `device_flops` 0 means no clock (the default).
- **The clock**: a client's round takes download ÷ bandwidth + its exact training FLOPs ÷
  compute + upload ÷ bandwidth simulated seconds. A round ends when its last upload arrives,
  or at `round_deadline` when some client misses it; the run's clock is the sum of its rounds.
- **Stragglers**: an upload that arrives after the deadline is dropped (`late_uploads=drop`)
  or kept by the server and aggregated with the next round's uploads (`next_round`; a fresh
  upload of the same client supersedes it). Either way the straggler trained, and its costs
  count.

Results gain `sim_seconds` (a client's busy seconds since its previous row), `sim_time` (the
clock when the round closed) and `missed` (rounds it dropped out of or was late in) when the
clock, dropout or a deadline is on; with all three off nothing here runs. Nothing here imports
torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from workbench.config import DevicesConfig
from workbench.core.facts import DEVICE_PROFILES, LATE_UPLOADS, Payload, Seed
from workbench.core.results import Event

TIERS = (0.25, 1.0, 4.0)  # `tiers`: slow, medium and fast devices, drawn with equal probability
__all__ = ["DEVICE_PROFILES", "LATE_UPLOADS", "Devices", "close_round", "devices_for", "dropouts"]

DROPPED = "dropped"
LATE = "late"


@dataclass(frozen=True)
class Devices:
    """Every client's device (None: no clock) and the round rules of one run."""

    dropout: float
    compute: tuple[float, ...] | None  # FLOP/s per client
    bandwidth: tuple[float, ...] | None  # bytes/s per client, up and down
    deadline: float  # simulated seconds; 0: none
    keep_late: bool  # late uploads go into the next round

    def seconds(self, cid: int, flops: int, up: int, down: int) -> float:
        """A client's simulated round: download, training, upload (0 without a clock)."""
        if self.compute is None or self.bandwidth is None:
            return 0.0
        return (down + up) / self.bandwidth[cid] + flops / self.compute[cid]


def devices_for(config: DevicesConfig, seed: int, num_clients: int) -> Devices | None:
    """The run's Devices from its `devices` section, or None when nothing is on (today's rounds)."""
    if config.dropout == 0 and config.device_flops == 0:
        return None
    compute = bandwidth = None
    if config.device_flops > 0:
        factors = profile_factors(config.device_profile, config.device_sigma, seed, num_clients)
        compute = tuple(float(config.device_flops * f) for f in factors[0])
        bandwidth = tuple(float(config.device_bandwidth * f) for f in factors[1])
    return Devices(
        dropout=float(config.dropout),
        compute=compute,
        bandwidth=bandwidth,
        deadline=float(config.round_deadline),
        keep_late=config.late_uploads == "next_round",
    )


def profile_factors(profile: str, sigma: float, seed: int, num_clients: int) -> np.ndarray:
    """Per client, the factors (compute, bandwidth) on the medians: a (2, N) array."""
    if profile == "same":
        return np.ones((2, num_clients))
    rng = np.random.default_rng([seed, Seed.DEVICES])
    if profile == "lognormal":  # median 1: half the devices slower, half faster
        return np.exp(rng.normal(0.0, sigma, size=(2, num_clients)))
    tier = rng.integers(0, len(TIERS), size=num_clients)  # one tier per device: both speeds
    return np.tile(np.asarray(TIERS)[tier], (2, 1))


def dropouts(devices: Devices | None, seed: int, round_: int, sampled: list[int]) -> list[int]:
    """The sampled clients that drop out of this round (sorted)."""
    if devices is None or devices.dropout == 0 or not sampled:
        return []
    draws = np.random.default_rng([seed, round_, Seed.DROPOUT]).random(len(sampled))
    return [cid for cid, u in zip(sampled, draws) if u < devices.dropout]


def dropped_event(round_: int, cid: int, dropout: float) -> Event:
    """The event of a client that dropped out of a round."""
    return Event(
        round=round_,
        client=cid,
        event=DROPPED,
        tensor="",
        reason=f"dropped out of the round (dropout={dropout:g})",
        action="received nothing, trained nothing, sent nothing",
    )


@dataclass
class Closing:
    """What the server aggregates when a round closes, and what the closing decided."""

    uploads: dict[int, Payload]
    weights: dict[int, float]
    seconds: float  # the round's simulated duration
    late: dict[int, float]  # client → its seconds, for those that missed the deadline
    delivered: list[int]  # clients whose late upload of the previous round is aggregated now


def close_round(
    devices: Devices,
    uploads: Mapping[int, Payload],
    weights: Mapping[int, float],
    seconds: Mapping[int, float],
    pending: Mapping[int, tuple[Payload, float]],
) -> Closing:
    """Apply the deadline to a round's accepted uploads (`seconds`: each trained client's round)
    and add last round's late uploads (`pending`) that no fresh upload supersedes; clients in
    id order, as every aggregation sums them."""
    deadline = devices.deadline
    late = {c: s for c, s in seconds.items() if deadline > 0 and s > deadline}
    longest = max(seconds.values(), default=0.0)
    duration = deadline if late or (deadline > 0 and not seconds) else longest
    on_time = {c: u for c, u in uploads.items() if c not in late}
    delivered = sorted(c for c in pending if c not in on_time)
    merged = {**on_time, **{c: pending[c][0] for c in delivered}}
    merged_weights = {**{c: weights[c] for c in on_time}, **{c: pending[c][1] for c in delivered}}
    order = sorted(merged)
    return Closing(
        uploads={c: merged[c] for c in order},
        weights={c: merged_weights[c] for c in order},
        seconds=float(duration),
        late=late,
        delivered=delivered,
    )


def late_event(round_: int, cid: int, seconds: float, deadline: float, kept: bool) -> Event:
    """The event of an upload that missed the round's deadline."""
    return Event(
        round=round_,
        client=cid,
        event=LATE,
        tensor="",
        reason=f"its round took {seconds:.3g} simulated seconds, past the deadline of {deadline:g} s",
        action=f"upload aggregated in round {round_ + 1}" if kept else "upload dropped",
    )
