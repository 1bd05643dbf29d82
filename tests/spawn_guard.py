"""The markers a test needs, read from the processes it starts (docs/architecture.md §10).

`make check` runs the tests without the markers that say a test needs a browser, a server or a
kernel. A test that starts one of those processes unmarked would slip into that fast subset, so
conftest installs this guard as an audit hook: the start is refused, and the test fails naming
the marker it lacks.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest


def package_dir(name: str) -> str | None:
    """Where an installed package lives (found, not imported: Ray costs seconds to import)."""
    spec = importlib.util.find_spec(name)
    places = list(spec.submodule_search_locations or []) if spec else []
    return str(Path(places[0]).resolve()) + os.sep if places else None


# Processes started from inside these packages' folders (Ray's GCS server, raylet, dashboard and
# log monitor; Playwright's driver, which starts Chromium) need the package's marker.
PACKAGES = {"ray": "ray", "playwright": "browser"}
PACKAGE_DIRS = {marker: place for name, marker in PACKAGES.items() if (place := package_dir(name))}

# Patterns on the whole command line, for processes whose program is python, a venv script or a
# shell (`W` starts a word: after the line's start, a space or a slash).
W, END = r"(?:^|[\s/])", r"(?:\s|$)"
COMMANDS = [
    (re.compile(rf"{W}-m ipykernel(?:_launcher)?{END}|{W}ipykernel_launcher(?:\.py)?{END}"), "kernels"),
    (re.compile(rf"{W}-m workbench (?:sweep|tune){END}"), "kernels"),  # these CLIs run points on kernels
    (re.compile(rf"{W}-m jupyterlab{END}|{W}jupyter-lab{END}|{W}jupyter lab{END}"), "jupyterlab"),
    (re.compile(rf"{W}(?:chromium|chrome|headless_shell){END}"), "browser"),
    (re.compile(rf"{W}(?:flower-[a-z]+|flwr(?:-[a-z]+)?){END}"), "flower"),  # SuperLink, SuperNode, flwr
]


def needed_marker(argv: Sequence[str]) -> str | None:
    """The marker a test must carry to start this command line, or None for any other process."""
    if not argv:
        return None
    program = os.path.realpath(argv[0]) if os.sep in argv[0] else argv[0]
    for marker, place in PACKAGE_DIRS.items():
        if program.startswith(place) or any(arg.startswith(place) for arg in argv[1:]):
            return marker
    line = " ".join(argv)
    return next((marker for pattern, marker in COMMANDS if pattern.search(line)), None)


def command_line(executable: str | bytes | os.PathLike, args: Sequence) -> list[str]:
    """The argv of a `subprocess.Popen` audit event (a list by then, shell=True included), with
    the program really started in place of argv[0]."""
    argv = [os.fsdecode(arg) for arg in args]
    return [os.fsdecode(executable), *argv[1:]] if argv else []


class SpawnGuard:
    """Refuses, during a test, the start of a process whose marker the test lacks."""

    def __init__(self) -> None:
        """No test is running yet; nothing refused."""
        self.item: pytest.Item | None = None
        self.refused: list[str] = []

    def audit(self, event: str, args: tuple) -> None:
        """The audit hook: looks at `subprocess.Popen` events only."""
        if event != "subprocess.Popen" or self.item is None:
            return
        argv = command_line(args[0], args[1])
        marker = needed_marker(argv)
        if marker is None or self.item.get_closest_marker(marker) is not None:
            return
        message = (
            f"{self.item.nodeid} starts `{' '.join(argv)[:200]}` but is not marked "
            f"@pytest.mark.{marker}; mark it (docs/architecture.md §10) so `make check` leaves it out"
        )
        self.refused.append(message)
        raise RuntimeError(message)
