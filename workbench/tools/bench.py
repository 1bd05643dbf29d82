"""Benchmark harness: the workbench's FL rounds against a bare training loop, side by side,
and what users wait for (first round, refusals, sweep efficiency, the Flower path:
`workbench.tools.bench_waits`).

`python -m workbench.tools.bench [--workloads a,b] [--repeat 3] [--out FILE]`. Each workload runs in
its own process (so its peak resident memory is its own) and measures, alternating:
- bare: the same models (zoo CNN + head LoRA) and losses, trained for exactly the same optimizer
  steps on pre-normalized in-memory tensors, with no sampling, payloads, aggregation,
  augmentation, evaluation or accounting: the limit of this machine;
- workbench: the same rounds through `workbench.loop.runner.run_loop` (evaluation and accounting included).
Round time excludes set-up and the first round (warm-up, FLOP counting); medians over repeats.
Peak memory is that of a separate fresh process running the workbench part once (imports,
data and all clients included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from workbench.algorithms import Client, Environment
from workbench.algorithms.fedlora import FedLoRA
from workbench.algorithms.fedlora.adapters import inject_lora, set_trainable
from workbench.algorithms.fedlora.placements.lora import injected
from workbench.config import ExperimentConfig, build_config
from workbench.core.data import ClientData, SharedClientData
from workbench.core.facts import MAX_CLIENTS
from workbench.core.models import build_model
from workbench.loop.runner import StopRun, run_loop
from workbench.loop.server_round import sample_clients
from workbench.tools.bench_waits import WAITS, WAITS_DEFAULT, measure_wait, summary
from workbench.tools.costs import synthetic_clients


@dataclass(frozen=True)
class Workload:
    """A named benchmark setting (3×32×32 inputs, the CNN-1..5 zoo)."""

    clients: int
    fraction: float
    samples: int  # training samples per client; the test split is a fifth of it
    rounds: int  # timed rounds (one more runs first as warm-up); every round is evaluated
    algorithm: str = FedLoRA.name
    epochs: int = 1
    batch_size: int = 64
    bare: bool = True  # also time the same steps as a bare loop (`bare_steps`: FedLoRA's phases)
    hot_clients: int = 0  # the memory budget (federation.hot_clients; 0: all in memory)
    # cross-device workloads: data as indices into one shared synthetic set (`shared_environment`),
    # evaluation of eval_clients' panel, and the run stopped after its timed rounds, before the
    # last round's evaluation of every client (which set-up of never-trained clients dominates)
    cross_device: bool = False

    def __post_init__(self) -> None:
        if self.bare and self.algorithm != FedLoRA.name:  # the bare loop would time another method
            raise ValueError(f"a {self.algorithm} workload has no bare loop: declare bare=False")


WORKLOADS: dict[str, Workload] = {
    "paper-10": Workload(clients=10, fraction=1.0, samples=250, rounds=3),
    "paper-100": Workload(clients=100, fraction=0.1, samples=250, rounds=3),
    "fedproto-10": Workload(
        clients=10, fraction=1.0, samples=250, rounds=3, algorithm="fedproto", bare=False
    ),
    # growth with the number of clients at C = 0.1 (CIFAR-10's 50k images over 1,000 clients)
    "scale-10": Workload(clients=10, fraction=0.1, samples=50, rounds=5),
    "scale-100": Workload(clients=100, fraction=0.1, samples=50, rounds=5),
    "scale-1000": Workload(clients=1000, fraction=0.1, samples=50, rounds=5),
    # cross-device: 100 clients of 20 images sampled a round, whatever the federation's size
    **{
        f"cross-{name}{'-hot' if hot else ''}": Workload(
            clients=n, fraction=100 / n, samples=20, rounds=5, hot_clients=hot, cross_device=True
        )
        for name, n in (("1k", 1_000), ("10k", 10_000), ("100k", 100_000))
        for hot in (0, 100)
    },
}
DEFAULT = ("paper-10", "paper-100", "fedproto-10", "scale-10", "scale-100", "scale-1000")


def workload_config(w: Workload, device: str) -> ExperimentConfig:
    """The experiment config of a workload (CIFAR-10 shaped, timed rounds + 1 warm-up; a
    cross-device one has one round more, which it never reaches)."""
    config = build_config(
        {
            "algorithm": w.algorithm,
            "dataset": "cifar10",
            "num_clients": min(w.clients, MAX_CLIENTS),
            "fraction": w.fraction if w.clients <= MAX_CLIENTS else 1.0,
            "rounds": w.rounds + 1 + w.cross_device,
            "hot_clients": w.hot_clients,
            "eval_every": 1,
            "model_epochs": w.epochs,
            "adapter_epochs": w.epochs,
            "batch_size": w.batch_size,
            "device": device,
            "augment": False,
        }
    )
    if w.clients <= MAX_CLIENTS:
        return config
    # synthetic data lifts the limit CIFAR's 10,000 test images set (MAX_CLIENTS)
    federation = dataclasses.replace(config.federation, num_clients=w.clients, fraction=w.fraction)
    return dataclasses.replace(config, federation=federation)


def make_environment(config: ExperimentConfig, samples: int) -> tuple[list[Client], Environment]:
    """Synthetic clients with a test split a fifth of the training size, and the environment."""
    device = torch.device(config.run.device)
    clients = synthetic_clients(config.client_models(), samples + samples // 5, 10, 2, seed=0)
    for c in clients:
        x, y = c.data.train_x.to(device), c.data.train_y.to(device)
        c.data = ClientData(x[:samples], y[:samples], x[samples:], y[samples:])
    env = Environment.without_data(10, device)
    return clients, env


POOL_TRAIN, POOL_TEST = 50_000, 10_000  # the shared synthetic set: CIFAR-10's sizes


def shared_environment(config: ExperimentConfig, samples: int) -> tuple[list[Client], Environment]:
    """Clients of a cross-device workload: each holds `samples` training and a fifth as many
    test images as seeded indices (views of one index table) into one shared CIFAR-shaped
    synthetic set, so a client costs a few hundred bytes however many there are."""
    device, n = torch.device(config.run.device), config.federation.num_clients
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (POOL_TRAIN, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    test_images = torch.randint(0, 256, (POOL_TEST, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = (torch.arange(POOL_TRAIN) % 10).to(device)
    test_labels = (torch.arange(POOL_TEST) % 10).to(device)
    train_idx = torch.randint(0, POOL_TRAIN, (n, samples), generator=g).to(device)  # (N, samples)
    test_idx = torch.randint(0, POOL_TEST, (n, max(1, samples // 5)), generator=g).to(device)
    clients = [
        Client(
            cid,
            name,
            SharedClientData(images, labels, test_images, test_labels, train_idx[cid], test_idx[cid]),
        )
        for cid, name in enumerate(config.client_models())
    ]
    return clients, Environment.without_data(10, device)


def environment(config: ExperimentConfig, w: Workload, samples: int) -> tuple[list[Client], Environment]:
    """The workload's clients and environment."""
    return shared_environment(config, samples) if w.cross_device else make_environment(config, samples)


