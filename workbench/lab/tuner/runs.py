"""The tuner's background runs: one worker thread, the latest setting wins, results cached.

A setting runs off the kernel's main thread, so cells stay runnable. A newer setting (or Stop)
cancels the running one at its next evaluated round: the loop's progress callback raises.
Every evaluated round is handed to `notify` as it finishes. Finished curves are kept per setting
key; a notebook's own finished runs can be added so they are never run again.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.config import ExperimentConfig
from workbench.core.diagnostics import brief, run_warnings
from workbench.core.results import mean_accuracy, to_frame

RunFn = Callable[[ExperimentConfig, Callable[[int, int, dict], None]], pd.DataFrame]


class Cancelled(Exception):
    """Raised inside the loop's progress callback to end a run at a round boundary."""


def setting_key(config: ExperimentConfig) -> str:
    """The cache key of a setting: its full flat config."""
    return json.dumps(config.to_flat(), sort_keys=True)


@dataclass
class Curve:
    """One setting's mean accuracy (%) and cumulative costs per evaluated round, so far."""

    config: ExperimentConfig
    total: int  # rounds planned
    round: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # percent
    gflop: list[float] = field(default_factory=list)  # cumulative training GFLOP, all clients
    mb: list[float] = field(default_factory=list)  # cumulative MB sent, up + down
    state: str = "queued"  # queued | running | done | stopped | superseded | failed
    error: str = ""
    diagnostics: str = ""  # the latest round's diagnostics in one line (core.diagnostics.brief)
    warnings: list[str] = field(default_factory=list)  # what the finished run's table warns of
    started: float = field(default_factory=time.perf_counter)
    stamps: list[float] = field(default_factory=list)  # perf_counter at each drawn round

    def add(self, round_: int, metrics: dict[str, Any]) -> None:
        """Append one evaluated round from the loop's progress metrics."""
        self.round.append(round_)
        self.accuracy.append(100 * metrics["accuracy"])
        self.gflop.append(metrics["cum_train_flops"] / 1e9)
        self.mb.append((metrics["cum_bytes_up"] + metrics["cum_bytes_down"]) / 1e6)
        if metrics.get("rows"):  # the loop's records of this round
            self.diagnostics = brief(to_frame(metrics["rows"]))
        self.stamps.append(time.perf_counter())

    @classmethod
    def from_table(cls, config: ExperimentConfig, table: pd.DataFrame) -> Curve:
        """A finished curve from a results table (e.g. the notebook's main run)."""
        rows = mean_accuracy(table)
        return cls(
            config=config,
            total=config.federation.rounds,
            state="done",
            round=[int(r) for r in rows["round"]],
            accuracy=[100 * float(a) for a in rows["accuracy"]],
            gflop=[float(f) / 1e9 for f in rows["cum_train_flops"]],
            mb=[float(b) / 1e6 for b in rows["cum_bytes"]],
            diagnostics=brief(table),
            warnings=run_warnings(table),
        )

    def progress(self) -> str:
        """'round r of R · 12 s elapsed · ~30 s left' while running."""
        now = time.perf_counter()
        done = self.round[-1] if self.round else 0
        text = f"round {done} of {self.total} · {now - self.started:.0f} s elapsed"
        if len(self.stamps) >= 2:  # rate from drawn rounds, excluding data set-up
            per_round = (self.stamps[-1] - self.stamps[0]) / (self.round[-1] - self.round[0])
            text += f" · ~{per_round * (self.total - done):.0f} s left"
        elif self.stamps:
            text += f" · ~{(self.stamps[0] - self.started) * (self.total - done):.0f} s left"
        return text


_DATA: dict[tuple, tuple[list, Any]] = {}  # prepared client data of the last few data settings


def _clients(config: ExperimentConfig) -> tuple[list, Any]:
    """Fresh clients over client data prepared once per data setting (a knob change reloads
    nothing: the first round of a new setting comes sooner)."""
    from workbench.algorithms import Client
    from workbench.loop.rounds import make_clients, resolve_device

    key = (config.data, config.run.seed, config.run.device, config.federation.num_clients)
    if key not in _DATA:
        clients, env = make_clients(config, resolve_device(config.run.device))
        while len(_DATA) >= 2:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = ([c.data for c in clients], env)
    datas, env = _DATA[key]
    return [
        Client(cid=k, model_name=name, data=data)
        for k, (name, data) in enumerate(zip(config.client_models(), datas, strict=True))
    ], env


