"""A sweep spec: fixed parameters, a grid of swept values and further grids, expanded into
validated points.

Spec (YAML): `parameters:` fixed flat values, `grid:` a list of values per swept name, and
optionally `also:` a list of further grids whose points are appended (e.g. each baseline once
beside FedLoRA's rank × μ grid, instead of a product that repeats them). Every point is
validated by the strict config call before any runs; its id carries a digest of its resolved
parameters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.config import ConfigError, build_config

SPEC_KEYS = {"parameters", "grid", "also"}


@dataclass(frozen=True)
class Point:
    """One grid point: its id, the swept values and the full flat parameters."""

    id: str
    swept: dict[str, Any]
    flat: dict[str, Any]


def _check_grid(where: str, grid: Any, parameters: Mapping[str, Any]) -> dict[str, list]:
    """A grid is a non-empty mapping of names to non-empty lists, disjoint from the fixed values."""
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"sweep spec: `{where}` is empty; give at least one name with a list of values")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep spec: {where} entry {name!r} must be a non-empty list, got {values!r}")
        if name in parameters:
            raise ConfigError(f"sweep spec: {name!r} is both fixed in `parameters` and swept in `{where}`")
    return {k: list(v) for k, v in grid.items()}


def load_spec(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a sweep spec (YAML file or mapping) and check its shape."""
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ConfigError(
            f"sweep spec {source} is not a file; give the path of a YAML spec (see notebooks/sweeps)"
        )
    try:
        spec = yaml.safe_load(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    except yaml.YAMLError as error:
        raise ConfigError(f"sweep spec {source} is not valid YAML: {error}") from None
    if not isinstance(spec, Mapping) or set(spec) - SPEC_KEYS:
        found = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
        raise ConfigError(f"sweep spec must be a mapping with keys {sorted(SPEC_KEYS)}, got {found}")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ConfigError("sweep spec: `parameters` must map names to values")
    also = spec.get("also") or []
    if not isinstance(also, list):
        raise ConfigError("sweep spec: `also` must be a list of grids")
    return {
        "parameters": dict(parameters),
        "grid": _check_grid("grid", spec.get("grid"), parameters),
        "also": [_check_grid(f"also[{i}]", g, parameters) for i, g in enumerate(also)],
    }


def swept_values(spec: Mapping[str, Any]) -> dict[str, list]:
    """Every swept name with all its values across `grid` and `also`, in first-seen order."""
    merged: dict[str, list] = {}
    for grid in (spec["grid"], *spec["also"]):
        for name, values in grid.items():
            merged.setdefault(name, [])
            merged[name] += [v for v in values if v not in merged[name]]
    return merged


def expand(spec: Mapping[str, Any]) -> list[Point]:
    """All grid points, each validated by the strict config call before anything runs."""
    combos = [
        dict(zip(grid, values))
        for grid in (spec["grid"], *spec["also"])
        for values in itertools.product(*grid.values())
    ]
    points = []
    for index, swept in enumerate(combos):
        flat = {**spec["parameters"], **swept}
        try:
            resolved = build_config(flat).to_flat()
        except ConfigError as error:
            raise ConfigError(f"grid point {index} ({swept}): {error}") from None
        digest = hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
        points.append(Point(id=f"p{index:03d}-{digest}", swept=swept, flat=resolved))
    return points
