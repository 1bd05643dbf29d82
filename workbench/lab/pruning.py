"""A tuning trial's run reports to Optuna: per-round validation accuracy, pruned when hopeless.

`python -m workbench tune` runs each trial as an ordinary sweep point; the point's notebook gets
a *ticket* (the notebook option `trial`: JSON with the storage URL, the study's name, the trial's
number and the pruner's settings). Its run reports the clients' mean validation accuracy after
every evaluated round to the trial in Optuna's storage, at step = client-rounds so far (rounds ×
clients sampled per round), so that successive halving compares methods at equal training
budgets whatever their sampling. When the pruner says stop, the run ends there
(`loop.runner.StopRun`) and its run directory records it as stopped with `PRUNED` in the
summary: the trial is pruned, not failed, and its rounds are kept. Optuna loads only here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workbench.config import ExperimentConfig

PRUNED = "pruned by Optuna"  # how a pruned run's summary `stopped` begins


def pruner(settings: Mapping[str, Any]) -> Any:
    """Optuna's successive halving over client-rounds (`min_client_rounds` None: Optuna's auto)."""
    import optuna

    low = settings.get("min_client_rounds")
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource="auto" if low is None else int(low),
        reduction_factor=int(settings.get("reduction_factor", 3)),
    )


def ticket(storage: str, study: str, number: int, pruning: Mapping[str, Any]) -> str:
    """The notebook option that makes a run report to one trial."""
    return json.dumps({"storage": storage, "study": study, "trial": number, "pruning": dict(pruning)})


def client_rounds(config: ExperimentConfig, round_: int) -> int:
    """Training budget spent after `round_`: rounds × clients sampled per round."""
    fed = config.federation
    return round_ * max(1, int(round(fed.fraction * fed.num_clients)))


class TrialReporter:
    """A run's progress callback that reports to its trial and stops the run when pruned."""

    def __init__(self, config: ExperimentConfig, ticket_json: str) -> None:
        """Open the study and the trial the ticket names."""
        import optuna

        from workbench.loop.runner import StopRun

        self.config, self.stop = config, StopRun
        spec = json.loads(ticket_json)
        storage = optuna.storages.get_storage(spec["storage"])
        study = optuna.load_study(study_name=spec["study"], storage=storage, pruner=pruner(spec["pruning"]))
        study_id = storage.get_study_id_from_name(spec["study"])
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(spec["trial"]))
        self.trial = optuna.trial.Trial(study, trial_id)

    def __call__(self, round_: int, rounds: int, values: Mapping[str, float]) -> None:
        """Report this round's validation accuracy; StopRun when the pruner says so."""
        import warnings

        step = client_rounds(self.config, round_)
        with warnings.catch_warnings():  # a resumed run reports its rounds again: Optuna keeps the first
            warnings.simplefilter("ignore")
            self.trial.report(float(values["val_accuracy"]), step)
        if round_ < rounds and self.trial.should_prune():
            raise self.stop(
                f"{PRUNED} at round {round_} ({step} client-rounds): validation accuracy "
                f"{values['val_accuracy']:.4f}"
            )
