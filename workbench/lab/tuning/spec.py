"""A tuning spec: the fixed setting, the methods to tune and what each searches, checked whole
before any trial runs.

YAML with `parameters:` (fixed flat values, as in a sweep spec; `seed` is the tuning seed),
`methods:` (the methods to tune, each with the same trial budget), optionally `search:` (shared
run knobs searched for every method, e.g. lr, model_epochs), `ranges:` (per method, ranges that
replace or add to the ones the method declares in `Algorithm.search`) and `pruning:`
(`min_client_rounds`, `reduction_factor` of Optuna's successive halving). A range is
`{low, high, log}` or `{choices: [...]}`. An unknown method or knob, a range outside the knob's
own bounds or of the wrong type, a knob both fixed and searched, and a method with nothing to
search are refused naming the method and the knob. Torch-free; Optuna loads only where
distributions are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from workbench.algorithms import REGISTRY, method_parameters
from workbench.config import ConfigError, build_config, parameter_table
from workbench.core.params import Search, check_range, coerce

TUNE_KEYS = {"parameters", "methods", "search", "ranges", "pruning"}
PRUNING = {"min_client_rounds": None, "reduction_factor": 3}  # None: Optuna's "auto"
Space = dict[str, dict[str, Search]]  # method → flat knob → range


def load_tune_spec(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a tuning spec (YAML file or mapping) and check its shape."""
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ConfigError(f"tuning spec {source} is not a file; give the path of a YAML spec")
        try:
            source = yaml.safe_load(Path(source).read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"tuning spec is not valid YAML: {error}") from None
    if not isinstance(source, Mapping) or set(source) - TUNE_KEYS or "methods" not in source:
        found = sorted(source) if isinstance(source, Mapping) else type(source).__name__
        raise ConfigError(
            f"tuning spec must be a mapping with `methods:` and keys among {sorted(TUNE_KEYS)}, got {found}"
        )
    methods = source["methods"]
    if not isinstance(methods, list) or not methods or len(set(methods)) < len(methods):
        raise ConfigError(f"tuning spec: `methods` must be a list of distinct method names, got {methods!r}")
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ConfigError(f"tuning spec: unknown method(s) {unknown}; allowed: {', '.join(REGISTRY)}")
    pruning = {**PRUNING, **(source.get("pruning") or {})}
    if set(pruning) - set(PRUNING):
        raise ConfigError(f"tuning spec: `pruning` takes {sorted(PRUNING)}, got {sorted(pruning)}")
    return {
        "parameters": dict(source.get("parameters") or {}),
        "methods": list(methods),
        "search": dict(source.get("search") or {}),
        "ranges": dict(source.get("ranges") or {}),
        "pruning": pruning,
    }


def _search(where: str, raw: Any) -> Search:
    """A range as written in the spec."""
    if isinstance(raw, Search):
        return raw
    if not isinstance(raw, Mapping) or set(raw) - {"low", "high", "log", "choices"}:
        raise ConfigError(f"{where}: give {{low, high, log}} or {{choices: [...]}}, got {raw!r}")
    return Search(
        raw.get("low"), raw.get("high"), bool(raw.get("log", False)), tuple(raw.get("choices") or ())
    )


def check_search(where: str, name: str, search: Search) -> Search:
    """Refuse a range of the wrong type or outside the knob's own bounds; return it typed."""
    section, field = parameter_table()[name]
    kind = get_type_hints(section)[field.name]
    try:
        if search.choices:
            if search.low is not None or search.high is not None:
                raise ConfigError("give either choices or low and high, not both")
            values = tuple(coerce(name, v, kind) for v in search.choices)
            for value in values:
                check_range(name, value, field.metadata)
            return Search(choices=values)
        if kind not in (int, float):
            raise ConfigError(f"{name} takes {kind.__name__} values: give `choices`")
        if search.low is None or search.high is None:
            raise ConfigError("give both low and high")
        for bound in (search.low, search.high):
            if kind is int and (isinstance(bound, bool) or not float(bound).is_integer()):
                raise ConfigError(f"{name} is an integer knob: its bounds must be integers, got {bound!r}")
        low, high = coerce(name, search.low, kind), coerce(name, search.high, kind)
        check_range(name, low, field.metadata)
        check_range(name, high, field.metadata)
        if not low < high:
            raise ConfigError(f"low={low} must be below high={high}")
        if search.log and low <= 0:
            raise ConfigError(f"a log range needs low > 0, got {low}")
        return Search(low, high, search.log)
    except ConfigError as error:
        raise ConfigError(f"{where}: knob {name!r}: {error}") from None


def _own(method: str, name: str, spec_params: Mapping[str, Any], where: str) -> None:
    """Refuse a knob that is not the method's or a run knob, or that the spec also fixes."""
    table = parameter_table()
    owners = {m for m in REGISTRY if name in method_parameters(m)}
    if name in ("algorithm", "seed"):
        raise ConfigError(f"{where}: {name!r} is not searched (methods and seeds are what tune compares)")
    if name not in table or (owners and method not in owners):
        known = method_parameters(method)
        raise ConfigError(
            f"{where}: {name!r} is not a knob of {method} (its knobs: {known or 'none'}; "
            "or a run parameter such as lr)"
        )
    if name in spec_params:
        raise ConfigError(f"{where}: {name!r} is both fixed in `parameters` and searched")


