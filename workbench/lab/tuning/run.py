"""`python -m workbench tune`: every method tuned with the same trial budget on validation data.

One Optuna study per method (named after it) in Optuna's storage: SQLite `DIR/tune.db` by
default (rerunning the command continues the studies), any SQLAlchemy URL when trials run on
several machines. Trials are asked with the spec's distributions (TPE sampler, seeded by the
tuning seed) in batches, one slot per method per batch (more with more workers), so the methods
advance in step and each gets exactly `trials` trials. Each trial is an ordinary sweep point in
`DIR/tuning/points/<method>-tNNN/`, run by the sweep executors (local warm kernels or Ray); its
run reports validation accuracy per round to its trial and is pruned by successive halving over
client-rounds (`workbench.lab.pruning`). After a batch, each trial is told its outcome: the
run's final mean validation accuracy, pruned (its run stopped by the pruner), or failed.

Resuming: a trial left running by a killed or interrupted command is run again on the next
(its point resumes from its checkpoint, or returns its finished run), so no finished trial is
repeated and none is lost. The folder is owned while tune runs (`core.folder_lock`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.core import files
from workbench.core.errors import DamagedFileError
from workbench.core.facts import STATUS_FILE, TRIALS_DIR, TUNE_FILE
from workbench.core.run_files import read_summary
from workbench.lab.pruning import PRUNED, pruner, ticket
from workbench.lab.sweep.dispatch import run_points
from workbench.lab.sweep.executor_base import Execution
from workbench.lab.sweep.folder import POINTS
from workbench.lab.sweep.run import NOTEBOOK
from workbench.lab.tuning.spec import Space, distributions, tuning_seed

DATABASE = "tune.db"
Job = tuple[str, int, dict[str, Any]]  # method, trial number, flat parameters


def storage_url(out: Path, storage: str | None) -> str:
    """The studies' storage: the given SQLAlchemy URL, else SQLite in the tune folder."""
    return storage or f"sqlite:///{(Path(out) / DATABASE).resolve()}"


def open_studies(spec: Mapping[str, Any], url: str, trials: int = 20) -> dict[str, Any]:
    """One study per method, created or (resuming) loaded. TPE samples at random for its
    first trials: half the budget, at most Optuna's default 10, so small budgets are guided too."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = min(10, max(1, trials // 2))
    return {
        method: optuna.create_study(
            study_name=method,
            storage=url,
            sampler=optuna.samplers.TPESampler(seed=tuning_seed(spec), n_startup_trials=startup),
            pruner=pruner(spec["pruning"]),
            direction="maximize",
            load_if_exists=True,
        )
        for method in spec["methods"]
    }


def point_id(method: str, number: int) -> str:
    """A trial's point folder name."""
    return f"{method}-t{number:03d}"


def next_batch(
    spec: Mapping[str, Any], space: Space, studies: Mapping[str, Any], trials: int, slots: int, taken: set
) -> list[Job]:
    """Up to `slots` trials per method: first those a killed run left running, then new ones
    while the method has fewer than `trials`."""
    from optuna.trial import TrialState

    batch = []
    for method, study in studies.items():
        left = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if (method, t.number) not in taken
        ]
        chosen = [(t.number, t.params) for t in left[:slots]]
        while len(chosen) < slots and len(study.get_trials(deepcopy=False)) < trials:
            trial = study.ask(distributions(space[method]))
            chosen.append((trial.number, trial.params))
        for number, params in chosen:
            taken.add((method, number))
            batch.append((method, number, {**spec["parameters"], "algorithm": method, **params}))
    return batch


def tell(study: Any, number: int, folder: Path) -> str:
    """Tell a trial the outcome of its point: 'complete' (its final mean validation accuracy),
    'pruned' (its run was stopped by the pruner) or 'failed'."""
    from optuna.trial import TrialState

    try:
        status = files.read_json(folder / STATUS_FILE, "", keys=("state",))
        summary = read_summary(folder / "run") if status["state"] == "done" else {}
    except (DamagedFileError, OSError):
        summary = {}
    stopped, value = summary.get("stopped") or "", summary.get("final_val_accuracy")
    if stopped.startswith(PRUNED):
        study.tell(number, state=TrialState.PRUNED)
        return "pruned"
    if not summary or stopped or value is None or not math.isfinite(value):
        study.tell(number, state=TrialState.FAIL)
        return "failed"
    study.tell(number, float(value))
    return "complete"


def progress_lines(studies: Mapping[str, Any], trials: int) -> list[str]:
    """Per method: trials done, pruned, failed and left, and the best so far."""
    from optuna.trial import TrialState

    lines = []
    for method, study in studies.items():
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for s in states)
        best = best_trial(study)
        so_far = f"best validation {best.value:.4f} {best.params}" if best else "no complete trial yet"
        lines.append(
            f"tune {method}: {done}/{trials} trials done ({states.count(TrialState.PRUNED)} pruned, "
            f"{states.count(TrialState.FAIL)} failed), {trials - done} left; {so_far}"
        )
    return lines


