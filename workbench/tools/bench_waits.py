"""Benchmark workloads for what users wait for, beside the steady-state rounds of `bench`.

- first-round-<method>: from starting `python -m workbench run` to its first evaluated round
  being printed (imports, data, set-up and one round: what a user waits for);
- refusal: `python -m workbench run --rnak 4` until it exits 2 with its did-you-mean;
- flower-refusal: a partition that leaves a client without test data, until it exits 2, on
  Flower (`python -m workbench.flower simulate`, refused before Ray starts) and in-process;
- sweep-small / sweep-demo: sweep efficiency (Σ experiment time ÷ (wall × workers)) of a
  demo-shaped sweep and of the demo sweep itself, on warm kernels and, for comparison, on a
  fresh kernel per point (how points ran before warm kernels);
- flower-10 / flower-100: wall time of the same LG-FedAvg run on Flower's simulation engine
  and in-process, in all (Ray's start-up included: users wait for it too) and per round in
  steady state (what each further round costs).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from workbench.lab.shipped import shipped

DEMO = shipped("notebooks/sweeps/demo.yaml")
RUN = [sys.executable, "-m", "workbench", "run"]
SMALL_RUN = ["--dataset", "digits", "--num_clients", "10", "--rounds", "2", "--device", "cpu"]


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has used: robust to a busy machine."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def first_round(algorithm: str, repeat: int) -> dict[str, Any]:
    """Seconds (wall, and CPU of the process) from process start to the first evaluated round's
    line (medians of repeats)."""
    walls, cpus = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            process = subprocess.Popen(
                [*RUN, *SMALL_RUN, "--algorithm", algorithm, "--out", out], stdout=subprocess.PIPE, text=True
            )
            first, lines = None, process.stdout
            assert lines is not None  # stdout=PIPE
            for line in lines:  # read to the end: the run finishes its second round
                if first is None and line.startswith("round 1/"):
                    first = time.perf_counter() - started
                    cpus.append(cpu_seconds(process.pid))
            if process.wait() != 0 or first is None:
                raise RuntimeError(f"`workbench run --algorithm {algorithm}` failed")
            walls.append(first)
    return {
        "first_round_s": statistics.median(walls),
        "first_round_cpu_s": statistics.median(cpus),
        "all_s": walls,
        "all_cpu_s": cpus,
        "command": " ".join(["python -m workbench run", *SMALL_RUN, "--algorithm", algorithm]),
    }


def refusal(repeat: int) -> dict[str, Any]:
    """Seconds until `run --rnak 4` is refused with status 2 and a did-you-mean (median)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([*RUN, "--rnak", "4"], capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 2 or "did you mean 'rank'" not in done.stderr:
            raise RuntimeError(f"not refused as expected: {done.returncode} {done.stderr!r}")
    return {
        "refusal_s": statistics.median(times),
        "all_s": times,
        "exit_status": 2,
        "command": "python -m workbench run --rnak 4",
    }


EMPTY_CLIENT = ["--partition", "dirichlet", "--dirichlet_alpha", "0.5", "--num_clients", "100"]


def flower_refusal(repeat: int) -> dict[str, Any]:
    """Seconds until a partition leaving a client empty exits 2 on Flower and in-process
    (medians, alternating); both must print the same message."""
    commands = {
        "flower": [sys.executable, "-m", "workbench.flower", "simulate", *EMPTY_CLIENT],
        "in_process": [*RUN, *EMPTY_CLIENT],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        messages = set()
        for name, command in commands.items():
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                done = subprocess.run([*command, "--out", out], capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
            if done.returncode != 2 or "cannot partition" not in done.stderr:
                raise RuntimeError(f"{name}: not refused as expected: {done.returncode} {done.stderr!r}")
            messages.add(done.stderr.strip())
        if len(messages) != 1:
            raise RuntimeError(f"Flower and in-process refuse with different messages: {messages}")
    return {
        "flower_refusal_s": statistics.median(times["flower"]),
        "in_process_refusal_s": statistics.median(times["in_process"]),
        "all_s": times,
        "exit_status": 2,
        "command": "python -m workbench.flower simulate " + " ".join(EMPTY_CLIENT),
    }


def small_spec() -> dict[str, Any]:
    """The demo sweep's shape (its data, clients, rounds and epochs; a rank × μ grid beside
    baselines run once) with fewer points: 2 × 2 FedLoRA points and 4 baselines."""
    spec = yaml.safe_load(DEMO.read_text())
    spec["grid"] = {"algorithm": ["fedlora"], "rank": [1, 10], "mu": [0.0, 1.0]}
    spec["also"] = [{"algorithm": ["standalone", "lg_fedavg", "fedproto", "fml"]}]
    return spec


def sweep_efficiency(
    spec: Callable[[], dict[str, Any]], workers: int, repeat: int, fresh: bool = True
) -> dict[str, Any]:
    """The efficiency record of the sweep on warm kernels (and on fresh kernels per point): one
    run each whatever `repeat` says (a sweep runs for minutes; its record sums many points)."""
    from workbench.lab.sweep.executor_base import Execution
    from workbench.lab.sweep.run import run_sweep

    result: dict[str, Any] = {"points": None}
    for kernels in ("warm", "fresh")[: 2 if fresh else 1]:
        with tempfile.TemporaryDirectory() as out:
            run_sweep(
                spec(),
                out,
                report=False,
                execution=Execution(workers=workers, fresh_kernels=kernels == "fresh"),
            )
            record = json.loads((Path(out) / "sweep.json").read_text())
        result[kernels] = record["efficiency"]
        result["points"] = len(record["points"])
    result["efficiency"] = result["warm"]["efficiency"]
    return result


def flower_path(clients: int, fraction: float, rounds: int, repeat: int) -> dict[str, Any]:
    """Wall seconds of one LG-FedAvg run on Flower's simulation engine and in-process, in all
    and per round in steady state (median of rounds 2.., training to evaluation)."""
    from workbench.config import build_config
    from workbench.flower.server_app import FLOWER_FILE
    from workbench.flower.simulation import simulate
    from workbench.loop.runner import run_experiment

    flat = {
        "algorithm": "lg_fedavg",
        "dataset": "digits",
        "num_clients": clients,
        "fraction": fraction,
        "rounds": rounds,
        "device": "cpu",
        "seed": 0,
    }
    config = build_config(flat)

    def in_process(run_dir: Path) -> list[float]:
        ends = [time.perf_counter()]
        run_experiment(config, run_dir, progress=lambda *_: ends.append(time.perf_counter()))
        return [b - a for a, b in zip(ends[1:], ends[2:])]  # rounds 2..: set-up and round 1 excluded

    def flower(run_dir: Path) -> list[float]:
        simulate(config, run_dir)
        return json.loads((run_dir / FLOWER_FILE).read_text())["round_seconds"][1:]

    walls: dict[str, list[float]] = {"in_process": [], "flower": []}
    rounds_s: dict[str, list[float]] = {"in_process": [], "flower": []}
    for _ in range(repeat):  # alternating, so drifting machine load hits both alike
        for name, run in (("in_process", in_process), ("flower", flower)):
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                rounds_s[name] += run(Path(out) / "run")
                walls[name].append(time.perf_counter() - started)
    in_process_s, flower_s = (statistics.median(walls[k]) for k in ("in_process", "flower"))
    in_round, flower_round = (statistics.median(rounds_s[k]) for k in ("in_process", "flower"))
    return {
        "in_process_s": in_process_s,
        "flower_s": flower_s,
        "ratio": flower_s / in_process_s,
        "in_process_round_s": in_round,
        "flower_round_s": flower_round,
        "round_ratio": flower_round / in_round,
        "all_s": walls,
        "config": {k: v for k, v in flat.items() if k not in ("device", "seed")},
    }


WAITS: dict[str, Callable[[int], dict[str, Any]]] = {
    "first-round-fedlora": partial(first_round, "fedlora"),
    "first-round-fedavg": partial(first_round, "fedavg"),
    "refusal": refusal,
    "flower-refusal": flower_refusal,
    "sweep-small": partial(sweep_efficiency, small_spec, 2),
    "sweep-demo": partial(sweep_efficiency, lambda: yaml.safe_load(DEMO.read_text()), 2, fresh=False),
    "flower-10": partial(flower_path, 10, 1.0, 20),
    "flower-100": partial(flower_path, 100, 0.1, 20),
}
WAITS_DEFAULT = (
    "refusal",
    "first-round-fedlora",
    "first-round-fedavg",
    "sweep-small",
    "flower-10",
    "flower-100",
)


def measure_wait(name: str, repeat: int) -> dict[str, Any]:
    """One wait workload's record (run in its own process by the harness)."""
    return {"workload": name, **WAITS[name](repeat)}


def summary(record: dict[str, Any]) -> str:
    """One line per wait workload for the harness's table."""
    keys = (
        "refusal_s",
        "flower_refusal_s",
        "in_process_refusal_s",
        "first_round_s",
        "first_round_cpu_s",
        "efficiency",
        "in_process_s",
        "flower_s",
        "ratio",
        "in_process_round_s",
        "flower_round_s",
        "round_ratio",
    )
    return " ".join(f"{k}={record[k]:.3f}" for k in keys if isinstance(record.get(k), float))
