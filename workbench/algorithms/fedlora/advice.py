"""FedLoRA's diagnostics as the workbench reads them: its two columns, their thresholds and the
warnings they raise, declared here and handed to the registry (`FedLoRA.diagnostics`).

`probe.py` measures the columns on the evaluation pass: `adapter_contribution`, the adapter's
share of the output at the placement's output, ‖with − without‖ ÷ ‖without‖ over the client's
test split, and `adapter_weight_norm`, the Frobenius norm of its effective weight scale·B·A. Two
warnings follow, each with the knobs to change:

- `MIN_CONTRIBUTION`: the adapter is *inert* when the clients' mean contribution stayed below it
  in every evaluated round (see the constant for why that value);
- `MAX_CONTRIBUTION`: the adapter *dominates* when the clients' mean contribution in the last
  evaluated round is above it.

Its adapter phase is starved when it takes too few steps (`PHASE_KNOBS`), and an unstable run
lowers the adapter's own rates before the shared ones (`STEP_KNOBS`); a contribution that stops
being finite makes a run unstable. Torch-free: the CLI and the report read it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from workbench.core.diagnostics import Diagnostic, Finding, MethodDiagnostics, per_round

if TYPE_CHECKING:
    import pandas as pd

ADAPTER_CONTRIBUTION = "adapter_contribution"
ADAPTER_WEIGHT_NORM = "adapter_weight_norm"

# Below this share of the output the adapter changes nothing a user can see. Measured on digits
# (benchmarks/diagnostic_thresholds.py: 10 and 100 clients, adapter_lr 0.01-0.1, adapter_epochs
# 1-5, 1,250 client evaluations), switching the adapter off changed on average 0.02% of the test
# predictions of clients below 1% (accuracy: 0.01 points), but 2.4% of those between 1% and 3%
# (accuracy: 2.0 points); runs whose mean stayed below 1% moved mean accuracy by at most 0.42
# points, within seed noise, so rank, μ and the adapter's other knobs cannot matter there.
MIN_CONTRIBUTION = 0.01
# Above this share of the output, at the end of a run, the adapter outweighs the private model it
# was meant to adjust. Measured on digits (the stability study, docs/fedlora-stability-tables.md:
# 96 runs, 3 candidates, ranks 1-10, mu 0-1): every run that ended at 97% accuracy or more ended
# with a contribution of at most 38%; every run that ended above 50% ended at 47% accuracy or
# less (615% -> 47%, non-finite -> 14-81%), and issue 21's demo ended rank 2 at 85% with 22-39%.
# A spike in the first rounds (up to 6900% in round 1 at rank 1) settled by itself in runs that
# ended at 97.5-98.4%, so the warning reads the last evaluated round, not the peak.
MAX_CONTRIBUTION = 0.5

# what to raise when the adapter phase is starved of steps
PHASE_KNOBS = {"adapter": "adapter_epochs (or adapter_lr)"}
# what to lower, before the shared rates, when steps grow too large
STEP_KNOBS = "lora_plus_ratio, adapter_lr or lora_alpha"


def findings(frame: pd.DataFrame) -> list[Finding]:
    """The adapter's warnings: it dominates (serious) or it is inert."""
    found = []
    contribution = per_round(frame, ADAPTER_CONTRIBUTION)
    last = contribution.iloc[-1] if len(contribution) else math.nan
    if math.isfinite(last) and last > MAX_CONTRIBUTION:
        found.append(
            Finding(
                f"adapter dominates: its contribution to the output (mean over clients) ended at "
                f"{last:.0%} in round {int(contribution.index[-1])}, above {MAX_CONTRIBUTION:.0%}, "
                f"so the adapter outweighs the private model it should adjust; lower "
                f"lora_plus_ratio or lora_alpha (or adapter_lr)",
                serious=True,
            )
        )
    if len(contribution) and contribution.max() < MIN_CONTRIBUTION:
        found.append(
            Finding(
                f"adapter inert: its contribution to the output (mean over clients) stayed below "
                f"{MIN_CONTRIBUTION:.0%} in every evaluated round (at most {contribution.max():.2%}), "
                f"so rank, mu and the other adapter knobs cannot change the results; start B small "
                f"and random with LoRA+ (adapter_init=small_b, lora_plus_ratio 16: the defaults), or "
                f"raise adapter_lr or adapter_epochs (or lora_alpha) to let the adapter learn",
                serious=False,
            )
        )
    return found


DIAGNOSTICS = MethodDiagnostics(
    columns=(
        Diagnostic(
            ADAPTER_CONTRIBUTION,
            "FedLoRA: ‖output with adapter − without‖ ÷ ‖without‖ on the client's test split, at "
            "the output the adapter adds to (0 while B = 0)",
            finite=True,
            brief="adapter {:.2%} of the output",
        ),
        Diagnostic(
            ADAPTER_WEIGHT_NORM,
            "FedLoRA: Frobenius norm of the adapter's effective weight scale·B·A (the client's "
            "own A where the placement keeps it)",
        ),
    ),
    findings=findings,
    phase_knobs=PHASE_KNOBS,
    step_knobs=STEP_KNOBS,
)
