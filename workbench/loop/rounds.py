"""The pieces of one communication round, shared by the in-process runner and Flower.

Sampling, the per-client batch generator, the evaluation rule, client set-up and evaluation,
and the round itself. Algorithms plug in through the hooks of
`workbench.algorithms.base.Algorithm`; nothing here depends on which algorithm runs. All
randomness is derived from (seed, round, client), so a run is reproducible and can resume from
any round boundary.

Client-level DP (`workbench.loop.privacy`) clips and noises a finite upload on the client
(dp_mode=local) or clips the uploads and noises their aggregate on the server (central).

A refused upload is an event, not a crash. A client whose own upload is not finite (its
training diverged) rolls back: it is restored to its state from before the round and given the
round's download again, i.e. it ends the round as if it had downloaded and not trained, so a
diverged private model never lingers (and server and client stay in step: FedKD's record of
what the client received still holds). The server screens every upload
(`Algorithm.validate_upload`: well-formed, finite) and refuses the bad ones; one that passes the
screen but that the algorithm's own aggregation refuses (a malformed payload, e.g. negative
class counts) is dropped and the aggregation reruns without it; that client keeps its state.
Every refusal is an Event saying what became of the client; a round whose every upload is
refused raises RoundRefusedError. Malicious clients (`workbench.loop.attacks`) poison their
upload after honest training, before the screen.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from workbench.algorithms import Algorithm, Client, Environment
from workbench.algorithms.base import Seed, derived_seed
from workbench.config import ExperimentConfig
from workbench.core.accounting import Ledger, payload_bytes
from workbench.core.aggregation import InvalidUpdateError
from workbench.core.data import Normalizer, client_datasets, load_dataset
from workbench.core.errors import UserError
from workbench.core.facts import Payload
from workbench.core.partition import cap_train, partition, validation_splits
from workbench.core.results import Evaluation, Event, Row
from workbench.core.training import PhaseStats, evaluate
from workbench.loop import privacy
from workbench.loop.attacks import is_malicious, poison_upload
from workbench.loop.devices import Devices, close_round, dropouts, dropped_event, late_event

if TYPE_CHECKING:
    from workbench.loop.store import ClientStore


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' was asked for but torch sees no GPU; use device='auto' or 'cpu'")
    return torch.device(name)


def sample_clients(num_clients: int, fraction: float, seed: int, round_: int) -> list[int]:
    """The clients taking part in a round: max(1, round(C·N)) drawn without replacement."""
    count = max(1, int(round(fraction * num_clients)))
    rng = np.random.default_rng([seed, round_, Seed.SAMPLING])
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def make_clients(config: ExperimentConfig, device: torch.device) -> tuple[list[Client], Environment]:
    """Load the dataset, partition it and create the clients with their data on the device."""
    d = config.data
    ds = load_dataset(d.dataset, d.data_dir, d.download, d.test_fraction, config.run.seed)
    try:
        splits = partition(
            ds.train_y.numpy(),
            ds.test_y.numpy(),
            config.federation.num_clients,
            d.partition,
            d.classes_per_client,
            d.dirichlet_alpha,
            config.run.seed,
        )
        rng = np.random.default_rng([config.run.seed, Seed.SUBSAMPLE])
        splits = cap_train(splits, ds.train_y.numpy(), d.max_train_samples, rng)
        # validation is held out of what the client keeps (the cap is its whole holding)
        held = validation_splits(
            [tr for tr, _ in splits], ds.train_y.numpy(), d.val_fraction, config.run.seed
        )
    except ValueError as error:  # e.g. a client left without samples: the parameters' fault
        raise UserError(f"cannot partition {d.dataset}: {error}") from None
    splits = [(train, test) for (train, _), (_, test) in zip(held, splits)]
    datas = client_datasets(ds, splits, [val for _, val in held], device)  # indices, no copies
    env = Environment(
        num_classes=ds.num_classes, device=device, normalize=Normalizer.for_dataset(ds, device), flip=ds.flip
    )
    clients = [
        Client(cid=k, model_name=name, data=data)
        for k, (name, data) in enumerate(zip(config.client_models(), datas))
    ]
    return clients, env


def prepare(config: ExperimentConfig) -> tuple[list[Client], Environment]:
    """Everything checked before the first round, and the clients it gives: the device, the
    dataset's availability, a partition that leaves no client empty (the parameters and the
    adapter's homogeneity were checked by `build_config`). Flower's launcher calls it too."""
    return make_clients(config, resolve_device(config.run.device))


def evaluates(config: ExperimentConfig, round_: int) -> bool:
    """Whether every client is evaluated after this round (every eval_every-th and the last)."""
    fed = config.federation
    return round_ % fed.eval_every == 0 or round_ == fed.rounds


def round_generator(seed: int, round_: int, cid: int) -> torch.Generator:
    """The generator of a client's batches in a round, reproducible in any process."""
    return torch.Generator().manual_seed(derived_seed(seed, round_, cid, Seed.BATCHES))


