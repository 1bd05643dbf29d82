"""`python -m workbench tune`: specs refused before anything runs, pruning recorded as pruning,
and a tiny tune (2 methods × 3 trials × 2 rounds) that resumes after being killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from helpers import SWEEP_TINY
from optuna.trial import TrialState

from workbench.config import ConfigError, build_config
from workbench.core import files
from workbench.core.facts import STATUS_FILE
from workbench.lab.pruning import PRUNED, TrialReporter, ticket
from workbench.lab.tuning.run import best_trial, judge_spec, open_studies, run_tune, storage_url, tell
from workbench.lab.tuning.spec import distributions, load_tune_spec, search_space
from workbench.loop.runner import run_experiment

TINY = {**SWEEP_TINY, "models": "cnn5"}
SPEC = {
    "parameters": TINY,
    "methods": ["fedavg", "fedproto"],
    "search": {"lr": {"low": 0.005, "high": 0.1, "log": True}},
    "pruning": {"min_client_rounds": 2, "reduction_factor": 2},
}


def spec(**changes) -> dict:
    return {**json.loads(json.dumps(SPEC)), **changes}


def test_each_method_searches_its_declared_knobs_the_spec_overrides_and_the_shared_ones() -> None:
    space = search_space(
        load_tune_spec(
            spec(methods=["fedlora", "fedproto"], ranges={"fedlora": {"rank": {"low": 1, "high": 8}}})
        )
    )
    assert set(space["fedlora"]) == {"rank", "mu", "adapter_lr", "lr"}
    assert (space["fedlora"]["rank"].low, space["fedlora"]["rank"].high) == (1, 8)  # overridden
    assert set(space["fedproto"]) == {"fedproto_weight", "lr"}
    kinds = {k: type(d).__name__ for k, d in distributions(space["fedlora"]).items()}
    assert kinds == {
        "rank": "IntDistribution",
        "mu": "FloatDistribution",
        "adapter_lr": "FloatDistribution",
        "lr": "FloatDistribution",
    }


def test_the_rank_range_follows_the_placement_and_the_number_of_classes() -> None:
    """FedLoRA declares rank 1-16; the head on 10 classes holds at most 10, fc2 500."""
    head = search_space(load_tune_spec(spec(methods=["fedlora"])))["fedlora"]["rank"]
    assert (head.low, head.high, head.log) == (1, 10, True)
    fc2 = spec(methods=["fedlora"], parameters={**TINY, "adapter_placement": "fc2"})
    assert search_space(load_tune_spec(fc2))["fedlora"]["rank"].high == 16
    wide = spec(methods=["fedlora"], ranges={"fedlora": {"rank": {"low": 2, "high": 12}}})
    with pytest.raises(
        ConfigError,
        match=r"knob 'rank': \[12\] above 10, the largest rank this setting "
        r"allows \(adapter site 'head' \(head\) is at most 10 wide on 10 classes\)",
    ):
        search_space(load_tune_spec(wide))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["fedavg", "fedlorax"]}, r"unknown method\(s\) \['fedlorax'\]"),
        (
            {"ranges": {"fedproto": {"rank": {"low": 1, "high": 4}}}},
            "method fedproto.*'rank' is not a knob of fedproto",
        ),
        (
            {"ranges": {"fedproto": {"fedproto_wieght": {"low": 1, "high": 4}}}},
            "method fedproto.*'fedproto_wieght'",
        ),
        (
            {"ranges": {"fedproto": {"fedproto_weight": {"low": -1, "high": 4}}}},
            "method fedproto.*'fedproto_weight'.*must be >= 0",
        ),
        (
            {"methods": ["fedlora"], "ranges": {"fedlora": {"mu": {"low": 0.1, "high": 1.5}}}},
            r"method fedlora.*'mu'.*mu=1\.5 is out of range",
        ),
        (
            {"methods": ["fedlora"], "ranges": {"fedlora": {"rank": {"low": 1.5, "high": 4}}}},
            "method fedlora.*'rank'.*integer knob",
        ),
        (
            {
                "methods": ["fedlora"],
                "ranges": {"fedlora": {"adapter_placement": {"choices": ["head", "tail"]}}},
            },
            "method fedlora.*'adapter_placement'.*'tail' is not allowed",
        ),
        ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "method fedavg.*'lr'.*must be below"),
        ({"parameters": {**TINY, "lr": 0.05}}, "'lr' is both fixed in `parameters` and searched"),
        ({"search": {}}, "method fedavg declares no ranges"),
        ({"parameters": {**TINY, "val_fraction": 0.0}}, "val_fraction=0 leaves nothing to select on"),
        ({"pruning": {"halving": 2}}, "`pruning` takes"),
    ],
)
def test_a_bad_spec_is_refused_before_anything_runs_naming_method_and_knob(
    tmp_path, changes, message
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        run_tune(spec(**changes), out, trials=3, eval_seeds=[1, 2])
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("trials", "seeds", "message"),
    [(0, [1, 2], "--trials 0"), (3, [0, 1], "include the tuning seed 0"), (3, [1, 1], "distinct seeds")],
)
def test_trial_counts_and_eval_seeds_are_checked_first(tmp_path, trials, seeds, message) -> None:
    with pytest.raises(ConfigError, match=message):
        run_tune(spec(), tmp_path / "out", trials=trials, eval_seeds=seeds)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_pruned_trial_stops_its_run_keeping_its_rounds_and_is_recorded_pruned(tmp_path) -> None:
    tuning = load_tune_spec(spec(methods=["fedavg"], pruning={"min_client_rounds": 2, "reduction_factor": 2}))
    space = search_space(tuning)
    url = storage_url(tmp_path, None)
    study = open_studies(tuning, url)["fedavg"]
    # an earlier trial reached validation accuracy 1.0 at every step and passed the first rung
    # (successive halving's record of it): only the top half pass, so a worse trial is pruned
    dists = distributions(space["fedavg"])
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.05},
            distributions=dists,
            value=1.0,
            intermediate_values={2: 1.0, 4: 1.0},
            system_attrs={"completed_rung_0": 1.0},
        )
    )
    trial = study.ask(dists)
    config = build_config({**TINY, "algorithm": "fedavg", "rounds": 3, **trial.params})
    folder = tmp_path / "points" / "fedavg-t001"
    reporter = TrialReporter(config, ticket(url, "fedavg", trial.number, tuning["pruning"]))
    result = run_experiment(config, out_dir=folder / "run", progress=reporter)
    assert result.summary["stopped"].startswith(PRUNED) and "2 client-rounds" in result.summary["stopped"]
    assert sorted(result.table["round"].unique()) == [1]  # the round it ran is kept
    files.write_json(folder / STATUS_FILE, {"state": "done", "error": None})
    assert tell(study, trial.number, folder) == "pruned"
    assert study.trials[trial.number].state == TrialState.PRUNED
    assert study.trials[trial.number].intermediate_values == {
        2: pytest.approx(result.summary["final_val_accuracy"])
    }


def _counts(url: str) -> dict[str, list[TrialState]]:
    return {
        s.study_name: [t.state for t in optuna.load_study(study_name=s.study_name, storage=url).trials]
        for s in optuna.get_all_study_summaries(url)
    }


def _finished(url: str) -> int:
    return sum(s in FINISHED for v in _counts(url).values() for s in v)


def _what_the_tune_left(out, log) -> str:
    """The killed tune's own output and each point's state, for a failure message."""
    states = {
        p.parent.name: json.loads(p.read_text()).get("state")
        for p in sorted((out / "tuning" / "points").glob(f"*/{STATUS_FILE}"))
    }
    return f"point states: {states}\nthe tune's output (last 3000 characters):\n{log.read_text()[-3000:]}"


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
KILL_AFTER_S = 420  # two 2-round trials take ~30 s here idle; generous for a busy CI machine


@pytest.mark.kernels
@pytest.mark.slow
@pytest.mark.timeout(KILL_AFTER_S + 480)  # the wait below, then the resumed tune and its judging
def test_a_tiny_tune_resumes_after_being_killed_without_repeating_trials(tmp_path) -> None:
    path, out, log = tmp_path / "tune.yaml", tmp_path / "out", tmp_path / "tune.log"
    path.write_text(yaml.safe_dump(SPEC))
    url = storage_url(out, None)
    argv = [sys.executable, "-m", "workbench", "tune", str(path), "--out", str(out), "--trials", "3"]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + KILL_AFTER_S
        # The points folder appears only after the tune has created its studies: opening the
        # store before that would race the tune's own schema creation in a fresh tune.db.
        while not ((out / "tuning" / "points").is_dir() and _finished(url) >= 2):
            if process.poll() is not None:
                pytest.fail(
                    f"the tune exited ({process.returncode}) before two trials finished\n"
                    + _what_the_tune_left(out, log)
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no two trials finished within {KILL_AFTER_S} s\n" + _what_the_tune_left(out, log)
                )
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {
        p.parent.parent.name: p.stat().st_mtime_ns
        for p in (out / "tuning" / "points").glob("*/run/results.csv")
    }
    told = {m: [i for i, s in enumerate(v) if s in FINISHED] for m, v in _counts(url).items()}
    assert sum(map(len, told.values())) >= 2
    report = run_tune(SPEC, out, trials=3, eval_seeds=[1, 2])
    record = json.loads((out / "tune.json").read_text())
    after = _counts(url)
    assert {m: len(v) for m, v in after.items()} == {"fedavg": 3, "fedproto": 3}  # the same budget
    assert all(s in FINISHED for v in after.values() for s in v)
    for method, numbers in told.items():  # finished trials were neither repeated nor rerun
        assert all(after[method][i] in FINISHED for i in numbers)
        for i in numbers:
            name = f"{method}-t{i:03d}"
            if name in before:
                assert (
                    out / "tuning" / "points" / name / "run" / "results.csv"
                ).stat().st_mtime_ns == before[name]
    for method in ("fedavg", "fedproto"):
        entry = record["methods"][method]
        assert entry["trials"] == 3 and entry["complete"] + entry["pruned"] + entry["failed"] == 3
        best = best_trial(optuna.load_study(study_name=method, storage=url))
        assert entry["best_val_accuracy"] == best.value and entry["best_params"] == best.params
    # judged: each method's best trial rerun on the eval seeds, never on the tuning seed
    judged = json.loads((out / "sweep.json").read_text())["points"]
    assert sorted((p["params"]["algorithm"], p["params"]["seed"]) for p in judged) == [
        ("fedavg", 1),
        ("fedavg", 2),
        ("fedproto", 1),
        ("fedproto", 2),
    ]
    assert all(p["state"] == "done" for p in judged)
    for p in judged:
        chosen = record["methods"][p["params"]["algorithm"]]["best_params"]
        assert {k: p["params"][k] for k in chosen} == chosen
    html = report.read_text()
    assert "<h2" in html and "Tuning" in html and "optimisation history" in html
    assert "never used while tuning" in html and "validation splits" in html


def test_the_judge_runs_each_methods_best_trial_on_the_eval_seeds_only(tmp_path) -> None:
    tuning = load_tune_spec(spec(parameters={**TINY, "seed": 5}))
    studies = open_studies(tuning, storage_url(tmp_path, None))
    dists = distributions(search_space(tuning)["fedavg"])
    for value, lr in ((0.4, 0.01), (0.6, 0.02)):
        studies["fedavg"].add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions=dists, value=value)
        )
    wanted = judge_spec(tuning, studies, [1, 2, 3])
    assert wanted["grid"] == {"algorithm": ["fedavg"], "seed": [1, 2, 3], "lr": [0.02]}
    assert wanted["also"] == [] and "seed" not in wanted["parameters"]  # fedproto: no complete trial


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trials", "0"], "--trials 0"),
        (["--trials", "2", "--eval-seeds", "1,x"], "--eval-seeds '1,x'"),
        (["--trials", "2", "--eval-seeds", "0,1"], "include the tuning seed 0"),
    ],
)
def test_the_cli_refuses_with_one_line_before_anything_runs(tmp_path, capsys, flags, message) -> None:
    from workbench.cli import main

    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["tune", str(path), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
