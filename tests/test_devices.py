"""Unreliable clients and the simulated clock (workbench.loop.devices): dropout, device
profiles, the round deadline and late uploads, in the pure rules and in real runs."""

import pandas as pd
import pytest
import torch

from workbench.algorithms import REGISTRY
from workbench.config import ConfigError, build_config
from workbench.core.accounting import Ledger
from workbench.loop.checkpoint import CHECKPOINT_FILE
from workbench.loop.devices import Devices, close_round, devices_for, dropouts, profile_factors
from workbench.loop.rounds import prepare, run_round
from workbench.loop.runner import run_experiment

TIMING = ["sim_seconds", "sim_time", "missed"]


def devices(**changes) -> Devices:
    base = {
        "dropout": 0.0,
        "compute": (10.0, 10.0),
        "bandwidth": (2.0, 2.0),
        "deadline": 0.0,
        "keep_late": False,
    }
    return Devices(**{**base, **changes})


def test_nothing_on_means_no_devices_and_todays_round():
    assert devices_for(build_config({}).devices, 0, 10) is None


def test_a_clients_seconds_are_its_bytes_over_bandwidth_and_flops_over_compute():
    d = devices(compute=(10.0, 100.0), bandwidth=(2.0, 4.0))
    assert d.seconds(0, flops=50, up=4, down=6) == pytest.approx(5 + 5)
    assert d.seconds(1, flops=50, up=4, down=6) == pytest.approx(0.5 + 2.5)
    assert devices(compute=None, bandwidth=None).seconds(0, 50, 4, 6) == 0.0


def test_profiles_are_seeded_with_median_one_and_tiers_move_both_speeds_together():
    assert (profile_factors("same", 1.0, 0, 5) == 1).all()
    spread = profile_factors("lognormal", 1.0, 3, 4001)
    assert (spread == profile_factors("lognormal", 1.0, 3, 4001)).all()
    assert 0.9 < float(pd.Series(spread[0]).median()) < 1.1 and (spread[0] != spread[1]).any()
    tiers = profile_factors("tiers", 1.0, 0, 300)
    assert set(tiers[0]) == {0.25, 1.0, 4.0} and (tiers[0] == tiers[1]).all()


def test_dropout_is_seeded_per_round_and_drops_about_its_probability():
    d = devices(dropout=0.3)
    sampled = list(range(1000))
    first = dropouts(d, 0, 1, sampled)
    assert first == dropouts(d, 0, 1, sampled) and first != dropouts(d, 0, 2, sampled)
    assert 250 < len(first) < 350
    assert dropouts(devices(dropout=0.0), 0, 1, sampled) == []


def test_the_deadline_drops_late_uploads_or_delivers_them_next_round():
    ups = {0: {"w": 0}, 1: {"w": 1}, 2: {"w": 2}}
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    seconds = {0: 1.0, 1: 9.0, 2: 3.0}
    closing = close_round(devices(deadline=5.0), ups, weights, seconds, pending={})
    assert list(closing.uploads) == [0, 2] and closing.late == {1: 9.0} and closing.seconds == 5.0
    # last round's late upload of client 3 is delivered; client 0's fresh upload supersedes its own
    pending = {3: ({"w": 30}, 7.0), 0: ({"w": -1}, 1.0)}
    closing = close_round(devices(deadline=5.0), ups, weights, seconds, pending)
    assert closing.uploads == {0: {"w": 0}, 2: {"w": 2}, 3: {"w": 30}} and closing.delivered == [3]
    assert closing.weights == {0: 1.0, 2: 3.0, 3: 7.0}
    # without a deadline a round lasts as long as its slowest client
    assert close_round(devices(), ups, weights, seconds, {}).seconds == 9.0


def test_a_deadline_or_a_profile_without_a_clock_is_refused():
    with pytest.raises(ConfigError, match=r"round_deadline=3 needs a simulated clock: give device_flops"):
        build_config({"round_deadline": 3})
    with pytest.raises(ConfigError, match=r"device_profile='tiers' needs a simulated clock"):
        build_config({"device_profile": "tiers"})
    with pytest.raises(ConfigError, match=r"dropout=1"):
        build_config({"dropout": 1.0})
    allowed = r"late_uploads='later' is not allowed; choose from \['drop', 'next_round'\]"
    with pytest.raises(ConfigError, match=allowed):
        build_config({"late_uploads": "later"})


