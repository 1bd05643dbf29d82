"""The order in which a sweep's points start: longest configuration first, learned as it runs.

A sweep's wall time ends when its last point does; when long points come last (the spec lists
the costly baselines at the end, say), one worker runs them while the others wait. Points that
differ only in their seed take about the same time, so the queue measures each configuration
on its first point: first one point of every configuration, in the spec's order, then the
remaining points longest configuration first (longest-processing-time-first), so a sweep ends
on its shortest points. Durations of points finished in an earlier attempt count as
measurements. Only the order changes: every point still runs once with its own parameters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Job = tuple[str, str, dict[str, Any]]  # point id, point folder, flat parameters


def configuration(flat: Mapping[str, Any]) -> str:
    """What a point's duration depends on: all its parameters but the seed."""
    return json.dumps({k: v for k, v in flat.items() if k != "seed"}, sort_keys=True, default=str)


class PointQueue:
    """Jobs handed out one at a time (thread-safe): an unmeasured configuration's first point,
    else the pending point of the longest measured configuration."""

    def __init__(self, jobs: Sequence[Job], measured: Iterable[tuple[Mapping[str, Any], float]] = ()) -> None:
        self._pending = [(configuration(job[2]), job) for job in jobs]  # keyed once, not per take
        self._seconds = {configuration(flat): s for flat, s in measured}
        self._probing: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> Job | None:
        """The next job to start (None when none is left)."""
        with self._lock:
            if not self._pending:
                return None
            keys = [key for key, _ in self._pending]
            unmeasured = [i for i, k in enumerate(keys) if k not in self._seconds and k not in self._probing]
            measured = [i for i, k in enumerate(keys) if k in self._seconds]
            if unmeasured:
                index = unmeasured[0]
                self._probing.add(keys[index])
            elif measured:  # max keeps the spec's order among equals
                index = max(measured, key=lambda i: self._seconds[keys[i]])
            else:  # only configurations whose first point still runs: their next one, in order
                index = 0
            return self._pending.pop(index)[1]

    def finished(self, flat: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Record a finished point's duration (a failed point's says nothing about the others)."""
        key = configuration(flat)
        with self._lock:
            self._probing.discard(key)
            if status.get("state") == "done":
                self._seconds.setdefault(key, float(status["seconds"]))
