"""Where the warning thresholds come from (`MIN_CONTRIBUTION`: FedLoRA's, in
`workbench.algorithms.fedlora.advice`; `MIN_STEPS`: `workbench.core.diagnostics`): prints the figures.

1. MIN_CONTRIBUTION. FedLoRA on digits in settings from an inert to a dominating adapter; after
   every 2nd round each client is evaluated with its adapter on and off. Per bin of the
   adapter's contribution: how many test predictions switching it off changes, and the accuracy
   it changes (per client, and per run: the clients' mean, as the warning reads it).
2. MIN_STEPS. Standalone at the notebook's defaults and with 100 clients: final accuracy with
   few and with ≥ 10 optimizer steps per round (model_epochs), as many rounds.

`.venv/bin/python benchmarks/diagnostic_thresholds.py [--rounds 10] [--out FILE.jsonl]`
(about 20 minutes of one core; settings that diverge are reported and skipped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from workbench.algorithms.fedlora.adapters import adapter_disabled
from workbench.algorithms.fedlora.advice import MIN_CONTRIBUTION
from workbench.config import build_config
from workbench.core.data import eval_batches
from workbench.core.diagnostics import steps_per_round
from workbench.loop.rounds import make_clients, resolve_device
from workbench.loop.runner import RunStoppedError, run_loop

ADAPTERS = [  # from the defaults (inert) to a dominating adapter
    {"adapter_lr": 0.01},
    {"adapter_lr": 0.03},
    {"adapter_lr": 0.1},
    {"adapter_lr": 0.03, "adapter_epochs": 3},
    {"adapter_lr": 0.1, "adapter_epochs": 5},
    {"num_clients": 100, "adapter_lr": 0.01},
    {"num_clients": 100, "adapter_lr": 0.1, "adapter_epochs": 5},
]
TRAINING = [{"num_clients": 10, "model_epochs": e} for e in (1, 4)] + [
    {"num_clients": 100, "model_epochs": e} for e in (1, 10)
]
BINS = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, float("inf")]


def switched_off(clients: list, env, round_: int) -> list[dict]:
    """Per trained client: the share of test predictions and the accuracy the adapter changes."""
    found = []
    for c in (c for c in clients if c.state):
        model, on, off, ys = c.state["model"].eval(), [], [], []
        with torch.no_grad():
            for x, y in eval_batches(c.data.test_x, c.data.test_y, 512, env.normalize):
                on.append(model(x).argmax(1))
                with adapter_disabled(model):
                    off.append(model(x).argmax(1))
                ys.append(y)
        a, b, y = torch.cat(on), torch.cat(off), torch.cat(ys)
        found.append(
            {
                "round": round_,
                "client": c.cid,
                "flips": float((a != b).float().mean()),
                "accuracy_change": float((a == y).float().mean() - (b == y).float().mean()),
            }
        )
    return found


def adapter_records(setting: dict, rounds: int) -> list[dict]:
    """Every evaluated client of one FedLoRA setting with its contribution and what it changes."""
    config = build_config({"rounds": rounds, "eval_every": 2, "device": "cpu", **setting})
    clients, env = make_clients(config, resolve_device("cpu"))
    records: list[dict] = []
    table = run_loop(
        config, clients, env, progress=lambda r, *_: records.extend(switched_off(clients, env, r))
    ).table
    contribution = table.set_index(["round", "client"])["adapter_contribution"]
    return [
        {**r, "setting": json.dumps(setting), "contribution": contribution[r["round"], r["client"]]}
        for r in records
    ]


def contribution_table(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per contribution bin: clients, and runs (mean over clients per evaluated round)."""
    records = records.assign(bin=pd.cut(records["contribution"], BINS, right=False))
    clients = records.groupby("bin", observed=True).agg(
        evaluations=("flips", "size"),
        flips_mean=("flips", "mean"),
        flips_max=("flips", "max"),
        accuracy_change_mean=("accuracy_change", lambda s: s.abs().mean()),
    )
    runs = records.groupby(["setting", "round"]).agg(
        contribution=("contribution", "mean"), flips=("flips", "mean"), change=("accuracy_change", "mean")
    )
    below = runs["contribution"] < MIN_CONTRIBUTION
    side = below.map({True: f"below {MIN_CONTRIBUTION:.0%}", False: "at or above"}).rename("clients' mean")
    by_side = runs.groupby(side).agg(
        runs=("flips", "size"),
        flips_mean=("flips", "mean"),
        flips_max=("flips", "max"),
        accuracy_change_max=("change", lambda s: s.abs().max()),
    )
    return clients, by_side


def training_rows(rounds: int) -> pd.DataFrame:
    """Standalone's final accuracy against its optimizer steps per round."""
    rows = []
    for setting in TRAINING:
        config = build_config({"algorithm": "standalone", "rounds": rounds, "device": "cpu", **setting})
        clients, env = make_clients(config, resolve_device("cpu"))
        table = run_loop(config, clients, env).table
        final = table[table["round"] == table["round"].max()]["accuracy"].mean()
        rows.append({**setting, "steps_per_round": steps_per_round(table)["model"], "final_accuracy": final})
    return pd.DataFrame(rows)


def main() -> None:
    """Run both measurements and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write every client record here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    for setting in ADAPTERS:
        try:
            records += adapter_records(setting, args.rounds)
        except RunStoppedError as error:
            print(f"{setting}: diverged ({str(error).split(';')[0]}); skipped")
    frame = pd.DataFrame(records)
    if args.out:
        frame.to_json(args.out, orient="records", lines=True)
    clients, runs = contribution_table(frame)
    print("Switching the adapter off, per client, by its contribution:\n" + clients.to_string())
    print("\nPer run and evaluated round (the warning's reading):\n" + runs.to_string())
    print(
        "\nStandalone, final mean accuracy by optimizer steps per round:\n"
        + training_rows(args.rounds * 2).to_string()
    )


if __name__ == "__main__":
    main()