def time_workbench(config: ExperimentConfig, w: Workload, samples: int) -> float:
    """Seconds per round of run_loop, from the end of the warm-up round to the end of the last
    timed one (a cross-device run is stopped there)."""
    clients, env = environment(config, w, samples)
    marks: list[float] = []

    def progress(round_: int, *_: Any) -> None:
        marks.append(time.perf_counter())
        if w.cross_device and round_ == w.rounds + 1:
            raise StopRun("timed rounds done")

    run_loop(config, clients, env, progress=progress)
    return (marks[-1] - marks[0]) / w.rounds


def bare_steps(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mu: float,
    epochs: int,
    batch: int,
    sgd: dict[str, Any],
    generator: torch.Generator,
) -> None:
    """FedLoRA's two phases as a plain loop: same loss, same optimizer steps, no machinery."""
    built = injected(model)  # the same model, typed as PEFT left it
    for phase in ("model", "adapter"):
        set_trainable(model, private=phase == "model", adapter=phase == "adapter")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, **sgd)
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=generator).to(x.device)
            for start in range(0, len(y), batch):
                xb, yb = x[order[start : start + batch]], y[order[start : start + batch]]
                optimizer.zero_grad(set_to_none=True)
                if phase == "model":
                    z = built.features(xb)
                    loss = (1 - mu) * F.cross_entropy(
                        built.head.get_base_layer()(z), yb
                    ) + mu * F.cross_entropy(built.head(z), yb)
                else:
                    loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()


