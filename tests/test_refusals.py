"""A refused upload is an event, not a crash: the in-process round and run under divergence,
malformed class counts and poisoned uploads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import make_algorithm, synthetic_client

from workbench.algorithms import REGISTRY, Environment
from workbench.algorithms.fedlora import FedLoRA
from workbench.algorithms.fedlora.adapters import adapter_state, private_parameters
from workbench.algorithms.fedproto import FedProto
from workbench.config import build_config
from workbench.core.accounting import EvaluationRecord, Ledger
from workbench.core.facts import CHECKPOINT_FILE
from workbench.core.results import Evaluation
from workbench.core.training import PhaseStats
from workbench.loop.rounds import run_round
from workbench.loop.runner import RunStoppedError, run_loop
from workbench.loop.server_round import KEPT, RESTORED, RoundRefusedError


class Diverging(FedLoRA):
    """FedLoRA whose clients in `diverge` end their local update with NaN weights (as a far too
    large step does), from round `start` on; training itself is skipped to keep tests quick."""

    diverge: frozenset[int] = frozenset()
    start = 1

    def begin_round(self, round_: int) -> None:
        self.round_ = round_

    def local_update(self, client, generator) -> PhaseStats:
        if client.cid in self.diverge and self.round_ >= self.start:
            with torch.no_grad():
                for p in client.state["model"].parameters():
                    p.add_(float("nan"))
        else:  # an honest, cheap step: move the adapter a little
            with torch.no_grad():
                for p in client.state["model"].parameters():
                    if p.requires_grad:
                        p.add_(0.01 * (client.cid + 1))
        return PhaseStats(flops=7, steps=1, mean_loss=0.5)


def diverging(cids, start=1):
    return type("D", (Diverging,), {"diverge": frozenset(cids), "start": start})


def test_a_diverged_client_is_refused_rolled_back_and_the_round_goes_on():
    algorithm, clients = make_algorithm(cls=diverging({1}), num_clients=4)
    theta = algorithm.initial_server_state()
    before = [p.detach().clone() for p in private_parameters(clients[1].state["model"])]
    ledger, events = Ledger(), []
    new = run_round(algorithm, clients, theta, 1, ledger, events)
    (event,) = events
    assert (event.round, event.client, event.event) == (1, 1, "refused")
    assert "NaN or infinity" in event.reason and event.tensor.startswith("head.lora_")
    assert event.action == RESTORED
    # rolled back: its private model as before the round, its adapter the round's download
    after = private_parameters(clients[1].state["model"])
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    for name, t in adapter_state(clients[1].state["model"]).items():
        assert torch.equal(t, theta[name])
    # the others were averaged: each moved its adapter by 0.01·(cid+1), same sample counts
    expected = {n: t + 0.01 * (1 + 3 + 4) / 3 for n, t in theta.items()}
    for name in theta:
        torch.testing.assert_close(new[name], expected[name])
    assert ledger.refused == {1: 1} and ledger.flops[1] == 7  # it trained: its costs count
    assert ledger.row(1, EvaluationRecord(1, "m", "fedlora", Evaluation(0.5, 1.0, {}), 40, 20)).refused == 1


def test_a_round_with_every_upload_refused_raises_naming_the_round():
    algorithm, clients = make_algorithm(cls=diverging({0, 1}), num_clients=2)
    events = []
    with pytest.raises(
        RoundRefusedError,
        match=r"round 3: the server refused the upload of every "
        r"sampled client \(2\); e\.g\. client 0: contains NaN",
    ):
        run_round(algorithm, clients, algorithm.initial_server_state(), 3, Ledger(), events)
    assert [e.client for e in events] == [0, 1]


class NegativeCounts(FedProto):
    """FedProto whose client 2 uploads a negative class count: well-formed and finite, so it
    passes the screen, but the class-wise aggregation refuses it."""

    def upload(self, client):
        payload = dict(super().upload(client))
        if client.cid == 2:
            payload["counts"] = payload["counts"].clone()
            payload["counts"][0] = -1
        return payload


def test_an_upload_the_aggregation_refuses_is_dropped_and_the_client_keeps_its_state():
    algorithm, clients = make_algorithm(cls=NegativeCounts, algorithm="fedproto", num_clients=3)
    events, ledger = [], Ledger()
    new = run_round(algorithm, clients, algorithm.initial_server_state(), 1, ledger, events)
    (event,) = events
    assert (event.client, event.tensor, event.action) == (2, "counts", KEPT)
    assert "negative class counts" in event.reason and ledger.refused == {2: 1}
    assert new["counts"].sum() == sum(c.data.num_train for c in clients[:2])


def test_a_run_that_stops_keeps_every_completed_round_on_disk(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "fedlora", diverging({0, 1, 2}, start=2))
    config = build_config(
        {"device": "cpu", "num_clients": 3, "rounds": 3, "checkpoint_every": 1, "batch_size": 16}
    )
    clients = [synthetic_client(k, m) for k, m in enumerate(config.client_models())]
    env = Environment.without_data(config.num_classes, torch.device("cpu"))
    with pytest.raises(
        RunStoppedError,
        match=r"run stopped at round 2: .*\(1 evaluated round\(s\)\) "
        r"and every refusal \(events.csv\) are in",
    ) as stop:
        run_loop(config, clients, env, run_dir=tmp_path)
    table = pd.read_csv(tmp_path / "results.csv")
    assert table["round"].tolist() == [1, 1, 1] and (table["refused"] == 0).all()
    events = pd.read_csv(tmp_path / "events.csv")
    assert events[["round", "client"]].values.tolist() == [[2, 0], [2, 1], [2, 2]]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["refused"] == 3 and summary["stopped"].startswith("round 2:")
    assert summary["rounds"] == 1 and summary == stop.value.result.summary
    assert not (tmp_path / CHECKPOINT_FILE).exists()


@pytest.mark.parametrize("aggregator", ["mean", "median", "trimmed_mean"])
def test_a_scaling_attacker_moves_the_mean_but_not_the_robust_rules(aggregator):
    """The configured attack and aggregator, through the round: 1 of 5 clients scales ×1e6."""
    algorithm, clients = make_algorithm(
        cls=diverging(set()),
        num_clients=5,
        attack="scale",
        attack_scale=1e6,
        malicious_clients=1,
        aggregator=aggregator,
        trim_fraction=0.2,
    )
    theta = algorithm.initial_server_state()
    new = run_round(algorithm, clients, theta, 1, Ledger())
    moved = max((new[n] - theta[n]).abs().max().item() for n in theta)
    if aggregator == "mean":
        assert moved > 1e3  # the attacker's 1e6 × 0.01·(cid+1) step, divided by 5
    else:
        assert moved <= 0.05 + 1e-6  # inside the honest steps 0.01 … 0.05


def test_a_run_stopped_under_attack_names_the_attack_and_the_aggregators_that_absorb_it(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(REGISTRY, "fedlora", diverging({0, 1, 2}, start=2))
    flat = {"device": "cpu", "num_clients": 3, "rounds": 3, "batch_size": 16, "attack": "scale"}
    env = Environment.without_data(10, torch.device("cpu"))
    for aggregator, absorbed in (
        ("mean", "an aggregator that could have absorbed them: norm_bounded, median, trimmed_mean"),
        ("median", "aggregator=median did not absorb them; others that could: norm_bounded, trimmed_mean"),
    ):
        config = build_config({**flat, "malicious_clients": 1, "aggregator": aggregator})
        clients = [synthetic_client(k, m) for k, m in enumerate(config.client_models())]
        with pytest.raises(RunStoppedError) as stop:
            run_loop(config, clients, env)
        assert "The run has 1 malicious client(s) (attack=scale, updates × -10)" in str(stop.value)
        assert absorbed in str(stop.value) and "lower lr" not in str(stop.value)
    config = build_config({**flat, "malicious_clients": 0})  # no attacker: a step too large
    clients = [synthetic_client(k, m) for k, m in enumerate(config.client_models())]
    with pytest.raises(RunStoppedError, match="usually means a step too large: lower lr") as stop:
        run_loop(config, clients, env)
    assert "malicious" not in str(stop.value)