def best_trial(study: Any) -> Any:
    """The complete trial with the highest validation accuracy (None before one completes)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def run_trials(
    out: Path,
    spec: Mapping[str, Any],
    space: Space,
    url: str,
    trials: int,
    timeout: int,
    execution: Execution,
) -> dict[str, Any]:
    """Run every method's trials to `trials` (continuing the studies in `url`); the studies."""
    studies = open_studies(spec, url, trials)
    slots = max(1, -(-(execution.workers or 1) // len(studies)))
    taken: set = set()
    for line in progress_lines(studies, trials):
        print(line, flush=True)
    while batch := next_batch(spec, space, studies, trials, slots, taken):
        root = out / TRIALS_DIR
        todo = [
            (point_id(m, n), {**flat, "trial": ticket(url, m, n, spec["pruning"])}) for m, n, flat in batch
        ]
        run_points(root, todo, NOTEBOOK, timeout, execution)
        for method, number, _ in batch:
            tell(studies[method], number, root / POINTS / point_id(method, number))
        for line in progress_lines(studies, trials):
            print(line, flush=True)
    return studies


def trial_record(trial: Any) -> dict[str, Any]:
    """One finished trial as tune.json keeps it (the report redraws Optuna's figures from it)."""
    from optuna.distributions import distribution_to_json

    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
        "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
    }


def record(studies: Mapping[str, Any], url: str, spec: Mapping[str, Any], trials: int) -> dict[str, Any]:
    """What tune.json keeps: the storage, the spec, and per method its trials and best."""
    from optuna.trial import TrialState

    methods = {}
    for method, study in studies.items():
        every = study.get_trials(deepcopy=False)
        states = [t.state for t in every]
        best = best_trial(study)
        methods[method] = {
            "study": study.study_name,
            "trials": len(states),
            "complete": states.count(TrialState.COMPLETE),
            "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL),
            "best_trial": best.number if best else None,
            "best_val_accuracy": best.value if best else None,
            "best_params": best.params if best else None,
            "history": [trial_record(t) for t in every if t.state.is_finished()],
        }
    shown = url if url.startswith("sqlite") else url.split("@")[-1]  # never a password
    return {"storage": shown, "trials_per_method": trials, "spec": dict(spec), "methods": methods}


def run_tune(
    spec_source: str | Path | Mapping[str, Any],
    out: str | Path,
    trials: int,
    eval_seeds: list[int],
    storage: str | None = None,
    timeout: int = 3600,
    execution: Execution | None = None,
    report: bool = True,
) -> Path:
    """Tune every method of the spec (or continue tuning it), then judge each method's chosen
    configuration on the eval seeds and build the report; return the report's path (tune.json's
    without `report`). The spec, the trial count and the eval seeds are checked before anything
    runs."""
    from workbench.core.folder_lock import owned
    from workbench.lab.tuning.spec import check_eval_seeds, load_tune_spec, search_space

    execution = execution or Execution()
    execution.check()
    spec = load_tune_spec(spec_source)
    space = search_space(spec)
    check_eval_seeds(spec, eval_seeds, trials)
    with owned(out, "tune") as folder:
        url = storage_url(folder, storage)
        studies = run_trials(folder, spec, space, url, trials, timeout, execution)
        kept = record(studies, url, spec, trials) | {
            "eval_seeds": list(eval_seeds),
            "tuning_seed": tuning_seed(spec),
        }
        files.write_json(folder / TUNE_FILE, kept, indent=2, default=str)
        if not judge(folder, spec, studies, eval_seeds, timeout, execution) or not report:
            return folder / TUNE_FILE
        from workbench.lab.report.export import build_report
        from workbench.loop.tracking import track_report

        built = build_report(folder)
        track_report(folder, built, [spec["parameters"]])  # a tune's tracker is one of its fixed parameters
        return built


def judge_spec(
    spec: Mapping[str, Any], studies: Mapping[str, Any], eval_seeds: list[int]
) -> dict[str, Any] | None:
    """A sweep spec running each method's best trial on every eval seed (None when no method
    has a complete trial); a method without one is left out."""
    grids = [
        {"algorithm": [method], "seed": list(eval_seeds), **{k: [v] for k, v in best.params.items()}}
        for method, study in studies.items()
        if (best := best_trial(study)) is not None
    ]
    if not grids:
        return None
    fixed = {k: v for k, v in spec["parameters"].items() if k != "seed"}
    return {"parameters": fixed, "grid": grids[0], "also": grids[1:]}


def judge(
    folder: Path,
    spec: Mapping[str, Any],
    studies: Mapping[str, Any],
    eval_seeds: list[int],
    timeout: int,
    execution: Execution,
) -> bool:
    """Rerun each method's chosen configuration on the eval seeds as a sweep in the tune folder
    (sweep.json, results.csv, points/): what the report's verdict compares; False when no
    method has a complete trial to judge."""
    from workbench.lab.sweep.run import run_owned
    from workbench.lab.sweep.spec import expand, load_spec

    wanted = judge_spec(spec, studies, eval_seeds)
    left_out = [m for m, study in studies.items() if best_trial(study) is None]
    for method in left_out:
        print(f"tune {method}: no complete trial, so it is not judged", flush=True)
    if wanted is None:
        return False
    sweep = load_spec(wanted)
    print(f"judging the chosen configurations on seeds {', '.join(map(str, eval_seeds))}", flush=True)
    run_owned(folder, sweep, expand(sweep), timeout, execution)
    return True
