"""The pages a newcomer reads stay true: every relative link resolves (file and anchor) inside the
repository, README.md stays short and links every docs page, every `python -m workbench…` named
is a runnable module, every such command in a code block parses with today's flags, and the
docs' example method runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.config import ConfigError, build_config

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150  # issue 20's acceptance: a README a newcomer reads to the end
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    + [ROOT / d / "README.md" for d in ("notebooks", "benchmarks", "reports")]
)
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
MODULE = re.compile(r"python -m (workbench[\w.]*)")
COMMAND = re.compile(r"^.*?\bpython -m (workbench(?:\.flower)?) .*$", re.M)
# a path into the repository (from its root, or from workbench/ as architecture.md writes them);
# generated folders (runs/, reports/<sweep>) and placeholders (<id>, *.yaml, DIR) are not checked
PATH = re.compile(
    r"(?<![\w./$-])((?:\.ci|\.jupyter|workbench|tests|notebooks|benchmarks|docs|"
    r"core|algorithms|loop|lab|flower|tools)/[\w./-]*)"
)
WITH_PARAMETERS = {"run", "costs", "simulate"}  # sub-commands that take `--name value` parameters


def prose(text: str) -> str:
    """The text without code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces become hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.replace("`", "")).strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of the page that names no file inside root, or no heading there."""
    text, root = prose(page.read_text()), root.resolve()
    problems = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repo
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.resolve().relative_to(root)}: link {target!r}"
        if path.startswith("/") or not file.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not file.exists():
            problems.append(f"{where}: no such file {file.relative_to(root)}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            problems.append(f"{where}: no heading with anchor #{anchor} in {file.relative_to(root)}")
    return problems


def missing_paths(text: str, root: Path = ROOT) -> list[str]:
    """Each repository path the text names (in code or prose) that is not there."""
    named = {m.rstrip(".") for m in PATH.findall(text)}
    return [
        f"path {p!r} does not exist"
        for p in sorted(named)
        if not any((r / p).exists() for r in (root, root / "workbench"))
    ]


def missing_modules(text: str) -> list[str]:
    """Each `python -m workbench…` module of the text that is not there or cannot run with -m."""
    problems = []
    for name in sorted({m.rstrip(".") for m in MODULE.findall(text)}):
        try:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(f"{name}.__main__")  # a package runs its __main__
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            problems.append(f"`python -m {name}`: no such runnable module")
    return problems


def parsers() -> dict[str, Callable]:
    """The argument parser of each command-line module."""
    from workbench.cli import parser
    from workbench.flower.cli import parser as flower_parser

    return {"workbench": parser, "workbench.flower": flower_parser}


def refusal(command: str) -> str | None:
    """Why the CLI would refuse this command line before running it (None: it parses)."""
    from workbench.flags import flat_parameters

    words = shlex.split(command, comments=True)
    at = words.index("-m")
    module, argv = words[at + 1], words[at + 2 :]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args, extra = parsers()[module]().parse_known_args(argv)
        if args.command in WITH_PARAMETERS:
            build_config(flat_parameters(args, extra))
        elif extra:
            return f"unexpected arguments {extra}"
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    except ConfigError as error:
        return str(error)
    return None


def commands(text: str) -> list[str]:
    """Each `python -m workbench[.flower] …` line of the text's code blocks, continuations joined."""
    blocks = "\n".join(FENCE.findall(text)).replace("\\\n", " ")
    return [m.group(0).strip() for m in COMMAND.finditer(blocks)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists(), f"{page.relative_to(ROOT)} is missing"
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    lines = len(readme.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(prose(readme))}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_make_targets_the_readme_names_exist():
    readme = (ROOT / "README.md").read_text()  # `make X` in code only: prose may "make certificates"
    code = "\n".join(FENCE.findall(readme))
    named = set(
        re.findall(r"`make ([a-z][\w-]*)", readme) + re.findall(r"^\s*make ([a-z][\w-]*)", code, re.M)
    )
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert named and named <= targets, f"README names make targets the Makefile lacks: {named - targets}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(page):
    problems = missing_paths(page.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_m_command_names_a_runnable_module(page):
    problems = missing_modules(page.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_a_code_block_parses(page):
    pytest.importorskip("flwr")  # workbench.flower's parser needs Flower (the `flower` extra)
    refused = {c: refusal(c) for c in commands(page.read_text())}
    assert {c: why for c, why in refused.items() if why} == {}


def test_the_checks_catch_what_they_look_for(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## The hooks, §7\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "[ok](b.md#the-hooks-7) [gone](c.md) [anchor](b.md#nope) [out](../../x.md) "
        "[web](https://example.org) `[code](d.md)`\n\n```\n[fenced](e.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/a.md: link 'c.md': no such file docs/c.md",
        "docs/a.md: link 'b.md#nope': no heading with anchor #nope in docs/b.md",
        "docs/a.md: link '../../x.md' leaves the repository",
    ]
    assert missing_paths("see `workbench/bench.py` and workbench/tools/bench.py, runs/x", ROOT) == [
        "path 'workbench/bench.py' does not exist"
    ]
    assert missing_modules("python -m workbench.tools.protocol and python -m workbench.cli") == [
        "`python -m workbench.tools.protocol`: no such runnable module"
    ]
    assert missing_modules("python -m workbench.tools") == [
        "`python -m workbench.tools`: no such runnable module"
    ]
    assert "did you mean 'rank'" in refusal("python -m workbench run --rnak 4")
    assert "invalid choice" in refusal("python -m workbench runn --rank 4")
    assert refusal("python -m workbench run --rank 4 --out runs/x") is None


@pytest.mark.slow  # imports torch and PEFT and runs a tiny experiment
def test_the_example_method_of_the_docs_runs(tiny):
    from workbench.algorithms import unregister
    from workbench.loop.runner import run_experiment

    (example,) = [b for b in FENCE.findall((ROOT / "docs" / "methods.md").read_text()) if "@register" in b]
    try:
        exec(compile(example, "docs/methods.md", "exec"), {})
        result = run_experiment(build_config({**tiny, "algorithm": "smooth", "smooth_eps": 0.2}))
    finally:
        unregister("smooth")
    assert set(result.table["algorithm"]) == {"smooth"} and (result.table["train_flops"] > 0).all()
