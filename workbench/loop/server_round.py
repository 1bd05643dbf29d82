"""One communication round on the server: the one unit both drivers of a round share.

`ServerRound` decides everything the server decides in a round: which clients it samples and
which of those drop out (`workbench.loop.devices`), what each participant is sent, whether its
upload is accepted or refused, the aggregate (through `workbench.loop.privacy`), the Ledger's
costs and the round's events. The in-process loop (`workbench.loop.rounds.run_round`) drives
it with local client training; the Flower strategy (`workbench.flower.strategy`) with the
messages its ClientApps return. Each driver only carries: it hands every participant's
`TrainingRecord` and upload to `take` (or `lost` for a client that sent none) and calls
`close`. Clients go in id order, so every aggregation sums them in the same order.

A refused upload is an event, not a crash. The server screens every upload
(`Algorithm.validate_upload`: well-formed, finite) and refuses the bad ones; one that passes the
screen but that the algorithm's own aggregation refuses (a malformed payload, e.g. negative
class counts) is dropped and the aggregation reruns without it. A client whose own upload was
not finite rolled back on its side (`rounds.client_round`); its refusal says so. Every refusal
is an Event saying what became of the client; a round whose every upload is refused raises
RoundRefusedError, while a round left with no upload by dropouts or its deadline keeps the
server state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.algorithms import Algorithm, Client
from workbench.algorithms.base import Seed
from workbench.core.accounting import Ledger, TrainingRecord
from workbench.core.aggregation import InvalidUpdateError
from workbench.core.facts import Payload
from workbench.core.results import Event
from workbench.loop import privacy
from workbench.loop.devices import Devices, close_round, dropouts, dropped_event, late_event

RESTORED = "rolled back to its state before the round, then given the round's download"
KEPT = "kept its trained state"


def sample_clients(num_clients: int, fraction: float, seed: int, round_: int) -> list[int]:
    """The clients taking part in a round: max(1, round(C·N)) drawn without replacement."""
    count = max(1, int(round(fraction * num_clients)))
    rng = np.random.default_rng([seed, round_, Seed.SAMPLING])
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


class RoundRefusedError(RuntimeError):
    """Every upload of a round was refused: nothing is left to aggregate."""

    def __init__(self, round_: int, refusals: list[Event]) -> None:
        first = refusals[0] if refusals else None
        example = f"; e.g. client {first.client}: {first.reason}" if first else ""
        super().__init__(
            f"round {round_}: the server refused the upload of every sampled client "
            f"({len(refusals)}){example}"
        )
        self.round, self.refusals = round_, refusals


def refusal(round_: int, error: InvalidUpdateError, rolled_back: bool) -> Event:
    """The event recording a refused upload."""
    return Event(
        round=round_,
        client=error.client,
        event="refused",
        tensor=error.tensor or "",
        reason=error.reason,
        action=RESTORED if rolled_back else KEPT,
    )


def close_timed_round(
    devices: Devices,
    round_: int,
    ledger: Ledger,
    events: list[Event],
    uploads: dict[int, Payload],
    weights: dict[int, float],
    seconds: dict[int, float],
) -> tuple[dict[int, Payload], dict[int, float]]:
    """Close a round on the simulated clock: spend each trained client's seconds, advance the
    clock, record the late clients and keep their uploads for the next round when asked;
    returns what the server aggregates now."""
    closing = close_round(devices, uploads, weights, seconds, ledger.late_uploads)
    for cid, spent in seconds.items():
        ledger.spend(cid, spent)
    ledger.clock += closing.seconds
    ledger.late_uploads = {}
    for cid, spent in sorted(closing.late.items()):
        events.append(late_event(round_, cid, spent, devices.deadline, devices.keep_late))
        ledger.miss(cid)
        if devices.keep_late and cid in uploads:
            ledger.late_uploads[cid] = (uploads[cid], weights[cid])
    return closing.uploads, closing.weights


def only_absent(round_events: list[Event]) -> bool:
    """Whether a round left with no upload lost them to dropout or its deadline, so it keeps
    the server state (True), rather than to refusals alone (RoundRefusedError)."""
    return any(e.event != "refused" for e in round_events)


# on_refusal(round, error): a driver's own record of a refusal (Flower's log and flower.json)
OnRefusal = Callable[[int, InvalidUpdateError], None]


class ServerRound:
    """The server's side of one round, from sampling to the new global state.

    Opening it starts the round (`Algorithm.begin_round`), samples the clients and records those
    that drop out; `participants` are the others, in id order, each to be sent `broadcast(c)`.
    Every participant then comes back through `take` (its costs and its upload) or `lost` (no
    upload arrived), and `close` aggregates what was accepted.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        state: dict,
        round_: int,
        num_clients: int,
        ledger: Ledger,
        events: list[Event],
        devices: Devices | None = None,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        """Start round `round_` over global `state`; events of the round are appended to `events`."""
        cfg = algorithm.config
        self.algorithm, self.state, self.round = algorithm, state, round_
        self.ledger, self.events, self.devices = ledger, events, devices
        self.on_refusal = on_refusal
        self.accepted = 0  # uploads aggregated, once closed
        self._first = len(events)
        self._uploads: dict[int, Payload] = {}
        self._weights: dict[int, float] = {}
        self._seconds: dict[int, float] = {}  # each client's simulated round, with a clock
        self._rolled_back: set[int] = set()
        algorithm.begin_round(round_)
        sampled = sample_clients(num_clients, cfg.federation.fraction, cfg.run.seed, round_)
        absent = dropouts(devices, cfg.run.seed, round_, sampled)
        for cid in absent:  # they are sent nothing
            events.append(dropped_event(round_, cid, cfg.devices.dropout))
            ledger.miss(cid)
        self.participants = [cid for cid in sampled if cid not in absent]

    def broadcast(self, client: Client) -> Payload:
        """What the server sends a participant this round."""
        return self.algorithm.broadcast(self.state, client)

    def take(
        self,
        cid: int,
        training: TrainingRecord,
        upload: Payload | InvalidUpdateError,
        weight: float,
        rolled_back: bool = False,
    ) -> None:
        """A participant's answer: its costs go to the Ledger (and its seconds to the clock);
        its upload (or why it could not be read) is screened and accepted with `weight`, or
        refused; `rolled_back`: the client restored its state because its update diverged."""
        self.ledger.add(cid, training)
        if self.devices is not None:
            self._seconds[cid] = self.devices.seconds(cid, training.flops, training.up, training.down)
        if rolled_back:
            self._rolled_back.add(cid)
        if isinstance(upload, InvalidUpdateError):
            self._refuse(upload)
            return
        try:
            self.algorithm.validate_upload(cid, upload, self.state)
        except InvalidUpdateError as error:
            self._refuse(error)
            return
        self._uploads[cid], self._weights[cid] = upload, weight

    def lost(self, cid: int, down: int, reason: str) -> None:
        """A participant whose upload never arrived (no reply, or its trainer failed): the bytes
        sent to it count, it trained for nothing the server saw, and its upload is refused."""
        self.ledger.add(cid, TrainingRecord(down=down))
        self._refuse(InvalidUpdateError(cid, None, reason))

    def close(self) -> dict:
        """The new global state: the deadline applied (with a clock), the accepted uploads
        aggregated; the state unchanged when dropouts or the deadline left nothing; raises
        RoundRefusedError when refusals left nothing."""
        uploads, weights = self._uploads, self._weights
        if self.devices is not None:
            uploads, weights = close_timed_round(
                self.devices, self.round, self.ledger, self.events, uploads, weights, self._seconds
            )
        if not uploads:
            if only_absent(self.events[self._first :]):
                return self.state
            raise RoundRefusedError(self.round, self.events[self._first :])
        new_state, refused = privacy.aggregate(self.algorithm, self.state, uploads, weights, self.round)
        for error in refused:
            self._refuse(error)
        if len(refused) == len(uploads):
            raise RoundRefusedError(self.round, self.events[self._first :])
        self.accepted = len(uploads) - len(refused)
        return new_state

    def _refuse(self, error: InvalidUpdateError) -> None:
        """Record a refused upload; the round goes on without it."""
        self.events.append(refusal(self.round, error, error.client in self._rolled_back))
        self.ledger.refuse(error.client)
        if self.on_refusal is not None:
            self.on_refusal(self.round, error)