def run_preview(config: ExperimentConfig, progress: Callable[[int, int, dict], None]) -> pd.DataFrame:
    """Run one setting in memory (nothing written) and return its results table."""
    from workbench.loop.runner import run_loop

    clients, env = _clients(config)
    return run_loop(config, clients, env, progress=progress).table


class Runner:
    """A worker thread running the latest submitted setting; finished curves are cached."""

    def __init__(self, notify: Callable[[str, Curve], None], run: RunFn = run_preview) -> None:
        self.notify, self.run = notify, run
        self.curves: dict[str, Curve] = {}
        self._cond = threading.Condition()
        self._pending: tuple[str, ExperimentConfig] | None = None
        self._running: str | None = None
        self._cancel: str | None = None  # why the running setting must end: stopped | superseded
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="workbench-tuner", daemon=True)
        self._thread.start()

    def cached(self, key: str) -> bool:
        """Whether a finished curve of this setting exists."""
        curve = self.curves.get(key)
        return curve is not None and curve.state == "done"

    def add_finished(self, config: ExperimentConfig, table: pd.DataFrame) -> str:
        """Cache a finished run made elsewhere (the notebook's own); returns its key."""
        key = setting_key(config)
        self.curves[key] = Curve.from_table(config, table)
        return key

    def submit(self, config: ExperimentConfig) -> str:
        """Make this the wanted setting: cached, already running, or queued (ends a stale run)."""
        key = setting_key(config)
        with self._cond:
            if self.cached(key) or self._running == key:
                self._pending = None
                self._cancel = None if self._running == key else "superseded"
            else:
                self._pending = (key, config)
                self.curves[key] = Curve(config=config, total=config.federation.rounds)
                self._cancel = "superseded" if self._running else None
                self._cond.notify()
        return key

    def stop(self) -> None:
        """Drop the queued setting and stop the running one at its next round boundary."""
        with self._cond:
            if self._pending is not None:
                self.curves[self._pending[0]].state = "stopped"
            self._pending = None
            if self._running is not None:
                self._cancel = "stopped"

    @property
    def running(self) -> str | None:
        """Key of the setting computing now."""
        return self._running

    def close(self, timeout: float = 0.0) -> None:
        """Stop everything and let the worker thread end."""
        self.stop()
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing runs or is queued (tests and benchmarks); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._running is not None or self._pending is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _next(self) -> tuple[str, ExperimentConfig] | None:
        """Block for the next setting (None once closed)."""
        with self._cond:
            while self._pending is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            pending, self._pending = self._pending, None
            assert pending is not None  # the wait ends on a request or on close
            key, config = pending
            self._running, self._cancel = key, None
            return key, config

    def _work(self) -> None:
        """The worker thread: run settings one after another until closed."""
        while (job := self._next()) is not None:
            key, config = job
            curve = self.curves[key] = Curve(config=config, total=config.federation.rounds, state="running")
            self._emit(key, curve)
            try:
                table = self.run(config, functools.partial(self._round, key, curve))
                self.curves[key] = curve = Curve.from_table(config, table)
            except Cancelled as why:
                curve.state = str(why)  # the partial curve stays for a pinned trace
            except Exception as error:  # shown in the tuner; the kernel goes on
                curve.state, curve.error = "failed", f"{type(error).__name__}: {error}"
            self._emit(key, curve)
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _round(self, key: str, curve: Curve, round_: int, total: int, metrics: dict) -> None:
        """Progress callback: draw the round, or end the run if it went stale."""
        if self._cancel is not None and round_ < total:
            raise Cancelled(self._cancel)
        curve.add(round_, metrics)
        self._emit(key, curve)

    def _emit(self, key: str, curve: Curve) -> None:
        """Tell the tuner; a drawing error must not kill the worker thread."""
        try:
            self.notify(key, curve)
        except Exception as error:
            curve.error = f"drawing failed: {type(error).__name__}: {error}"
