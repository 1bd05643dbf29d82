"""Which accuracy a report selects on: validation when the sweep's runs hold a validation split.

Every selection (a method's best configuration in the report, the verdict, the protocol tables)
ranks configurations by mean final *validation* accuracy when every configuration has it, so
the test accuracies compared afterwards are not the ones selected on. Sweeps made before the
validation split existed (or with val_fraction 0) select on test accuracy and say so. Pure
pandas; never imports torch.
"""

from __future__ import annotations

import pandas as pd

# what selections rank by: mean final validation accuracy when every run held a validation
# split, else (sweeps made before it existed, or with val_fraction 0) mean final test accuracy
VALIDATION, TEST = "final_val_accuracy", "final_accuracy"


def selection_column(configs: pd.DataFrame) -> str:
    """The column selections rank by: validation accuracy when every configuration has it."""
    has = VALIDATION in configs and len(configs) > 0 and bool(configs[VALIDATION].notna().all())
    return VALIDATION if has else TEST


def selected_on(configs: pd.DataFrame) -> str:
    """'validation' or 'test': the accuracy the configurations were selected on."""
    return "validation" if selection_column(configs) == VALIDATION else "test"


def selection_note(configs: pd.DataFrame) -> str:
    """How the best configurations were picked, for the report (markdown)."""
    if selected_on(configs) == "validation":
        return (
            "*Selection*: each method's best configuration is the one with the highest mean final "
            "accuracy on the clients' validation splits (held out of their training data); the "
            "accuracies compared are measured on the test splits, which no selection saw."
        )
    return (
        "*Selection*: this sweep's runs hold no validation split (made before it existed, or "
        "with val_fraction 0), so the best configurations are picked on the same test "
        "accuracies they are compared on, and a method with more swept configurations gets a "
        "slightly optimistic best."
    )