def test_a_round_whose_every_client_is_late_keeps_the_server_state(tiny):
    config = build_config({**tiny, "device_flops": 1e3, "round_deadline": 1e-3})
    clients, env = prepare(config)
    algorithm = REGISTRY["fedlora"](config, env)
    server, ledger, events = algorithm.initial_server_state(), Ledger(timed=True), []
    d = devices_for(config.devices, 0, len(clients))
    after = run_round(algorithm, clients, server, 1, ledger, events, d)
    assert after is server and [e.event for e in events] == ["late"] * len(clients)
    assert ledger.clock == pytest.approx(1e-3) and sum(ledger.missed.values()) == len(clients)
    kept = devices_for(config.replace(late_uploads="next_round").devices, 0, len(clients))
    ledger = Ledger(timed=True)
    run_round(algorithm, clients, server, 1, ledger, [], kept)
    assert sorted(ledger.late_uploads) == list(range(len(clients)))
    assert all(isinstance(t, torch.Tensor) for u, _ in ledger.late_uploads.values() for t in u.values())


@pytest.mark.slow
def test_the_clock_only_observes_and_dropout_zero_is_todays_run(tiny, tmp_path):
    """A clock without dropout or deadline changes no number; it only adds the timing columns."""
    flat = {**tiny, "rounds": 2, "num_clients": 3, "max_train_samples": 24, "val_fraction": 0}
    today = run_experiment(build_config(flat)).table
    assert not set(TIMING) & set(today.columns)
    assert run_experiment(build_config({**flat, "dropout": 0.0})).table.equals(today)
    timed = run_experiment(build_config({**flat, "device_flops": 1e9, "device_profile": "tiers"})).table
    pd.testing.assert_frame_equal(timed.drop(columns=TIMING), today)
    per_round = timed.groupby("round")["sim_time"].agg(["min", "max"])
    assert (per_round["min"] == per_round["max"]).all() and per_round["max"].is_monotonic_increasing
    assert (timed["sim_seconds"] > 0).all() and (timed["missed"] == 0).all()


@pytest.mark.slow
def test_dropout_and_a_deadline_record_fewer_uploads_and_resume_bit_identically(tiny, tmp_path):
    flat = {**tiny, "rounds": 4, "num_clients": 4, "max_train_samples": 24, "val_fraction": 0}
    flat |= {"dropout": 0.3, "device_flops": 1e9, "device_profile": "tiers", "checkpoint_every": 2}
    probe = run_experiment(build_config(flat))
    seconds = probe.table[probe.table["sim_seconds"] > 0]["sim_seconds"]
    flat |= {"round_deadline": float(seconds.median()), "late_uploads": "next_round"}  # some miss it
    config = build_config(flat)
    whole = run_experiment(config, out_dir=tmp_path / "whole")
    events = pd.read_csv(tmp_path / "whole" / "events.csv")
    assert {"dropped", "late"} <= set(events["event"])
    assert whole.summary["late"] == (events["event"] == "late").sum() and whole.summary["refused"] == 0
    missed = whole.table.groupby("round")["missed"].sum()
    assert (missed == events.groupby("round").size().reindex(missed.index, fill_value=0)).all()
    dropped = events[events["event"] == "dropped"]
    rows = whole.table.set_index(["round", "client"])
    assert not rows.loc[list(zip(dropped["round"], dropped["client"])), "participated"].any()

    def die(round_, *_):
        if round_ == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, out_dir=tmp_path / "resumed", progress=die)
    assert (tmp_path / "resumed" / CHECKPOINT_FILE).exists()
    resumed = run_experiment(config, out_dir=tmp_path / "resumed")
    pd.testing.assert_frame_equal(resumed.table, whole.table)
    assert (tmp_path / "resumed" / "events.csv").read_bytes() == (
        tmp_path / "whole" / "events.csv"
    ).read_bytes()
