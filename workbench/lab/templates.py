"""Notebook templates stay clean: outputs never saved into tracked notebooks, never executed.

Three guards share one `strip` function: the sweep executes a stripped copy of its template
(`clean_template`), JupyterLab's pre-save hook (`strip_tracked_notebook`, enabled by the repo's
`.jupyter/jupyter_server_config.json`) saves git-tracked notebooks without outputs, and the
nbstripout git filter (`make setup`) keeps them out of commits. Never imports torch.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import nbformat

_CELL_KEYS = ("execution", "collapsed", "scrolled")  # per-session state JupyterLab records


def strip(nb: dict) -> bool:
    """Remove outputs, execution counts and widget state in place; True when anything went."""
    changed = bool(nb.get("metadata", {}).pop("widgets", None))
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        changed |= any(meta.pop(key, None) is not None for key in _CELL_KEYS)
        if cell.get("cell_type") != "code":
            continue
        changed |= bool(cell.get("outputs")) or cell.get("execution_count") is not None
        cell["outputs"], cell["execution_count"] = [], None
    return changed


def clean_template(path: str | Path) -> nbformat.NotebookNode:
    """The notebook at `path` without outputs: what a sweep hands papermill."""
    nb = nbformat.read(str(path), as_version=4)
    strip(nb)
    return nb


def is_tracked(path: Path) -> bool:
    """Whether git tracks the file (False outside a repository or without git)."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path.name],
            cwd=path.parent,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def strip_tracked_notebook(model: dict, path: str, contents_manager: Any, **_: Any) -> None:
    """Jupyter pre-save hook: a git-tracked notebook is written without outputs.

    The open document keeps its outputs in the browser; only the file on disk stays clean.
    """
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    root = Path(getattr(contents_manager, "root_dir", "."))
    if is_tracked((root / path.lstrip("/")).resolve()):
        strip(model["content"])
