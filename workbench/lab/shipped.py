"""Files the package ships beside its code: the notebooks papermill runs and the sweep specs.

One lookup serves a checkout and an installed wheel alike. In a checkout, `workbench/notebooks`
is a link to the top-level `notebooks/` folder (where researchers open and edit them); a wheel
holds a copy, as package data (pyproject.toml's `[tool.setuptools.package-data]`). Nothing
walks up from the source tree to find them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE = "workbench"


def shipped(name: str) -> Path:
    """The path of a file shipped with the package, by its '/'-separated name inside it, e.g.
    `shipped("notebooks/fedlora.ipynb")`; a clear error when this installation lacks it."""
    resource = files(PACKAGE).joinpath(*name.split("/"))
    if not resource.is_file():
        raise FileNotFoundError(
            f"{name!r} is not shipped with this installation of {PACKAGE} ({files(PACKAGE)}): "
            "reinstall it (pip install .), or in a checkout restore the link "
            "workbench/notebooks -> ../notebooks (git checkout workbench/notebooks)"
        )
    return Path(str(resource))