def time_bare(config: ExperimentConfig, w: Workload, samples: int) -> float:
    """Seconds per round of the bare loop over the same sampled clients and steps."""
    clients, env = environment(config, w, samples)
    lora, t = FedLoRA.params_in(config), config.train
    sgd = {"lr": t.lr, "momentum": t.momentum, "weight_decay": t.weight_decay}
    models: dict[int, torch.nn.Module] = {}
    rounds = range(1, w.rounds + 2)
    sampled = {cid for r in rounds for cid in sample_clients(w.clients, w.fraction, config.run.seed, r)}
    data = {cid: (env.normalize(clients[cid].data.train_x), clients[cid].data.train_y) for cid in sampled}
    generator = torch.Generator().manual_seed(0)
    started = 0.0
    for round_ in rounds:
        if round_ == 2:
            started = time.perf_counter()
        for cid in sample_clients(w.clients, w.fraction, config.run.seed, round_):
            if cid not in models:
                models[cid] = inject_lora(
                    build_model(clients[cid].model_name, 10, cid),
                    lora.lora_targets,
                    lora.rank,
                    lora.lora_alpha,
                    0,
                ).to(env.device)
            bare_steps(models[cid], *data[cid], lora.mu, w.epochs, w.batch_size, sgd, generator)
    return (time.perf_counter() - started) / w.rounds


def workbench_peak_rss_mb(name: str, device: str) -> float:
    """Peak resident memory (MB) of a fresh process that runs only the workbench part once."""
    w = WORKLOADS[name]
    time_workbench(workload_config(w, device), w, w.samples)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, repeat: int, device: str) -> dict[str, Any]:
    """One workload's timing medians (bare and workbench alternating, in one process)."""
    w = WORKLOADS[name]
    config = workload_config(w, device)
    bare, bench = [], []
    for _ in range(repeat):  # alternate, so drifting machine load hits both alike
        bare.append(time_bare(config, w, w.samples) if w.bare else float("nan"))
        bench.append(time_workbench(config, w, w.samples))
    bare_s, bench_s = statistics.median(bare), statistics.median(bench)
    participants = max(1, round(w.fraction * w.clients))
    return {
        "workload": name,
        "algorithm": w.algorithm,
        "clients": w.clients,
        "fraction": w.fraction,
        "samples_per_client": w.samples,
        "device": device,
        "bare_s": bare_s,
        "workbench_s": bench_s,
        "ratio": bench_s / bare_s,
        "rounds_per_s": 1 / bench_s,
        "samples_per_s": participants * w.samples * 2 * w.epochs / bench_s,
        "peak_rss_mb": float("nan"),  # filled in from a separate process
        "repeats": repeat,
        "bare_all": bare,
        "workbench_all": bench,
        "workload_spec": asdict(w),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen workloads, print a table and write the JSON list."""
    parser = argparse.ArgumentParser(
        prog="python -m workbench.tools.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--workloads",
        default=",".join(DEFAULT + WAITS_DEFAULT),
        help=f"comma-separated, from {sorted(WORKLOADS)} (steady-state rounds) "
        f"and {sorted(WAITS)} (what users wait for)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repeats per workload (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS and n not in WAITS]
    if unknown or args.repeat < 1:
        parser.error(
            f"unknown workloads {unknown} (choose from {sorted(WORKLOADS)} and {sorted(WAITS)}) or repeat < 1"
        )
    context = multiprocessing.get_context("spawn")
    results = []
    print(
        f"{'workload':16} {'clients':>7} {'bare s/rnd':>10} {'wb s/rnd':>9} {'ratio':>6} "
        f"{'rnd/s':>6} {'samples/s':>9} {'peak MB':>8}"
    )
    for name in names:
        if name in WAITS:  # its own process too: nothing imported or cached beforehand
            with context.Pool(1) as pool:
                results.append(pool.apply(measure_wait, (name, args.repeat)))
            print(f"{name:20} {summary(results[-1])}", flush=True)
            continue
        with context.Pool(1) as pool:
            r = pool.apply(measure, (name, args.repeat, args.device))
        with context.Pool(1) as pool:  # a fresh process: its peak is the workbench's alone
            r["peak_rss_mb"] = pool.apply(workbench_peak_rss_mb, (name, args.device))
        results.append(r)
        print(
            f"{name:16} {r['clients']:7d} {r['bare_s']:10.3f} {r['workbench_s']:9.3f} "
            f"{r['ratio']:6.3f} {r['rounds_per_s']:6.2f} {r['samples_per_s']:9.0f} "
            f"{r['peak_rss_mb']:8.0f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
