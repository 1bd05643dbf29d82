"""How long the live tuner makes a user wait: control change → first new round drawn → finished curve.

Runs the real tuner (widgets + background runner, no browser) at the notebook's default size
unless told otherwise, and prints three cases:
  cold   the notebook's own setting from scratch (data loaded once, then cached);
  busy   a rank change while another setting is computing (it ends at its next round);
  idle   a rank change while nothing runs.
"Drawn" is when the tuner has updated its figure for that round (the browser then repaints).

    PYTHONPATH=. python benchmarks/tuner_latency.py [--num_clients 10 --rounds 20 --device cpu]
"""

from __future__ import annotations

import argparse
import time

from workbench.config import build_config, defaults
from workbench.lab.tuner import Tuner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("num_clients", "rounds"):
        parser.add_argument(f"--{name}", type=int, default=defaults()[name])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    marks: list[tuple[float, str, str, int]] = []
    config = build_config({"num_clients": args.num_clients, "rounds": args.rounds, "device": args.device})
    started = time.perf_counter()
    tuner = Tuner(config)  # no notebook table: the notebook's setting runs in the background
    draw = tuner.runner.notify

    def timed(key, curve):  # after the tuner has drawn
        draw(key, curve)
        marks.append((time.perf_counter(), key, curve.state, len(curve.round)))

    tuner.runner.notify = timed
    print(f"tuner size: {args.num_clients} clients × {args.rounds} rounds on {args.device}")
    print(f"{'case':<6}{'first round drawn (s)':>24}{'finished curve (s)':>22}", flush=True)
    report("cold", started, wait(marks, tuner.current, started, "first"))
    changed = time.perf_counter()
    tuner.knobs()["rank"].value = 2  # while the notebook's setting is still computing
    report("busy", changed, wait(marks, tuner.current, changed, "done"))
    changed = time.perf_counter()
    tuner.knobs()["rank"].value = 3
    report("idle", changed, wait(marks, tuner.current, changed, "done"))
    tuner.close()


def report(case: str, t0: float, times: tuple[float, float | None]) -> None:
    """One line per case as soon as it is measured (a long run still shows what it has)."""
    first, done = times
    print(f"{case:<6}{first - t0:>24.1f}{(done - t0 if done else float('nan')):>22.1f}", flush=True)


def wait(marks: list, key: str, since: float, until: str) -> tuple[float, float | None]:
    """Times of the setting's first drawn round and of its finished curve (None if not awaited)."""
    first = done = None
    while done is None and not (until == "first" and first is not None):
        for stamp, k, state, rounds in list(marks):
            if k == key and stamp >= since and rounds >= 1 and first is None:
                first = stamp
            if k == key and stamp >= since and state == "done":
                done = stamp
        time.sleep(0.05)
    return first, done


if __name__ == "__main__":
    main()