def evaluate_client(algorithm: Algorithm, client: Client) -> Evaluation:
    """Accuracy and loss of the client's deployed model on its local test split, the
    diagnostics its method measures in the same pass (`Algorithm.evaluation_probe`) and, when
    it holds one, accuracy and loss on its validation split."""
    probe, modules = algorithm.evaluation_probe(client), algorithm.eval_modules(client)
    accuracy, loss = evaluate(probe, algorithm.test_batches(client), modules)
    diagnostics = probe.values()  # of the test pass only
    if client.data.num_val == 0:
        return Evaluation(accuracy, loss, diagnostics)
    val = evaluate(lambda x: algorithm.predict(client, x), algorithm.val_batches(client), modules)
    return Evaluation(accuracy, loss, diagnostics, *val)


def materialize(algorithm: Algorithm, client: Client) -> None:
    """Set a client up on first use: a client that never trained holds only what its seed gives,
    so it needs no live state until it is sampled (memory grows with participants, not clients)."""
    if not client.state:
        algorithm.setup_client(client)


def evaluation_panel(config: ExperimentConfig, round_: int) -> list[int] | None:
    """The clients a round evaluates (None: every client): a seeded panel of `eval_clients`,
    the same every round, when the federation is larger; every client in the last round."""
    fed = config.federation
    if fed.eval_clients == 0 or fed.eval_clients >= fed.num_clients or round_ == fed.rounds:
        return None
    rng = np.random.default_rng([config.run.seed, Seed.EVALUATION])
    return sorted(int(c) for c in rng.choice(fed.num_clients, size=fed.eval_clients, replace=False))


def evaluate_all(
    algorithm: Algorithm,
    clients: list[Client],
    ledger: Ledger,
    round_: int,
    store: ClientStore | None = None,
    panel: list[int] | None = None,
) -> list[Row]:
    """Evaluate every client (or those of `panel`) on its local test split and settle its
    costs into a row; with a store, clients on disk are read back for it and let go again."""
    rows = []
    for c in clients if panel is None else [clients[cid] for cid in panel]:
        if c.evaluation is None or not algorithm.evaluation_is_local:
            transient = not c.state  # never trained, or on disk: evaluate, then let it go
            if store is None:
                materialize(algorithm, c)
            else:
                store.materialize(c, keep=False)
            c.evaluation = evaluate_client(algorithm, c)
            if transient:
                c.state.clear()
        e = c.evaluation
        rows.append(
            ledger.row(
                round_,
                c.cid,
                c.model_name,
                algorithm.name,
                e.accuracy,
                e.loss,
                c.data.num_train,
                c.data.num_test,
                e.diagnostics,
                val_accuracy=e.val_accuracy,
                val_loss=e.val_loss,
                num_val=c.data.num_val,
            )
        )
    return rows


RESTORED = "rolled back to its state before the round, then given the round's download"
KEPT = "kept its trained state"


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


def aggregate_accepting(
    algorithm: Algorithm, server: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
) -> tuple[dict, list[InvalidUpdateError]]:
    """The algorithm's aggregate over the uploads it accepts: a client its own checks refuse
    is dropped and the aggregation reruns; returns (new state, the refusals)."""
    uploads, weights, refused = dict(uploads), dict(weights), []
    while True:
        try:
            return algorithm.aggregate(server, uploads, weights), refused
        except InvalidUpdateError as error:
            if error.client not in uploads:
                raise
            refused.append(error)
            del uploads[error.client], weights[error.client]


