"""The report's Tuning section, for a folder made by `python -m workbench tune` (its tune.json).

Per method: trials run, pruned and failed, the best validation accuracy and the chosen knobs;
Optuna's optimisation history and parameter importances as Plotly figures
(`optuna.visualization`), redrawn from the trials tune.json keeps, so the report needs no
access to the studies' database. Never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from workbench.algorithms import title
from workbench.core import files
from workbench.core.facts import TUNE_FILE


def load(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The tune record of a folder (None for an ordinary sweep)."""
    path = Path(sweep_dir) / TUNE_FILE
    if not path.exists():
        return None
    return files.read_json(path, "run the same tune command again: it rewrites it", keys=("methods",))


def introduction(record: dict[str, Any]) -> str:
    """What was tuned and how the verdict above was judged (markdown)."""
    seeds = ", ".join(map(str, record.get("eval_seeds", [])))
    return (
        f"Every method was tuned with the same budget: {record['trials_per_method']} Optuna trials "
        f"(TPE sampler, successive halving over client-rounds on per-round validation accuracy) at "
        f"the same rounds, on seed {record.get('tuning_seed', 0)}, each trial ranked by its final mean "
        f"validation accuracy. Each method's best trial was then run again on seeds {seeds}, never "
        "used while tuning: the verdict, the figures and the tables of this report compare those runs."
    )


def _knobs(params: dict[str, Any] | None) -> str:
    """Chosen knobs as text: 'rank=4, mu=0.31'."""
    if not params:
        return "—"
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def rows(record: dict[str, Any]) -> pd.DataFrame:
    """Per method: trials, complete, pruned, failed, best validation accuracy, chosen knobs."""
    out = []
    for method, entry in record["methods"].items():
        best = entry.get("best_val_accuracy")
        out.append(
            {
                "method": title(method),
                "trials": entry["trials"],
                "complete": entry["complete"],
                "pruned": entry["pruned"],
                "failed": entry["failed"],
                "best validation accuracy": f"{best:.1%}" if best is not None else "— (not judged)",
                "chosen knobs": _knobs(entry.get("best_params")),
            }
        )
    return pd.DataFrame(out)


def study(entry: dict[str, Any]) -> Any:
    """An in-memory Optuna study holding a method's finished trials."""
    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    made = optuna.create_study(direction="maximize", study_name=entry.get("study"))
    for t in entry.get("history", []):
        made.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[t["state"]],
                value=t["value"] if t["state"] == "COMPLETE" else None,
                params=t["params"],
                distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
                intermediate_values={int(k): v for k, v in t["intermediate_values"].items()},
            )
        )
    return made


def figures(record: dict[str, Any], method: str) -> tuple[list[Any], str | None]:
    """A method's optimisation history and parameter importances (Plotly), and a note on any
    figure that cannot be drawn (too few complete trials)."""
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import plot_optimization_history, plot_param_importances

    made = study(record["methods"][method])
    name = title(method)
    history = plot_optimization_history(made, target_name="final validation accuracy")
    history.update_layout(title=f"{name}: optimisation history (validation accuracy per trial)")
    complete = record["methods"][method]["complete"]
    if complete < 2:
        return [history], f"{name}: parameter importances need 2 complete trials ({complete} here)."
    try:
        importance = plot_param_importances(made, evaluator=FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as error:  # e.g. every complete trial scored the same
        return [history], f"{name}: parameter importances cannot be computed ({error})."
    importance.update_layout(title=f"{name}: parameter importances (fANOVA)")
    return [history, importance], None
