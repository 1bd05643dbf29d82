"""Parameter sections: frozen dataclasses whose fields carry their help and allowed values.

The mechanism shared by the run's own sections (`workbench.config`) and every method's section
(`Algorithm.Params`): a field declared with `param(...)` knows its default, help text, choices
and bounds; `coerce` and `check_range` turn one flat value (typed, or a string from the command
line) into a checked field value, with an error naming the parameter, the value and what is
allowed. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from workbench.core.errors import UserError

BOUNDS = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("le", "<=", operator.le),
    ("lt", "<", operator.lt),
)


class ConfigError(UserError):
    """A parameter is unknown, of the wrong type or out of range."""


def param(
    default: Any,
    help: str,
    *,
    choices: tuple | Callable[[], tuple] | None = None,  # a callable: choices known late (the registry)
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    why: str | None = None,
    unique: bool = False,
) -> Any:
    """A config field with its help text and allowed range (read by validation, CLI and docs);
    `why` explains the upper bound in its refusal, `unique` refuses a list naming an item twice.
    The help text becomes a comment in the notebook's parameters cell, where papermill skips any
    line holding two '=', so an '=' in it is refused here."""
    if "=" in help:
        raise ValueError(f"parameter help may not contain '=' (papermill would skip the line): {help!r}")
    meta = {
        "help": help,
        "choices": choices,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "why": why,
        "unique": unique,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Section:
    """Base of parameter sections; flat name = prefix + field name."""

    prefix: ClassVar[str] = ""


def coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert a flat value (typed, or a string from the command line) to the field's type."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"parameter {name}={value!r}: expected {expected}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if isinstance(value, str) and text in ("true", "1", "yes", "false", "0", "no"):
            return text in ("true", "1", "yes")
        raise bad("true or false")
    if kind is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise bad("an integer")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError, OverflowError):
            raise bad("an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad("a number") from None
        if not math.isfinite(number):
            raise bad("a finite number")
        return number
    if kind == tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise bad("a non-empty comma-separated list")
        return tuple(str(item).strip() for item in items)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Refuse a value outside the field's choices or bounds."""
    choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    for item in value if isinstance(value, tuple) else (value,):
        if choices is not None and item not in choices:
            raise ConfigError(f"parameter {name}={item!r} is not allowed; choose from {list(choices)}")
        if isinstance(item, str) and not item.strip():
            raise ConfigError(
                f"parameter {name}={value!r} is empty; give a value (see `python -m workbench params`)"
            )
    if isinstance(value, tuple) and meta.get("unique") and len(set(value)) < len(value):
        twice = sorted({item for item in value if value.count(item) > 1})
        raise ConfigError(
            f"parameter {name}={','.join(value)!r} names {twice} more than once; give each once"
        )
    if isinstance(value, (str, tuple, bool)):
        return
    for key, symbol, holds in BOUNDS:
        if meta[key] is not None and not holds(value, meta[key]):
            why = f" ({meta['why']})" if meta.get("why") and key in ("le", "lt") else ""
            raise ConfigError(
                f"parameter {name}={value!r} is out of range: must be {symbol} {meta[key]}{why}"
            )


def unknown_names(names: Iterable[str], known: Iterable[str]) -> ConfigError:
    """An error listing unknown names with the closest known ones."""
    known = list(known)
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(
        f"unknown parameter(s): {', '.join(hints)}; run `python -m workbench params` for the full list"
    )


@dataclass(frozen=True)
class Search:
    """A knob's search range for `python -m workbench tune`: numbers from `low` to `high` (on a
    log scale when `log`), or one of `choices`. Methods declare theirs (`Algorithm.search`); a
    tuning spec may override them. Checked against the knob's own bounds before a trial runs."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
