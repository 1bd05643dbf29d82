"""Client-level differential privacy (workbench.loop.privacy): off reproduces today's run byte
for byte, clipping bounds the update, the central noise has the calibrated scale, the recorded ε
is the accountant's own, and bad combinations are refused before any work."""

from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest
import torch

from workbench.algorithms import REGISTRY, Environment
from workbench.config import ConfigError, build_config
from workbench.core.aggregation import clip_update, update_norm
from workbench.core.errors import UserError
from workbench.core.facts import EPSILON, TABLE_FILE
from workbench.core.summary import format_summary
from workbench.loop import privacy
from workbench.loop.runner import run_experiment

pytest.importorskip("dp_accounting", reason="the privacy extra is not installed: pip install -e .[privacy]")
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

# the adapter knobs pinned, so nothing here depends on FedLoRA's defaults
PINNED = dict(max_train_samples=40, rank=2, adapter_epochs=1, model_epochs=1, lr=0.01)


def accountant_epsilon(event: dp_event.DpEvent, rounds: int, delta: float) -> float:
    """What dp-accounting's RDP accountant gives for `rounds` compositions of `event`."""
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


def test_dp_off_writes_the_same_results_byte_for_byte(tiny, tmp_path):
    """Noise 0 and no clipping (in either mode, at any δ) is today's run: the same results.csv."""
    flat = {**tiny, **PINNED, "algorithm": "fedlora"}
    default = run_experiment(build_config(flat), out_dir=tmp_path / "default")
    off = {"dp_noise_multiplier": 0.0, "dp_clip": 0.0, "dp_mode": "local", "dp_delta": 1e-3}
    explicit = run_experiment(build_config({**flat, **off}), out_dir=tmp_path / "off")
    table = (tmp_path / "default" / TABLE_FILE).read_bytes()
    assert table == (tmp_path / "off" / TABLE_FILE).read_bytes()
    assert EPSILON not in default.table and EPSILON not in explicit.summary


@pytest.mark.parametrize(
    ("mode", "fraction", "event"),
    [
        ("central", 0.5, lambda s: dp_event.PoissonSampledDpEvent(0.5, dp_event.GaussianDpEvent(s))),
        ("central", 1.0, lambda s: dp_event.GaussianDpEvent(s)),
        ("local", 0.5, lambda s: dp_event.GaussianDpEvent(s / 2)),  # sensitivity 2C, no amplification
    ],
)
def test_recorded_epsilon_is_the_accountants_figure(tiny, mode, fraction, event):
    """ε per round in results and the summary's final ε equal dp-accounting's own figure for the
    same noise multiplier, sampling rate q = m/N and number of rounds."""
    sigma, delta = 1.3, 1e-4
    config = build_config(
        {
            **tiny,
            **PINNED,
            "algorithm": "fedavg",
            "rounds": 3,
            "fraction": fraction,
            "dp_noise_multiplier": sigma,
            "dp_clip": 0.5,
            "dp_delta": delta,
            "dp_mode": mode,
        }
    )
    result = run_experiment(config)
    per_round = result.table.groupby("round")[EPSILON].agg(["min", "max"])
    assert list(per_round.index) == [1, 2, 3] and (per_round["min"] == per_round["max"]).all()
    for round_, spent in per_round["max"].items():
        assert spent == pytest.approx(accountant_epsilon(event(sigma), int(round_), delta), rel=1e-12)
    assert per_round["max"].is_monotonic_increasing
    assert result.summary[EPSILON] == per_round["max"].iloc[-1]
    assert result.summary["dp_delta"] == delta
    assert f"ε {result.summary[EPSILON]:.4g} spent at δ {delta:g}" in format_summary(result.summary)


def test_clip_update_bounds_the_update_and_keeps_a_small_one():
    """‖clip(u) − center‖ ≤ C over all floating tensors as one vector; within the bound: unchanged."""
    generator = torch.Generator().manual_seed(0)
    center = {"w": torch.randn(5, 3, generator=generator), "b": torch.randn(3, generator=generator)}
    far = {n: t + 10 * torch.randn(t.shape, generator=generator) for n, t in center.items()}
    clipped = clip_update(far, center, 0.7)
    assert update_norm(clipped, center) == pytest.approx(0.7, rel=1e-6)
    near = {n: t + 1e-3 for n, t in center.items()}
    assert all(torch.equal(clip_update(near, center, 0.7)[n], near[n]) for n in near)


def test_local_mode_clips_every_upload_on_the_client(tiny):
    """dp_mode=local without noise: every update that left a client has norm ≤ dp_clip
    (the results' update_norm column measures upload − download)."""
    config = build_config(
        {**tiny, **PINNED, "algorithm": "fedavg", "dp_clip": 0.05, "dp_mode": "local", "lr": 0.05}
    )
    table = run_experiment(config).table
    norms = table.loc[table["participated"], "update_norm"]
    assert len(norms) and (norms <= 0.05 * (1 + 1e-5)).all() and norms.max() > 0.04


