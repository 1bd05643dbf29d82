"""The pieces of one communication round that the in-process runner and Flower share.

The device, the clients and their data, the per-client batch generator, the evaluation rule,
client set-up and evaluation, a sampled client's part of a round (`client_round`) and the
in-process round itself (`run_round`), which drives the server's side,
`workbench.loop.server_round.ServerRound`, with local client training. Algorithms plug in
through the hooks of `workbench.algorithms.base.Algorithm`; nothing here depends on which
algorithm runs. All randomness is derived from (seed, round, client), so a run is reproducible
and can resume from any round boundary.

Client-level DP (`workbench.loop.privacy`) clips and noises a finite upload on the client
(dp_mode=local) or clips the uploads and noises their aggregate on the server (central).

A client whose own upload is not finite (its training diverged) rolls back: it is restored to
its state from before the round and given the round's download again, i.e. it ends the round
as if it had downloaded and not trained, so a diverged private model never lingers (and server
and client stay in step: FedKD's record of what the client received still holds); the server
then refuses its upload (`ServerRound`). Malicious clients (`workbench.loop.attacks`) poison
their upload after honest training, before the server's screen.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from workbench.algorithms import Algorithm, Client, Environment
from workbench.algorithms.base import Seed, derived_seed
from workbench.config import ExperimentConfig
from workbench.core.accounting import EvaluationRecord, Ledger, TrainingRecord, payload_bytes
from workbench.core.data import Normalizer, client_datasets, load_dataset
from workbench.core.errors import UserError
from workbench.core.facts import Payload
from workbench.core.partition import cap_train, partition, validation_splits
from workbench.core.results import Evaluation, Event, Row
from workbench.core.training import PhaseStats, evaluate
from workbench.loop import privacy
from workbench.loop.attacks import is_malicious, poison_upload
from workbench.loop.devices import Devices
from workbench.loop.server_round import ServerRound

if TYPE_CHECKING:
    from workbench.loop.store import ClientStore


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' was asked for but torch sees no GPU; use device='auto' or 'cpu'")
    return torch.device(name)


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


def materialize(algorithm: Algorithm, client: Client, keep: bool = True) -> None:
    """Set a client up on first use: a client that never trained holds only what its seed gives,
    so it needs no live state until it is sampled (memory grows with participants, not clients).
    `keep` is the store's (`ClientStore.materialize`): in memory every client stays live."""
    if not client.state:
        algorithm.setup_client(client)


class MakeLive(Protocol):
    """Gives a client live state before it trains (`keep`) or is only evaluated (not `keep`:
    the caller lets a client it found without state go again)."""

    def __call__(self, client: Client, keep: bool = True) -> None: ...


def live_maker(algorithm: Algorithm, store: ClientStore | None) -> MakeLive:
    """How clients get live state: from the store, when clients beyond a budget live on disk;
    else set up in memory on first use (`materialize`)."""
    if store is not None:
        return store.materialize
    return functools.partial(materialize, algorithm)


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
    make_live: MakeLive | None = None,
    panel: list[int] | None = None,
) -> list[Row]:
    """Evaluate every client (or those of `panel`) on its local test split and settle its
    costs into a row; a client found without live state (never trained, or on disk) is given
    it by `make_live` (default: set up in memory) and let go again."""
    make_live = make_live if make_live is not None else live_maker(algorithm, None)
    rows = []
    for c in clients if panel is None else [clients[cid] for cid in panel]:
        if c.evaluation is None or not algorithm.evaluation_is_local:
            transient = not c.state  # never trained, or on disk: evaluate, then let it go
            make_live(c, keep=False)
            c.evaluation = evaluate_client(algorithm, c)
            if transient:
                c.state.clear()
        record = EvaluationRecord(
            c.cid,
            c.model_name,
            algorithm.name,
            c.evaluation,
            c.data.num_train,
            c.data.num_test,
            c.data.num_val,
        )
        rows.append(ledger.row(round_, record))
    return rows


def client_round(
    algorithm: Algorithm, client: Client, down: Payload, round_: int
) -> tuple[PhaseStats, Payload, bool]:
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


def training_record(
    algorithm: Algorithm, client: Client, stats: PhaseStats, upload: Payload, down: Payload
) -> TrainingRecord:
    """What a sampled client's round cost and did: FLOPs, bytes up and down, its last training
    loss, optimizer steps per phase and the norm of the update it sends."""
    return TrainingRecord(
        flops=stats.flops,
        up=payload_bytes(upload),
        down=payload_bytes(down),
        loss=stats.mean_loss,
        steps=stats.phase_steps,
        update_norm=algorithm.update_norm(client, upload, down),
    )


def run_round(
    algorithm: Algorithm,
    clients: list[Client],
    server: dict,
    round_: int,
    ledger: Ledger,
    events: list[Event] | None = None,
    devices: Devices | None = None,
    make_live: MakeLive | None = None,
) -> dict:
    """One communication round over the sampled clients, trained here; returns the new server
    state. Events are appended to `events`; RoundRefusedError when every upload is refused
    (`ServerRound`). With `devices` (workbench.loop.devices) some sampled clients drop out and
    the round closes at its deadline. `make_live` gives a client live state (`live_maker`;
    default: set up in memory on first use)."""
    cfg = algorithm.config
    make_live = make_live if make_live is not None else live_maker(algorithm, None)
    events = events if events is not None else []
    step = ServerRound(algorithm, server, round_, len(clients), ledger, events, devices)
    for cid in step.participants:
        client = clients[cid]
        make_live(client)
        client.evaluation = None  # its state changes from here on
        down = step.broadcast(client)
        stats, upload, restored = client_round(algorithm, client, down, round_)
        if is_malicious(cfg, cid):
            upload = poison_upload(algorithm, client, upload, down, round_)
        record = training_record(algorithm, client, stats, upload, down)
        step.take(cid, record, upload, float(client.data.num_train), restored)
    return step.close()
