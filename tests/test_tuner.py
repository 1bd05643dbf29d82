"""The live tuner without a browser: background runs, cancellation, caching, controls, figure."""

from __future__ import annotations

import queue
import threading

import pandas as pd
import pytest

from workbench.config import build_config
from workbench.core.results import Row, mean_accuracy, to_frame
from workbench.lab.tuner.runs import Curve, Runner, setting_key

WAIT = 120  # seconds: generous, the machine may be busy


class Stepper:
    """A fake experiment whose rounds advance only when the test allows them (no torch)."""

    def __init__(self) -> None:
        self.steps = threading.Semaphore(0)
        self.calls: list = []

    def allow(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.steps.release()

    def __call__(self, config, progress) -> pd.DataFrame:
        self.calls.append(config)
        total, rows = config.federation.rounds, []
        for r in range(1, total + 1):
            assert self.steps.acquire(timeout=WAIT), "test never allowed the round"
            for cid in range(2):
                rows.append(
                    Row(
                        round=r,
                        client=cid,
                        model="cnn1",
                        algorithm=config.run.algorithm,
                        participated=True,
                        accuracy=0.1 * r + 0.01 * config.params_of("fedlora").rank,
                        loss=1.0,
                        train_loss=1.0,
                        train_flops=10**9,
                        bytes_up=10**6,
                        bytes_down=10**6,
                        num_train=10,
                        num_test=5,
                    )
                )
            curve = mean_accuracy(to_frame(rows)).iloc[-1]
            progress(
                r,
                total,
                {
                    "accuracy": curve["accuracy"],
                    **{c: curve[c] for c in ("cum_train_flops", "cum_bytes_up", "cum_bytes_down")},
                },
            )
        return to_frame(rows)


class Events:
    """Runner notifications collected for the test thread."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()

    def __call__(self, key: str, curve: Curve) -> None:
        self.items.put((key, curve.state, list(curve.round)))

    def until(self, state: str, rounds: int | None = None) -> tuple:
        while True:
            key, got, done = self.items.get(timeout=WAIT)
            if got == state and (rounds is None or len(done) == rounds):
                return key, done


@pytest.fixture
def base(tiny):
    return build_config({**tiny, "rounds": 3})


def test_rounds_stream_and_finished_settings_are_cached(base):
    run, events = Stepper(), Events()
    runner = Runner(events, run)
    key = runner.submit(base)
    run.allow()
    assert events.until("running", rounds=1)[1] == [1]  # the first round is drawn on its own
    run.allow(2)
    events.until("done")
    curve = runner.curves[key]
    assert curve.round == [1, 2, 3] and curve.gflop == [2.0, 4.0, 6.0] and curve.mb == [4.0, 8.0, 12.0]
    assert curve.accuracy[0] == pytest.approx(14.0)  # percent
    assert runner.submit(base) == key and runner.wait_idle(WAIT) and len(run.calls) == 1
    runner.close(WAIT)


def test_a_new_setting_cancels_the_stale_one_at_the_next_round(base):
    run, events = Stepper(), Events()
    runner = Runner(events, run)
    stale = runner.submit(base)
    run.allow()
    events.until("running", rounds=1)
    runner.submit(base.replace(rank=2))
    runner.submit(base.replace(rank=3))  # piles up: only the latest waits
    fresh = runner.submit(base.replace(rank=5))
    run.allow(4)
    assert events.until("superseded") == (stale, [1])
    assert events.until("done")[0] == fresh
    assert [c.params_of("fedlora").rank for c in run.calls] == [4, 5]
    assert not runner.cached(stale) and runner.cached(fresh)
    runner.close(WAIT)


def test_stop_ends_the_run_and_the_last_round_is_never_thrown_away(base):
    run, events = Stepper(), Events()
    runner = Runner(events, run)
    key = runner.submit(base)
    run.allow()
    events.until("running", rounds=1)
    runner.stop()
    run.allow()
    assert events.until("stopped") == (key, [1]) and not runner.cached(key)
    other = runner.submit(base.replace(rank=2))
    run.allow(2)
    events.until("running", rounds=2)
    runner.submit(base)  # arrives while the last round computes: that round still finishes
    run.allow(2)
    assert events.until("done")[0] == other
    runner.stop()  # the resubmitted setting now waits for its first round: end it there
    run.allow()
    assert events.until("stopped")[0] == key
    runner.close(WAIT)


def test_a_failing_setting_is_reported_and_the_worker_goes_on(base):
    def run(config, progress):
        raise RuntimeError("out of memory")

    events = Events()
    runner = Runner(events, run)
    key = runner.submit(base)
    events.until("failed")
    assert runner.curves[key].error == "RuntimeError: out of memory"
    runner.submit(base.replace(rank=2))
    events.until("failed")
    runner.close(WAIT)


@pytest.mark.slow
def test_the_real_loop_streams_costs_that_match_its_table(tiny):
    from workbench.lab.tuner.runs import run_preview
    from workbench.loop.runner import run_experiment

    config = build_config({**tiny, "num_clients": 2, "rounds": 2, "algorithm": "lg_fedavg"})
    seen = []
    table = run_preview(config, lambda r, total, m: seen.append((r, total, m)))
    expected = mean_accuracy(table)
    assert [(r, total) for r, total, _ in seen] == [(1, 2), (2, 2)]
    for (_, _, metrics), (_, row) in zip(seen, expected.iterrows(), strict=True):
        assert metrics["accuracy"] == pytest.approx(row["accuracy"])
        assert metrics["cum_train_flops"] == row["cum_train_flops"] > 0
        assert metrics["cum_bytes_up"] + metrics["cum_bytes_down"] == row["cum_bytes"] > 0
    again = run_preview(config, lambda *_: None)  # prepared data reused: same results
    pd.testing.assert_frame_equal(again, table)
    pd.testing.assert_frame_equal(run_experiment(config).table, table)


def test_setting_keys_follow_the_whole_config(base):
    assert setting_key(base) == setting_key(build_config(base.to_flat()))
    assert setting_key(base) != setting_key(base.replace(mu=0.1))


# ---- the widget ---------------------------------------------------------------------------


def test_controls_come_from_the_method_and_the_notebook(base):
    from workbench.lab.tuner import Tuner

    tuner = Tuner(base.replace(num_clients=3, rounds=7, fraction=0.5), run=Stepper())
    from workbench.algorithms import method_parameters

    assert list(tuner.knobs()) == method_parameters("fedlora")  # the method's own section, in order
    assert {"rank", "lora_alpha", "mu", "adapter_epochs", "adapter_lr", "lora_targets"} <= set(tuner.knobs())
    assert tuner.knobs()["rank"].max == 10  # digits' head is 500→10: rank ≤ 10
    assert tuner.knobs()["rank"].tooltip == "LoRA rank r"
    assert {n: c.value for n, c in tuner.size.items()} == {"num_clients": 3, "rounds": 7, "fraction": 0.5}
    tuner.runner.stop()
    tuner.algorithm.value = "fedproto"
    assert [c.description for c in tuner.knob_box.children] == ["fedproto_weight", "fedproto_predict"]
    tuner.algorithm.value = "lg_fedavg"
    assert "no knobs of its own" in tuner.knob_box.children[0].value
    tuner.close()


def test_the_notebooks_runs_are_cached_settings(base):
    from workbench.lab.tuner import Tuner

    run, table = Stepper(), fake_table(base, ["fedlora", "standalone"])
    tuner = Tuner(base, table=table, run=run)
    assert tuner.runner.wait_idle(WAIT) and run.calls == []
    assert len(tuner.order) == 2 and len(tuner.figure.data) == 6
    assert tuner.current == setting_key(base)
    assert all(len(t.x) == 3 for t in tuner.figure.data if t.meta != "mb" or t.x)
    tuner.algorithm.value = "standalone"  # compared in the notebook: drawn at once, not run
    assert tuner.runner.wait_idle(WAIT) and run.calls == []
    assert "sends nothing" in tuner.figure.layout.annotations[-1].text
    tuner.close()


def test_settings_are_compared_emphasised_capped_pinned_and_removed(base):
    from workbench.lab.tuner.tuner import MAX_SHOWN, Tuner

    run = Stepper()
    tuner = Tuner(base, table=fake_table(base, ["fedlora"]), run=run)
    first = tuner.current
    tuner.knobs()["rank"].value = 2
    run.allow(3)
    assert tuner.runner.wait_idle(WAIT)
    assert len(tuner.order) == 2 and len({tuner.colours[k] for k in tuner.order}) == 2
    widths = {t.legendgroup: t.line.width for t in tuner.figure.data}
    assert widths[tuner.current] > widths[first]
    assert "rank=2" in tuner.labels[tuner.current] and "final" in tuner.status.value
    tuner.pin(first, True)
    for rank in range(3, 3 + MAX_SHOWN):
        tuner.knobs()["rank"].value = rank
        run.allow(3)
        assert tuner.runner.wait_idle(WAIT)
    assert len(tuner.order) == MAX_SHOWN and first in tuner.order
    assert len({tuner.colours[k] for k in tuner.order}) == MAX_SHOWN
    latest = tuner.current
    tuner.remove(first)
    assert first not in tuner.order and len(tuner.figure.data) == 3 * (MAX_SHOWN - 1)
    tuner.select(latest)
    assert tuner.knobs()["rank"].value == 2 + MAX_SHOWN and tuner.current == latest
    tuner.close()


def test_bad_values_are_named_and_nothing_runs(base):
    from workbench.lab.tuner import Tuner

    run = Stepper()
    tuner = Tuner(base.replace(eval_every=2), table=None, run=run)
    tuner.runner.stop()
    tuner.size["rounds"].value = 1
    assert "not run" in tuner.status.value and "eval_every=2" in tuner.status.value
    tuner.close()


def fake_table(config, algorithms):
    """A finished table per algorithm, as the notebook's own run would give."""
    frames = []
    for name in algorithms:
        rows = [
            Row(
                round=r,
                client=c,
                model="cnn1",
                algorithm=name,
                participated=True,
                accuracy=0.2 * r,
                loss=1.0,
                train_loss=1.0,
                train_flops=10**9,
                bytes_up=0 if name == "standalone" else 10**5,
                bytes_down=0 if name == "standalone" else 10**5,
                num_train=10,
                num_test=5,
            )
            for r in range(1, config.federation.rounds + 1)
            for c in range(2)
        ]
        frames.append(to_frame(rows))
    return pd.concat(frames, ignore_index=True)


def test_the_settings_list_names_what_tells_settings_apart():
    from workbench.lab.tuner.tuner import distinguishing

    a = "fedlora · rank=4 · mu=0.5 · adapter_epochs=1"
    b = "fedlora · rank=3 · mu=0.5 · adapter_epochs=1"
    c = "fedproto · weight=1"
    assert distinguishing([a]) == [a]
    assert distinguishing([a, b, c]) == ["fedlora · rank=4", "fedlora · rank=3", "fedproto"]
    assert distinguishing([a, a.replace("mu=0.5", "mu=0.9")]) == ["fedlora · mu=0.5", "fedlora · mu=0.9"]


def test_the_group_menu_picks_a_federation_of_the_zoo(base):
    from workbench.core.zoo import GROUPS
    from workbench.lab.tuner import Tuner
    from workbench.lab.tuner.controls import setting_label

    tuner = Tuner(base, run=Stepper())
    assert [label for label, _ in tuner.group.options] == list(GROUPS)
    assert tuner.group.value == GROUPS["cnn"]  # the notebook's models: today's five CNNs
    tuner.runner.stop()
    tuner.group.value = GROUPS["mixed"]
    assert tuner.setting().federation.models == GROUPS["mixed"]
    assert setting_label(tuner.setting(), base).endswith("models=mixed")
    tuner.set_controls(base)
    assert tuner.group.value == GROUPS["cnn"]
    tuner.close()
    odd = Tuner(base.replace(models="cnn1,vit48_l2_p4_h2"), run=Stepper())
    assert odd.group.value == ("cnn1", "vit48_l2_p4_h2") and odd.group.options[-1][0] == "cnn1+vit48_l2_p4_h2"
    odd.runner.stop()
    odd.close()
