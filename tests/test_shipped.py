"""One lookup of the files the package ships, and provenance that names no commit outside a
checkout of this code (the wheel itself: tests/test_wheel.py)."""

import subprocess

import pytest

from workbench.lab.report import provenance
from workbench.lab.shipped import shipped
from workbench.lab.sweep import run


def test_shipped_files_are_found_inside_the_package():
    path = shipped("notebooks/sweeps/demo.yaml")
    assert path.is_file() and "workbench" in path.parts
    assert shipped("notebooks/fedlora.ipynb") == run.NOTEBOOK


def test_a_file_the_installation_lacks_is_named_with_what_to_do():
    with pytest.raises(FileNotFoundError, match=r"'notebooks/absent.ipynb' is not shipped .*pip install \."):
        shipped("notebooks/absent.ipynb")


def test_provenance_names_a_commit_only_at_the_top_of_a_checkout(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    inside = tmp_path / "venv" / "site-packages"
    inside.mkdir(parents=True)
    assert provenance.git_state(inside) == {"commit": None, "dirty": None}
    assert provenance.git_state(provenance.ROOT)["commit"]  # this checkout
