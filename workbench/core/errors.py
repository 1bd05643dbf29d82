"""Errors a user can fix (a parameter, a data folder, an output folder): one message, no traceback.

The command line prints such an error as one line and exits with status 2 (a traceback only
with --debug); in a notebook IPython shows the message alone, through `_render_traceback_`.
"""

from __future__ import annotations

from pathlib import Path


class UserError(ValueError):
    """Something the user can fix; the message says what, which value and what to do."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback."""
        return [f"{type(self).__name__}: {self}"]


class DamagedFileError(UserError):
    """A file the workbench wrote cannot be read back (cut short, not JSON, not a table)."""

    def __init__(self, path: str | Path, problem: str, remedy: str) -> None:
        super().__init__(f"{path} cannot be read ({problem}); {remedy}")
        self.path, self.problem, self.remedy = Path(path), problem, remedy