def client_round(
    algorithm: Algorithm, client: Client, down: Payload, round_: int
) -> tuple[PhaseStats, dict[str, Tensor], bool]:
    """A sampled client's part of a round: receive, train, upload; (stats, upload, rolled back).
    A client whose upload is not finite rolls back (see the module doc) and still sends it."""
    before = copy.deepcopy(client.state)  # one client at a time: memory for one extra state
    algorithm.receive(client, down)
    stats = algorithm.local_update(client, round_generator(algorithm.config.run.seed, round_, client.cid))
    upload = dict(algorithm.upload(client))
    if all(torch.isfinite(t).all() for t in upload.values() if t.is_floating_point()):
        return stats, privacy.local_upload(algorithm.config, upload, down, round_, client.cid), False
    client.state = before
    algorithm.receive(client, down)
    return stats, upload, True


def account(
    ledger: Ledger, algorithm: Algorithm, client: Client, stats: PhaseStats, upload: Payload, down: Payload
) -> None:
    """Record a sampled client's round: its costs, optimizer steps per phase and update norm."""
    ledger.add(
        client.cid,
        stats.flops,
        payload_bytes(upload),
        payload_bytes(down),
        stats.mean_loss,
        stats.phase_steps,
        algorithm.update_norm(client, upload, down),
    )


def close_timed_round(
    devices: Devices,
    round_: int,
    ledger: Ledger,
    events: list[Event],
    uploads: dict[int, dict],
    weights: dict[int, float],
    seconds: dict[int, float],
) -> tuple[dict[int, dict], dict[int, float]]:
    """Close a round on the simulated clock (the in-process loop's and Flower's): spend each
    trained client's seconds, advance the clock, record the late clients and keep their
    uploads for the next round when asked; returns what the server aggregates now."""
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


def run_round(
    algorithm: Algorithm,
    clients: list[Client],
    server: dict,
    round_: int,
    ledger: Ledger,
    events: list[Event] | None = None,
    devices: Devices | None = None,
    store: ClientStore | None = None,
) -> dict:
    """One communication round over the sampled clients; returns the new server state.
    Refusals are appended to `events`; RoundRefusedError when every upload is refused. With
    `devices` (workbench.loop.devices) some sampled clients drop out and the round closes at
    its deadline; a round left with no upload keeps the server state. With a store
    (`workbench.loop.store`), clients' state beyond its budget lives on disk."""
    cfg = algorithm.config
    events = events if events is not None else []
    first = len(events)
    algorithm.begin_round(round_)
    sampled = sample_clients(len(clients), cfg.federation.fraction, cfg.run.seed, round_)
    absent = dropouts(devices, cfg.run.seed, round_, sampled)
    for cid in absent:
        events.append(dropped_event(round_, cid, cfg.devices.dropout))
        ledger.miss(cid)
    uploads, weights, seconds = {}, {}, {}
    for cid in (c for c in sampled if c not in absent):
        client = clients[cid]
        if store is None:
            materialize(algorithm, client)
        else:
            store.materialize(client)
        client.evaluation = None  # its state changes from here on
        down = algorithm.broadcast(server, client)
        stats, upload, restored = client_round(algorithm, client, down, round_)
        if is_malicious(cfg, cid):
            upload = poison_upload(algorithm, client, upload, down, round_)
        account(ledger, algorithm, client, stats, upload, down)
        if devices is not None:
            seconds[cid] = devices.seconds(cid, stats.flops, payload_bytes(upload), payload_bytes(down))
        try:
            algorithm.validate_upload(cid, upload, server)  # as a Flower server screens it
        except InvalidUpdateError as error:
            events.append(refusal(round_, error, restored))
            ledger.refuse(cid)
            continue
        uploads[cid], weights[cid] = upload, float(client.data.num_train)
    if devices is not None:
        uploads, weights = close_timed_round(devices, round_, ledger, events, uploads, weights, seconds)
    if not uploads:
        if only_absent(events[first:]):
            return server
        raise RoundRefusedError(round_, events[first:])
    new_state, refused = privacy.aggregate(algorithm, server, uploads, weights, round_)
    for error in refused:
        events.append(refusal(round_, error, False))
        ledger.refuse(error.client)
    if len(refused) == len(uploads):
        raise RoundRefusedError(round_, events[first:])
    return new_state
