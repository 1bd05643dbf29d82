"""The facts a method declares in its own module, checked when it is registered, and their union
over the registry: its seed purposes (`Algorithm.seed_purposes`) and its diagnostics
(`Algorithm.diagnostics`: columns, phase knobs).

A seed purpose is a name and a number. The generic ones are `workbench.core.facts.Seed`; a
method adds its own, and methods may share one (FedAvg, FML and FedKD share `shared_model`: the
same draw of their shared model's θ⁰), but across the package a number stands for one name and a
name for one number, so no two purposes ever draw the same seed. Likewise a diagnostic column
and a phase's knobs mean one thing whichever method declares them. `register` refuses a method
that breaks either rule, naming what it clashes with. Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from workbench.core.diagnostics import (
    LOCAL_ROUNDS,
    LOCAL_STEPS,
    STEPS_PREFIX,
    UPDATE_NORM,
    Diagnostic,
    MethodDiagnostics,
)
from workbench.core.facts import Seed

if TYPE_CHECKING:
    from workbench.algorithms.base import Algorithm

NAME = re.compile(r"[a-z][a-z0-9_]*")
GENERIC_COLUMNS = (LOCAL_ROUNDS, LOCAL_STEPS, UPDATE_NORM)  # core's own diagnostics


def generic_purposes() -> dict[str, int]:
    """The purposes every method shares (`Seed`), by lower-case name."""
    return {purpose.name.lower(): int(purpose) for purpose in Seed}


def seed_purposes(methods: Iterable[type[Algorithm]]) -> dict[str, int]:
    """Every purpose in use: the generic ones, then each method's own (shared ones once)."""
    found = generic_purposes()
    for method in methods:
        found.update({name: int(number) for name, number in method.seed_purposes.items()})
    return found


def next_free(methods: Iterable[type[Algorithm]]) -> int:
    """The smallest purpose number no generic purpose and no method uses."""
    used = {*generic_purposes().values(), *(int(n) for m in methods for n in m.seed_purposes.values())}
    return next(n for n in range(1, len(used) + 2) if n not in used)


def check(method: type[Algorithm], others: Iterable[type[Algorithm]]) -> None:
    """Refuse (ValueError) a method whose declarations clash with the generic ones or with
    another registered method's."""
    others = list(others)
    check_seed_purposes(method, others)
    check_diagnostics(method, others)


def check_seed_purposes(method: type[Algorithm], others: list[type[Algorithm]]) -> None:
    """Each purpose well formed, one number per name and one name per number, everywhere."""
    declared: Mapping[str, int] = method.seed_purposes
    for name, number in declared.items():
        if not (isinstance(name, str) and NAME.fullmatch(name)):
            raise ValueError(f"{method.name}'s seed purpose {name!r} must be a lower_snake_case name")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{method.name}'s seed purpose {name!r} = {number!r} must be an int >= 1")
    free = f"the next free number is {next_free([*others, method])}"
    for name, number in declared.items():
        twin = [other for other, n in declared.items() if n == number and other != name]
        if twin:
            raise ValueError(
                f"{method.name} declares seed purpose {number} twice ({name!r} and {twin[0]!r}); {free}"
            )
        for other, n in generic_purposes().items():
            if n == number or other == name:
                raise ValueError(
                    f"{method.name}'s seed purpose {name!r} = {number} clashes with the generic "
                    f"purpose Seed.{other.upper()} = {n} (workbench.core.facts); {free}"
                )
        for owner in others:
            for other, n in owner.seed_purposes.items():
                if (n == number) != (other == name):
                    raise ValueError(
                        f"{method.name}'s seed purpose {name!r} = {number} clashes with "
                        f"{owner.name}'s {other!r} = {n} ({owner.__module__}): a number stands "
                        f"for one purpose and a purpose for one number; {free}"
                    )


def check_diagnostics(method: type[Algorithm], others: list[type[Algorithm]]) -> None:
    """Its columns and phase knobs new, or declared alike by every method that declares them."""
    declared = method.diagnostics
    if not isinstance(declared, MethodDiagnostics):
        raise TypeError(f"{method.name}.diagnostics must be a MethodDiagnostics, got {declared!r}")
    for column in declared.columns:
        if not isinstance(column, Diagnostic):
            raise TypeError(f"{method.name}'s diagnostic {column!r} must be a Diagnostic")
        if column.name in GENERIC_COLUMNS or column.name.startswith(STEPS_PREFIX):
            raise ValueError(
                f"{method.name}'s diagnostic {column.name!r} is a generic column of every results "
                f"table ({', '.join(GENERIC_COLUMNS)}, {STEPS_PREFIX}<phase>); name it after what it measures"
            )
    for owner in others:
        theirs = {c.name: c for c in owner.diagnostics.columns}
        for column in declared.columns:
            if column.name in theirs and theirs[column.name] != column:
                raise ValueError(
                    f"{method.name}'s diagnostic {column.name!r} is declared otherwise by "
                    f"{owner.name} ({owner.__module__}): a column means one thing in every table"
                )
        for phase, knobs in declared.phase_knobs.items():
            other = owner.diagnostics.phase_knobs.get(phase, knobs)
            if other != knobs:
                raise ValueError(
                    f"{method.name}'s knobs for phase {phase!r} ({knobs!r}) differ from "
                    f"{owner.name}'s ({other!r}): a phase's warning names one set of knobs"
                )
