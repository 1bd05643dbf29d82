"""Per-round cost table: every method's training FLOPs and bytes per client per round.

Counted exactly as the simulation counts them: the same hooks and round function run two rounds
on synthetic client data of the requested size (one client per architecture, all sampled), and
the second round, where every method has global knowledge to send, is reported. FLOPs and bytes
depend only on shapes, never on pixel values, so synthetic data gives the real figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from workbench.algorithms import REGISTRY, Client, Environment
from workbench.config import build_config
from workbench.core.accounting import Ledger
from workbench.core.data import ClientData
from workbench.core.errors import UserError
from workbench.core.facts import REFERENCE_METHOD
from workbench.loop.rounds import run_round

COLUMNS = ["algorithm", "model", "train_flops", "bytes_up", "bytes_down"]


def synthetic_clients(
    models: Sequence[str], samples: int, classes: int, held: int, seed: int
) -> list[Client]:
    """One client per architecture with `samples` random images over `held` classes."""
    g = torch.Generator().manual_seed(seed)
    clients = []
    for cid, name in enumerate(models):
        x = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = (torch.arange(samples) % held + cid) % classes  # each class of the client present
        clients.append(Client(cid=cid, model_name=name, data=ClientData(x, y, x[:1], y[:1])))
    return clients


def method_costs(flat: Mapping[str, Any], algorithm: str, samples_per_client: int) -> pd.DataFrame:
    """One method's per-client costs in a steady-state round (the second)."""
    base = build_config({**flat, "algorithm": algorithm, "device": "cpu"})
    models = list(dict.fromkeys(base.client_models()))  # distinct architectures, in order
    config = base.replace(num_clients=len(models), fraction=1.0, rounds=2, eval_every=1, models=models)
    env = Environment.without_data(config.num_classes, torch.device("cpu"))
    held = config.data.classes_per_client if config.data.partition == "pathological" else config.num_classes
    clients = synthetic_clients(
        config.client_models(), samples_per_client, config.num_classes, held, config.run.seed
    )
    method = REGISTRY[algorithm](config, env)
    for client in clients:
        method.setup_client(client)
    server, ledger = method.initial_server_state(), Ledger()
    for round_ in (1, 2):
        if round_ == 2:
            ledger = Ledger()  # report only the steady-state round
        server = run_round(method, clients, server, round_, ledger)
    rows = []
    for client in clients:
        _, _, flops, up, down, _ = ledger.settle(client.cid)
        rows.append(
            {
                "algorithm": algorithm,
                "model": client.model_name,
                "train_flops": flops,
                "bytes_up": up,
                "bytes_down": down,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def per_round_costs(
    flat: Mapping[str, Any], algorithms: Sequence[str] | None = None, samples_per_client: int = 500
) -> pd.DataFrame:
    """Every method's per-client per-round costs, with each method's mean and ratio to FedLoRA."""
    names = list(algorithms) if algorithms else list(REGISTRY)
    unknown = [a for a in names if a not in REGISTRY]
    if unknown:
        raise UserError(f"algorithms {unknown} are not available; choose from {sorted(REGISTRY)}")
    if samples_per_client < 1:
        raise UserError(f"samples_per_client={samples_per_client} must be >= 1")
    build_config({**flat})  # refuse bad parameters before any training step
    return pd.concat([method_costs(flat, a, samples_per_client) for a in names], ignore_index=True)


def cost_ratios(table: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Mean per-client cost of each method and its ratio to the reference method."""
    means = table.groupby("algorithm", sort=False)[["train_flops", "bytes_up", "bytes_down"]].mean()
    means["bytes_total"] = means["bytes_up"] + means["bytes_down"]
    if reference in means.index:
        ref = means.loc[reference]
        means["flops_vs_" + reference] = means["train_flops"] / ref["train_flops"]
        means["bytes_vs_" + reference] = means["bytes_total"] / ref["bytes_total"]
    return means.reset_index()
