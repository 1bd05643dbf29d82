"""What every registered method owes the loop, checked for each one (a plug-in defined here
included): a killed run resumes bit-identically from its checkpoint, its bytes per round stay
what they were, the server refuses its malformed uploads naming the tensor, and a client whose
upload is not finite is refused and rolled back. Tiny configurations: part of `make check`."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from helpers import Killed, kill_after, make_algorithm

from workbench.algorithms import REGISTRY, register, unregister
from workbench.algorithms.fedavg import FedAvg, FedAvgParams
from workbench.config import build_config
from workbench.core.accounting import Ledger, payload_bytes
from workbench.core.aggregation import InvalidUpdateError
from workbench.loop.client_state import client_state
from workbench.loop.rounds import round_generator, run_round
from workbench.loop.runner import run_experiment
from workbench.loop.server_round import RESTORED


@dataclass(frozen=True)
class PluginParams(FedAvgParams):
    prefix = "plugin_"


class PluginAverage(FedAvg):
    """A plug-in registered by this file alone: FedAvg under its own name and knobs."""

    name = "plugin"
    Params = PluginParams


BUILT_IN = tuple(REGISTRY)  # at collection, before the plug-in is registered
METHODS = (*BUILT_IN, PluginAverage.name)
# bytes client 0 (a cnn1: 500 features, 10 classes) sends and receives in round 1 at SMALL, by
# the method's rule (float32: 4 bytes, int64 counts: 8); round 1's download of FD, FedProto and
# FedKD is empty (the server holds nothing yet). A change here changes what every cost table and
# report says a method costs.
SHARED_CNN5 = 4 * 670_058  # the one model FedAvg and FML share (fedavg_model, fml_shared_model: cnn5)
BYTES = {
    "fedlora": (4 * (4 * 500 + 10 * 4),) * 2,  # rank 4 adapter on the head: A 4×500, B 10×4
    "standalone": (0, 0),
    "fedavg": (SHARED_CNN5,) * 2,
    "lg_fedavg": (4 * (10 * 500 + 10),) * 2,  # the head
    "fd": (4 * 10 * 10 + 8 * 10, 0),  # per-class mean logits and counts
    "fedproto": (4 * 10 * 500 + 8 * 10, 0),  # per-class prototypes and counts
    "fml": (SHARED_CNN5,) * 2,
    "fedkd": (117_808, 0),  # the cnn5 student's SVD factors (their ranks depend on training)
    "plugin": (SHARED_CNN5,) * 2,
}
SMALL = {"num_clients": 3, "max_train_samples": 24, "model_epochs": 1, "batch_size": 16}
# the resume test's runs: every model a cnn1, shared ones included (what resumes does not depend
# on size), so that nine methods × three runs stay within `make check`'s budget
LIGHT = {
    **SMALL,
    "num_clients": 2,
    "models": "cnn1",
    "augment": False,
    "fedavg_model": "cnn1",
    "plugin_model": "cnn1",
    "fml_shared_model": "cnn1",
    "fedkd_student_model": "cnn1",
}


@pytest.fixture(autouse=True, scope="module")
def plugin():
    register(PluginAverage)
    yield PluginAverage
    unregister(PluginAverage.name)


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_run_resumes_bit_identically(method, tiny, tmp_path):
    config = build_config({**tiny, **LIGHT, "algorithm": method, "rounds": 2, "checkpoint_every": 1})
    whole = run_experiment(config, out_dir=tmp_path / "whole")
    with pytest.raises(Killed):  # killed as round 2 ends, before its checkpoint
        run_experiment(config, out_dir=tmp_path / "resumed", progress=kill_after(2))
    seen: list[int] = []
    resumed = run_experiment(config, out_dir=tmp_path / "resumed", progress=lambda r, *_: seen.append(r))
    assert seen == [2], f"{method}: rounds {seen} ran after the checkpoint of round 1"
    pd.testing.assert_frame_equal(resumed.table, whole.table, check_exact=True)


def _one_client_round(method: str):
    """(algorithm, client 0, server state, download, upload) of client 0's first round."""
    algorithm, clients = make_algorithm(algorithm=method, **SMALL)
    client, server = clients[0], algorithm.initial_server_state()
    algorithm.begin_round(1)
    down = algorithm.broadcast(server, client)
    algorithm.receive(client, down)
    algorithm.local_update(client, round_generator(algorithm.config.run.seed, 1, client.cid))
    return algorithm, client, server, down, dict(algorithm.upload(client))


def test_every_method_has_its_bytes_pinned():
    assert set(BYTES) == set(METHODS), "pin the bytes of a new method here"


@pytest.mark.parametrize("method", METHODS)
def test_bytes_per_round_are_pinned(method):
    _, _, _, down, upload = _one_client_round(method)
    assert (payload_bytes(upload), payload_bytes(down)) == BYTES[method]


def _first_float(upload: dict) -> str:
    return next(name for name, t in upload.items() if t.is_floating_point())


@pytest.mark.parametrize("method", METHODS)
def test_the_server_refuses_a_malformed_upload_naming_the_tensor(method):
    algorithm, client, server, _, upload = _one_client_round(method)
    if not upload:
        pytest.skip(f"{method} uploads nothing: there is nothing to refuse")
    algorithm.validate_upload(client.cid, upload, server)  # the honest upload passes
    name = _first_float(upload)
    broken = {
        "a NaN": {**upload, name: torch.full_like(upload[name], float("nan"))},
        "a wrong shape": {**upload, name: upload[name].flatten()[:1]},
        "a missing tensor": {k: v for k, v in upload.items() if k != name},
    }
    for fault, bad in broken.items():
        with pytest.raises(InvalidUpdateError) as refused:
            algorithm.validate_upload(client.cid, bad, server)
        assert refused.value.client == client.cid, (method, fault)
        assert name in str(refused.value), (
            f"{method}: refusing {fault} does not name {name!r}: {refused.value}"
        )


def _poisoning(cls: type, victim: int) -> type:
    """`cls` whose client `victim` ends its local update with a NaN in its upload (as a step
    that diverged leaves it)."""

    def upload(self, client):
        sent = dict(cls.upload(self, client))
        if client.cid == victim and sent:
            name = _first_float(sent)
            sent[name] = torch.full_like(sent[name], float("nan"))
        return sent

    return type(f"Poisoned{cls.__name__}", (cls,), {"upload": upload})


@pytest.mark.parametrize("method", METHODS)
def test_a_client_with_a_non_finite_upload_is_refused_and_rolled_back(method):
    victim = 1
    algorithm, clients = make_algorithm(cls=_poisoning(REGISTRY[method], victim), algorithm=method, **SMALL)
    server = algorithm.initial_server_state()
    expected = copy.deepcopy(clients[victim])  # before the round, then given the round's download
    algorithm.begin_round(1)
    algorithm.receive(expected, algorithm.broadcast(server, expected))
    events: list = []
    run_round(algorithm, clients, server, 1, Ledger(), events)
    if BYTES[method][0] == 0:
        assert events == [], f"{method} uploads nothing, so nothing is refused"
        return
    (event,) = events
    assert (event.client, event.event, event.action) == (victim, "refused", RESTORED)
    after, want = client_state(clients[victim]), client_state(expected)
    assert set(after) == set(want)
    for key, value in want.items():
        if isinstance(value, dict):
            for name, t in value.items():
                assert torch.equal(after[key][name], t), (method, key, name)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value), (method, key)