def server_of(algorithm: str, flat: dict):
    """A method's server half on the CPU with its initial global state."""
    config = build_config({**flat, "algorithm": algorithm, "device": "cpu"})
    method = REGISTRY[algorithm](config, Environment.without_data(config.num_classes, torch.device("cpu")))
    return method, method.initial_server_state()


def test_central_mode_averages_clipped_updates_uniformly_and_noises_the_sum(tiny):
    """Without noise the new global state is the uniform mean of the clipped updates (weights by
    sample count ignored); with noise the residual has std σ·C/m, seeded by the round."""
    flat = {**tiny, "dp_clip": 0.5}
    method, server = server_of("fedavg", flat)
    generator = torch.Generator().manual_seed(1)
    uploads = {
        cid: {n: t + scale * torch.randn(t.shape, generator=generator) for n, t in server.items()}
        for cid, scale in [(0, 1.0), (1, 0.01), (2, 0.3)]
    }
    weights = {0: 100.0, 1: 1.0, 2: 5.0}
    state, refused = privacy.aggregate(method, server, uploads, weights, round_=1)
    clipped = [clip_update(u, server, 0.5) for u in uploads.values()]
    assert not refused
    for name in server:
        expected = sum(c[name].double() for c in clipped) / 3
        torch.testing.assert_close(state[name].double(), expected, rtol=0, atol=1e-6)
    assert update_norm(state, server) <= 0.5 + 1e-6

    noisy_method, _ = server_of("fedavg", {**flat, "dp_noise_multiplier": 2.0})
    noisy, _ = privacy.aggregate(noisy_method, server, uploads, weights, round_=1)
    residual = torch.cat([(noisy[n].double() - state[n].double()).flatten() for n in server])
    assert residual.std().item() == pytest.approx(2.0 * 0.5 / 3, rel=0.02)  # σC/m on the mean
    again, _ = privacy.aggregate(noisy_method, server, uploads, weights, round_=1)
    other, _ = privacy.aggregate(noisy_method, server, uploads, weights, round_=2)
    assert all(torch.equal(again[n], noisy[n]) for n in server)
    assert not all(torch.equal(other[n], noisy[n]) for n in server)


@pytest.mark.parametrize(
    ("flat", "fragment"),
    [
        ({"dp_noise_multiplier": 1.0}, "parameter dp_noise_multiplier=1 needs dp_clip > 0"),
        ({"dp_delta": 1.0}, "parameter dp_delta=1.0 is out of range: must be < 1"),
        ({"dp_delta": 0.0}, "parameter dp_delta=0.0 is out of range: must be > 0"),
        ({"dp_clip": -1.0}, "parameter dp_clip=-1.0 is out of range"),
        ({"dp_mode": "shuffle"}, "parameter dp_mode='shuffle' is not allowed"),
        ({"dp_clip": 1.0, "algorithm": "fd"}, "parameter dp_clip=1 cannot be used with algorithm='fd'"),
        (
            {"dp_clip": 1.0, "algorithm": "fedproto"},
            "algorithm='fedproto': its upload holds integer class counts",
        ),
        ({"dp_clip": 1.0, "algorithm": "fedkd"}, "algorithm='fedkd': its upload is an SVD-compressed"),
        ({"dp_clip": 1.0, "algorithm": "standalone"}, "algorithm='standalone': it uploads nothing"),
        (
            {"dp_clip": 1.0, "aggregator": "median"},
            "parameter aggregator='median' cannot be used with dp_mode='central'",
        ),
    ],
)
def test_bad_combinations_are_refused_naming_the_parameter(tiny, flat, fragment):
    with pytest.raises(ConfigError) as error:
        build_config({**tiny, **flat})
    assert fragment in str(error.value)


def test_covered_methods_are_named_in_the_refusal_and_local_mode_takes_any_rule(tiny):
    with pytest.raises(ConfigError) as error:
        build_config({**tiny, "dp_clip": 1.0, "algorithm": "fd"})
    covered = [name for name, cls in REGISTRY.items() if not cls.dp_refusal]
    assert sorted(covered) == ["fedavg", "fedlora", "fml", "lg_fedavg"]
    assert str(error.value).endswith(f"client-level DP covers {', '.join(covered)}")
    build_config({**tiny, "dp_clip": 1.0, "dp_mode": "local", "aggregator": "median"})


def test_a_missing_accountant_is_named_before_any_data_loads(tiny, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dp_accounting" else real(name, *a)
    )
    config = build_config({**tiny, "dp_noise_multiplier": 1.0, "dp_clip": 1.0, "data_dir": str(tmp_path)})
    with pytest.raises(UserError, match=r"pip install -e '\.\[privacy\]'"):
        run_experiment(config, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_epsilon_column_is_absent_without_noise_and_clipping_alone_reports_none(tiny):
    """Clipping without noise changes the run but spends no accounted privacy: no ε column."""
    config = build_config({**tiny, **PINNED, "algorithm": "fedavg", "dp_clip": 0.01})
    result = run_experiment(config)
    assert EPSILON not in result.table and EPSILON not in result.summary
    assert isinstance(result.table, pd.DataFrame) and math.isfinite(result.summary["final_accuracy"])
