"""The pieces of one communication round, shared by the in-process runner and Flower.

Sampling, the per-client batch generator, the evaluation rule, client set-up and evaluation,
and the round itself. Algorithms plug in through the hooks of
`workbench.algorithms.base.Algorithm`; nothing here depends on which algorithm runs. All
randomness is derived from (seed, round, client), so a run is reproducible and can resume from
any round boundary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from workbench.algorithms import Algorithm, Client, Environment
from workbench.algorithms.base import Seed, derived_seed
from workbench.core.accounting import Ledger, payload_bytes
from workbench.config import ExperimentConfig
from workbench.core.data import ClientData, Normalizer, client_datasets, load_dataset
from workbench.core.partition import partition
from workbench.core.results import Row
from workbench.core.training import evaluate


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no GPU; use device='auto' or 'cpu'")
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
    splits = partition(ds.train_y.numpy(), ds.test_y.numpy(), config.federation.num_clients,
                       d.partition, d.classes_per_client, d.dirichlet_alpha, config.run.seed)
    datas = [ClientData(*(t.to(device) for t in dataclasses.astuple(cd)))
             for cd in client_datasets(ds, splits)]
    env = Environment(num_classes=ds.num_classes, device=device,
                      normalize=Normalizer.for_dataset(ds, device), flip=ds.flip)
    clients = [Client(cid=k, model_name=name, data=data)
               for k, (name, data) in enumerate(zip(config.client_models(), datas))]
    return clients, env


def evaluates(config: ExperimentConfig, round_: int) -> bool:
    """Whether every client is evaluated after this round (every eval_every-th and the last)."""
    fed = config.federation
    return round_ % fed.eval_every == 0 or round_ == fed.rounds


def round_generator(seed: int, round_: int, cid: int) -> torch.Generator:
    """The generator of a client's batches in a round, reproducible in any process."""
    return torch.Generator().manual_seed(derived_seed(seed, round_, cid, Seed.BATCHES))


def evaluate_client(algorithm: Algorithm, client: Client) -> tuple[float, float]:
    """Accuracy and loss of the client's deployed model on its local test split."""
    return evaluate(lambda x: algorithm.predict(client, x), algorithm.test_batches(client),
                    algorithm.eval_modules(client))


def materialize(algorithm: Algorithm, client: Client) -> None:
    """Set a client up on first use: a client that never trained holds only what its seed gives,
    so it needs no live state until it is sampled (memory grows with participants, not clients)."""
    if not client.state:
        algorithm.setup_client(client)


def evaluate_all(algorithm: Algorithm, clients: list[Client], ledger: Ledger, round_: int) -> list[Row]:
    """Evaluate every client on its local test split and settle its costs into a row."""
    rows = []
    for c in clients:
        if c.evaluation is None or not algorithm.evaluation_is_local:
            transient = not c.state  # never trained: evaluate its initial state, then let it go
            materialize(algorithm, c)
            c.evaluation = evaluate_client(algorithm, c)
            if transient:
                c.state.clear()
        rows.append(ledger.row(round_, c.cid, c.model_name, algorithm.name, *c.evaluation,
                               c.data.num_train, c.data.num_test))
    return rows


def run_round(algorithm: Algorithm, clients: list[Client], server: dict, round_: int,
              ledger: Ledger) -> dict:
    """One communication round over the sampled clients; returns the new server state."""
    cfg = algorithm.config
    algorithm.begin_round(round_)
    sampled = sample_clients(len(clients), cfg.federation.fraction, cfg.run.seed, round_)
    uploads, weights = {}, {}
    for cid in sampled:
        client = clients[cid]
        materialize(algorithm, client)
        client.evaluation = None  # its state changes from here on
        down = algorithm.broadcast(server, client)
        algorithm.receive(client, down)
        stats = algorithm.local_update(client, round_generator(cfg.run.seed, round_, cid))
        uploads[cid] = algorithm.upload(client)
        weights[cid] = float(client.data.num_train)
        ledger.add(cid, stats.flops, payload_bytes(uploads[cid]), payload_bytes(down),
                   stats.mean_loss)
    return algorithm.aggregate(server, uploads, weights)


