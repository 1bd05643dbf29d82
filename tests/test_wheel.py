"""The package runs from a wheel: notebooks and specs are package data, nothing is looked up in
the source tree. A wheel built from this checkout is installed into a fresh venv, which borrows
this venv's third-party packages (a .pth line: installing torch again would take minutes and
gigabytes) but not its editable workbench, and runs a two-point sweep from outside the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("notebooks/fedlora.ipynb", "notebooks/report.ipynb", "notebooks/sweeps/demo.yaml")

pytestmark = [pytest.mark.slow, pytest.mark.kernels]


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: an in-tree build would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("workbench", "notebooks"):  # workbench/notebooks stays a link to ../notebooks
        shutil.copytree(
            ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    # no index and no isolation: the build uses this venv's setuptools, offline
    pip = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index")
    _run(*pip, "--wheel-dir", out, source, cwd=out)
    (found,) = out.glob("workbench-*.whl")
    return found


def test_the_wheel_holds_the_notebooks_and_specs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in SHIPPED if f"workbench/{name}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    assert "workbench/flower/app/pyproject.toml" in names
    assert not any(name.startswith("tests/") for name in names)


def test_a_wheel_in_a_fresh_venv_runs_a_two_point_sweep_from_outside_the_repo(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
    )
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip()
    )
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # this venv's kernelspec and nbconvert templates live under its share/jupyter
    env = {**os.environ, "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    env.pop("PYTHONPATH", None)
    where = _run(python, "-c", "import workbench; print(workbench.__file__)", cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(venv), f"the fresh venv imported workbench from {where}"

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec({"rank": [1, 2]})))
    _run(
        python,
        "-m",
        "workbench",
        "sweep",
        "spec.yaml",
        "--out",
        "sweep",
        "--workers",
        "1",
        cwd=tmp_path,
        env=env,
    )
    sweep = tmp_path / "sweep"
    assert (sweep / "report.html").stat().st_size > 0
    record = json.loads((sweep / "sweep.json").read_text())
    assert [p["state"] for p in record["points"]] == ["done", "done"]
    assert record["provenance"]["commit"] is None  # site-packages is no checkout of this code
