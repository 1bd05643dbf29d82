"""The one round loop: sampling, download, local update, upload, aggregation, evaluation, accounting.

Algorithms plug in through the hooks of `workbench.algorithms.base.Algorithm`; nothing here
depends on which algorithm runs. All randomness is derived from (seed, round, client), so a run
is reproducible and can resume from any round boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.accounting import payload_bytes
from workbench.algorithms import REGISTRY, Algorithm, Client, Environment
from workbench.algorithms.base import derived_seed
from workbench.config import ExperimentConfig
from workbench.data import ClientData, Normalizer, client_datasets, load_dataset
from workbench.partition import partition
from workbench import checkpoint
from workbench.results import COST_COLUMNS, TABLE_FILE, Row, read_run, summarize, to_frame, write_run
from workbench.training import evaluate

Progress = Callable[[int, int, dict], None]


@dataclass
class RunResult:
    """A finished run: its config, its tidy table, its summary and where it was written."""

    config: ExperimentConfig
    table: pd.DataFrame
    summary: dict
    run_dir: Path | None = None


@dataclass
class Ledger:
    """Costs per client accumulated since that client's last evaluated row."""

    flops: dict[int, int] = field(default_factory=dict)
    up: dict[int, int] = field(default_factory=dict)
    down: dict[int, int] = field(default_factory=dict)
    train_loss: dict[int, float] = field(default_factory=dict)

    def add(self, cid: int, flops: int, up: int, down: int, loss: float) -> None:
        """Record one client's costs for one round."""
        self.flops[cid] = self.flops.get(cid, 0) + flops
        self.up[cid] = self.up.get(cid, 0) + up
        self.down[cid] = self.down.get(cid, 0) + down
        self.train_loss[cid] = loss

    def row(self, round_: int, cid: int, model: str, algorithm: str, accuracy: float, loss: float,
            num_train: int, num_test: int) -> Row:
        """A client's table row: its evaluation and its costs settled since its previous row."""
        took_part, train_loss, flops, up, down = self.settle(cid)
        return Row(round=round_, client=cid, model=model, algorithm=algorithm,
                   participated=took_part, accuracy=accuracy, loss=loss, train_loss=train_loss,
                   train_flops=flops, bytes_up=up, bytes_down=down, num_train=num_train,
                   num_test=num_test)

    def settle(self, cid: int) -> tuple[bool, float, int, int, int]:
        """(participated, last train loss, flops, up, down) since the last settlement; then reset."""
        took_part = cid in self.flops
        return (took_part, self.train_loss.pop(cid, float("nan")), self.flops.pop(cid, 0),
                self.up.pop(cid, 0), self.down.pop(cid, 0))


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
    rng = np.random.default_rng([seed, round_, 7])
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
    return torch.Generator().manual_seed(derived_seed(seed, round_, cid, 3))


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


def _finished(run_dir: Path, config: ExperimentConfig) -> RunResult | None:
    """The stored result when run_dir already holds a finished run of this exact config."""
    if not (run_dir / TABLE_FILE).exists():
        return None
    flat, table = read_run(run_dir)
    if flat != config.to_flat():
        raise ValueError(f"{run_dir} already holds results of other parameters; choose another "
                         f"output directory (nothing there was changed)")
    return RunResult(config=config, table=table, summary=summarize(table), run_dir=run_dir)


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None,
                   progress: Progress | None = None) -> RunResult:
    """Run one experiment end to end; with out_dir, write its run directory and checkpoints
    (resuming from the last checkpoint, or returning the stored result if it already finished)."""
    run_dir = Path(out_dir) if out_dir is not None else None
    if run_dir is not None and (done := _finished(run_dir, config)) is not None:
        return done
    device = resolve_device(config.run.device)
    clients, env = make_clients(config, device)
    return run_loop(config, clients, env, run_dir, progress)


def run_loop(config: ExperimentConfig, clients: list[Client], env: Environment,
             run_dir: Path | None = None, progress: Progress | None = None) -> RunResult:
    """The rounds of one experiment over prepared clients (resuming from a checkpoint in run_dir)."""
    algorithm = REGISTRY[config.run.algorithm](config, env)
    server, ledger, rows, start = algorithm.initial_server_state(), Ledger(), [], 1
    ckpt = run_dir / checkpoint.CHECKPOINT_FILE if run_dir is not None else None
    if ckpt is not None and ckpt.exists():
        done_round, server, ledger_fields, rows = checkpoint.load(
            ckpt, config.to_flat(), algorithm, clients, env.device, lambda c: materialize(algorithm, c))
        ledger, start = Ledger(**ledger_fields), done_round + 1
    rounds = config.federation.rounds
    every_ckpt = config.run.checkpoint_every if run_dir is not None else 0
    for round_ in range(start, rounds + 1):
        server = run_round(algorithm, clients, server, round_, ledger)
        if evaluates(config, round_):
            new_rows = evaluate_all(algorithm, clients, ledger, round_)
            rows.extend(new_rows)
            if progress is not None:
                progress(round_, rounds, {"accuracy": float(np.mean([r.accuracy for r in new_rows])),
                                          **{f"cum_{c}": sum(getattr(r, c) for r in rows)
                                             for c in COST_COLUMNS}})  # all clients, so far
        if every_ckpt and round_ % every_ckpt == 0 and round_ < rounds:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save(ckpt, round_, config.to_flat(), algorithm, clients, server, ledger, rows)
    table = to_frame(rows)
    if run_dir is not None:
        write_run(run_dir, config.to_flat(), table)
        ckpt.unlink(missing_ok=True)  # the results are written; the checkpoint has served its purpose
    return RunResult(config=config, table=table, summary=summarize(table), run_dir=run_dir)
