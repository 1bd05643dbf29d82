"""The sweep's point order: each configuration measured on its first point, then longest first."""

import threading

from workbench.lab.sweep.schedule import PointQueue, configuration


def job(name: str, seed: int) -> tuple[str, str, dict]:
    return (f"{name}-{seed}", f"points/{name}-{seed}", {"algorithm": name, "seed": seed, "rounds": 3})


def drain(queue: PointQueue, seconds: dict[str, float]) -> list[str]:
    """Take every job, finishing each at once with its configuration's duration."""
    order = []
    while (taken := queue.take()) is not None:
        point_id, _, flat = taken
        order.append(point_id)
        queue.finished(flat, {"state": "done", "seconds": seconds[flat["algorithm"]]})
    return order


def test_seeds_share_a_configuration_and_other_parameters_do_not():
    assert configuration({"algorithm": "fml", "seed": 0}) == configuration({"seed": 1, "algorithm": "fml"})
    assert configuration({"algorithm": "fml", "seed": 0}) != configuration({"algorithm": "fd", "seed": 0})


def test_first_one_point_per_configuration_in_spec_order_then_the_longest_first():
    jobs = [job(name, seed) for name in ("short", "long", "middle") for seed in (0, 1, 2)]
    order = drain(PointQueue(jobs), {"short": 1.0, "long": 9.0, "middle": 5.0})
    assert order[:3] == ["short-0", "long-0", "middle-0"]
    assert order[3:] == ["long-1", "long-2", "middle-1", "middle-2", "short-1", "short-2"]
    assert sorted(order) == sorted(point_id for point_id, _, _ in jobs)  # each once


def test_durations_of_an_earlier_attempt_order_a_resumed_sweep_from_the_start():
    jobs = [job(name, 1) for name in ("short", "long")]
    earlier = [
        ({"algorithm": "short", "seed": 0, "rounds": 3}, 1.0),
        ({"algorithm": "long", "seed": 0, "rounds": 3}, 9.0),
    ]
    assert drain(PointQueue(jobs, earlier), {"short": 1.0, "long": 9.0}) == ["long-1", "short-1"]


def test_a_configuration_still_being_measured_is_not_probed_twice():
    queue = PointQueue([job("a", 0), job("a", 1), job("b", 0)])
    assert [queue.take()[0] for _ in range(2)] == ["a-0", "b-0"]  # a-1 waits for a-0's duration
    assert queue.take()[0] == "a-1"  # nothing else left: run it anyway
    assert queue.take() is None


def test_a_failed_point_measures_nothing():
    queue = PointQueue([job("a", 0), job("a", 1), job("b", 0), job("b", 1)])
    first, second = queue.take(), queue.take()
    queue.finished(first[2], {"state": "failed", "seconds": 0.1})
    queue.finished(second[2], {"state": "done", "seconds": 3.0})
    assert queue.take()[0] == "a-1"  # a is unmeasured again: its next point measures it


def test_workers_in_threads_get_every_job_exactly_once():
    jobs = [job(f"c{i}", seed) for i in range(20) for seed in range(5)]
    queue, taken, lock = PointQueue(jobs), [], threading.Lock()

    def worker() -> None:
        while (j := queue.take()) is not None:
            queue.finished(j[2], {"state": "done", "seconds": float(len(j[0]))})
            with lock:
                taken.append(j[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(j[0] for j in jobs)
