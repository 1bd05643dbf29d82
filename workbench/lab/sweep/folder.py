"""A sweep folder's points on disk: their state, damaged ones restarted, older ones found again.

`points/<id>/` holds a point's executed notebook, its run directory (`run/`) and `status.json`.
Before a sweep runs its points, every point folder is checked (`damage`): a file that cannot be
read (status.json; the run's config, table, events or summary; a checkpoint cut short) or a
point that failed on such a file makes the point start again from scratch. Its folder is set
aside as `points/<id>.old` (replacing an older one: nothing is deleted that the user did not
see named) and the reason is printed and kept in sweep.json; the other points are untouched.
`--restart-point ID` does the same on request. A point's id carries a digest of its resolved
parameters, which changes when the workbench gains a parameter; a point without a folder of its
id adopts the folder whose stored parameters, read with today's defaults, equal its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, stored_config
from workbench.core import files
from workbench.core.errors import DamagedFileError
from workbench.core.facts import CONFIG_FILE, STATUS_FILE, TABLE_FILE
from workbench.core.run_files import check_run_dir
from workbench.lab.sweep.spec import Point

POINTS, ASIDE = "points", ".old"  # a point folder set aside: `<id>.old`
RESTART = "run the sweep with --restart-point {id} to run this point again from scratch"


def point_state(sweep_dir: Path, point: Point) -> dict[str, Any]:
    """The point's recorded status ({"state": "missing"} when it never finished or its results
    are gone)."""
    folder = sweep_dir / POINTS / point.id
    status = folder / STATUS_FILE
    if not status.exists():
        return {"state": "missing", "error": None}
    recorded = files.read_json(status, RESTART.format(id=point.id), keys=("state",))
    if recorded["state"] == "done" and not (folder / "run" / TABLE_FILE).exists():
        return {"state": "missing", "error": None}
    return recorded


def damage(folder: Path) -> str | None:
    """Why a point folder cannot be trusted (a file that cannot be read, or a failure on one);
    None when nothing is damaged. Checks files without torch."""
    try:
        if (folder / STATUS_FILE).exists():
            status = files.read_json(folder / STATUS_FILE, "", keys=("state",))
            if str(status.get("error") or "").startswith(f"{DamagedFileError.__name__}:"):
                return f"it failed on a damaged file ({status['error']})"
        for run_dir in sorted(p for p in folder.glob("run*") if p.is_dir()):
            check_run_dir(run_dir)
    except DamagedFileError as error:
        return f"{error.path.relative_to(folder)} cannot be read ({error.problem})"
    return None


def set_aside(folder: Path) -> Path:
    """Move a point folder to `<id>.old` beside it (replacing an older one); its new path."""
    aside = folder.with_name(folder.name + ASIDE)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    return aside


def restart(sweep_dir: Path, points: Sequence[Point], asked: Iterable[str]) -> dict[str, str]:
    """Set aside every point folder that is damaged or asked to restart (`asked`: point ids);
    print why, return {point id: why}."""
    asked, why = set(asked), {}
    for point in points:
        folder = sweep_dir / POINTS / point.id
        if not folder.is_dir():
            continue
        reason = "asked to restart (--restart-point)" if point.id in asked else damage(folder)
        if reason is None:
            continue
        aside = set_aside(folder)
        print(
            f"point {point.id} {point.swept}: {reason}; it runs again from scratch (the old "
            f"folder is kept as {aside.relative_to(sweep_dir)})",
            flush=True,
        )
        why[point.id] = reason
    return why


def chosen(points: Sequence[Point], ids: Iterable[str]) -> set[str]:
    """The point ids that `ids` name (a whole id, or its index part like `p003`); ConfigError
    naming any that matches no point."""
    by_index = {p.id.split("-")[0]: p.id for p in points}
    known = {p.id for p in points}
    found, unknown = set(), []
    for name in ids:
        match = name if name in known else by_index.get(name)
        if match is None:
            unknown.append(name)
        else:
            found.add(match)
    if unknown:
        listed = ", ".join(p.id for p in points[:5]) + (", …" if len(points) > 5 else "")
        raise ConfigError(
            f"--restart-point {', '.join(unknown)}: no point of this sweep has that id; its points "
            f"are {listed} (see sweep.json, or give the index part, e.g. {points[0].id.split('-')[0]})"
        )
    return found


def _stored(folder: Path, recorded: Mapping[str, Any]) -> dict[str, Any] | None:
    """A point folder's resolved parameters: as sweep.json recorded them, else its run's config."""
    if isinstance(recorded.get(folder.name), dict):
        return recorded[folder.name]
    try:
        return files.read_json(folder / "run" / CONFIG_FILE, "", keys=("algorithm",))
    except DamagedFileError:  # missing or damaged: nothing to match it by
        return None


def _key(flat: Mapping[str, Any]) -> str:
    return json.dumps(flat, sort_keys=True, default=str)


def adopt(sweep_dir: Path, points: Sequence[Point], record: Mapping[str, Any]) -> list[str]:
    """Rename point folders made before a parameter was added to today's point ids (matched by
    their parameters read with today's defaults); one message per folder renamed."""
    root, ids = sweep_dir / POINTS, {p.id for p in points}
    homeless = [p for p in points if not (root / p.id).exists()]
    if not homeless or not root.is_dir():
        return []
    entries = record.get("points", []) if isinstance(record.get("points"), list) else []
    recorded = {e["id"]: e.get("resolved") for e in entries if isinstance(e, dict) and "id" in e}
    candidates: dict[str, tuple[Path | None, dict[str, Any]]] = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name not in ids and not folder.name.endswith(ASIDE):
            stored = _stored(folder, recorded)
            if stored is not None:
                candidates.setdefault(_key(stored_config(stored)), (folder, stored))
    notes = []
    for point in homeless:
        found, stored = candidates.pop(_key(point.flat), (None, {}))
        if found is not None:
            os.replace(found, root / point.id)
            added = ", ".join(sorted(set(point.flat) - set(stored))) or "a change of the ids"
            notes.append(f"point {point.id}: found as {found.name} (made before {added}); renamed")
    return notes