def search_space(spec: Mapping[str, Any]) -> Space:
    """Every method's checked search space: its declared ranges, the spec's overrides, the
    shared knobs; a method with nothing to search is refused."""
    ranges = spec["ranges"]
    stray = sorted(set(ranges) - set(spec["methods"]))
    if stray:
        raise ConfigError(f"tuning spec: `ranges` names {stray}, which `methods` does not list")
    space: Space = {}
    for method in spec["methods"]:
        wanted = {**REGISTRY[method].search, **(ranges.get(method) or {}), **spec["search"]}
        checked = {}
        for name, raw in wanted.items():
            where = f"tuning spec, method {method}"
            _own(method, name, spec["parameters"], where)
            checked[name] = check_search(where, name, _search(f"{where}, knob {name!r}", raw))
        if not checked:
            raise ConfigError(
                f"tuning spec: method {method} declares no ranges and the spec searches no shared "
                "knob: add `search:` (e.g. lr) or `ranges:` for it"
            )
        space[method] = _within_limits(spec, method, checked)
        _builds(spec, method, space[method])
    return space


def _within_limits(spec: Mapping[str, Any], method: str, space: dict[str, Search]) -> dict[str, Search]:
    """The space within what the setting allows (`Algorithm.search_limits`, e.g. FedLoRA's rank
    at most the adapter site's width): a method's declared range is narrowed to it, a range the
    spec gives is refused above it."""
    try:
        config = build_config({**spec["parameters"], "algorithm": method})
    except ConfigError:
        return space  # the setting itself is wrong: _builds names the parameter
    given = {**(spec["ranges"].get(method) or {}), **spec["search"]}
    narrowed = dict(space)
    for name, (top, why) in REGISTRY[method].search_limits(config).items():
        s = space.get(name)
        if s is None:
            continue
        above = (
            [v for v in s.choices if v > top]
            if s.choices
            else [h for h in (s.high,) if h is not None and h > top]
        )
        if not above:
            continue
        if name in given:
            raise ConfigError(
                f"tuning spec, method {method}: knob {name!r}: {above} above {top:g}, the largest "
                f"{name} this setting allows ({why})"
            )
        narrowed[name] = (
            Search(s.low, top, s.log) if s.low is not None and s.low < top else Search(choices=(top,))
        )
    return narrowed


def _builds(spec: Mapping[str, Any], method: str, space: Mapping[str, Search]) -> None:
    """The corners of the space build as configs (cross-parameter checks), and validation is on."""
    for corner in ("low", "high"):
        values = {k: (s.choices[0] if s.choices else getattr(s, corner)) for k, s in space.items()}
        try:
            config = build_config({**spec["parameters"], "algorithm": method, **values})
        except ConfigError as error:
            raise ConfigError(
                f"tuning spec, method {method}, at the {corner} end of its ranges: {error}"
            ) from None
        if config.data.val_fraction == 0:
            raise ConfigError(
                "tuning spec: val_fraction=0 leaves nothing to select on; tune needs val_fraction > 0"
            )


def distributions(space: Mapping[str, Search]) -> dict[str, Any]:
    """Optuna distributions of one method's space."""
    import optuna

    out: dict[str, Any] = {}
    for name, s in space.items():
        if s.choices:
            out[name] = optuna.distributions.CategoricalDistribution(list(s.choices))
        elif isinstance(s.low, int) and isinstance(s.high, int):
            out[name] = optuna.distributions.IntDistribution(s.low, s.high, log=s.log)
        else:
            assert s.low is not None and s.high is not None  # a range without choices has both
            out[name] = optuna.distributions.FloatDistribution(float(s.low), float(s.high), log=s.log)
    return out


def tuning_seed(spec: Mapping[str, Any]) -> int:
    """The seed every trial runs with (the spec's `seed`, else the default)."""
    return int(build_config(spec["parameters"]).run.seed)


def check_eval_seeds(spec: Mapping[str, Any], eval_seeds: list[int], trials: int) -> None:
    """Refuse a trial count < 1 and eval seeds that are empty, repeated or used while tuning."""
    if trials < 1:
        raise ConfigError(f"--trials {trials}: every method needs at least 1 trial")
    seed = tuning_seed(spec)
    if not eval_seeds or len(set(eval_seeds)) < len(eval_seeds):
        raise ConfigError(f"--eval-seeds {eval_seeds}: give distinct seeds")
    if seed in eval_seeds:
        raise ConfigError(
            f"--eval-seeds {','.join(map(str, eval_seeds))} include the tuning seed {seed}: "
            "the judged runs must use seeds never used while tuning"
        )
    for s in eval_seeds:
        build_config({**spec["parameters"], "seed": s})
