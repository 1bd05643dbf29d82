"""The import layering of docs/architecture.md, enforced over the source's syntax trees.

Each module belongs to a layer and imports only from its own layer or those below; peers at
the same rank (lab, flower) do not import each other. Imports under `if TYPE_CHECKING:` are
annotations only and are not counted. The torch-free layers are also checked by importing them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
# layer → rank; a module may import a layer of lower rank, or its own layer
LAYERS = {
    "core": 0,
    "algorithms": 1,
    "config": 2,
    "flags": 3,
    "loop": 4,
    "lab": 5,
    "flower": 5,
    "tools": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 0,
}
TORCH_FREE = [
    "workbench.config",
    "workbench.flags",
    "workbench.algorithms",
    "workbench.core.params",
    "workbench.core.facts",
    "workbench.core.zoo",
    "workbench.core.results",
]


def layer_of(module: str) -> str:
    """'workbench.loop.rounds' → 'loop'; 'workbench' → '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported by the code, skipping `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names if node.module == "workbench")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [m for m in found if m == "workbench" or m.startswith("workbench.")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    here = module_name(path)
    mine = layer_of(here)
    assert mine in LAYERS, f"{here}: add its layer to docs/architecture.md and LAYERS"
    for imported in runtime_imports(ast.parse(path.read_text())):
        theirs = layer_of(imported)
        if imported == "workbench" or theirs == mine:
            continue
        assert LAYERS[theirs] < LAYERS[mine], (
            f"{here} ({mine}) imports {imported} ({theirs}): only lower layers may be imported"
        )


def test_the_checker_sees_a_violation():
    bad = ast.parse(
        "from workbench.loop.runner import run_experiment\n"
        "if TYPE_CHECKING:\n    from workbench.lab import sweep\n"
    )
    assert runtime_imports(bad) == ["workbench.loop.runner"]
    assert LAYERS[layer_of("workbench.loop.runner")] > LAYERS[layer_of("workbench.core.data")]


def test_config_and_method_declarations_import_without_torch():
    code = (
        f"import sys\nimport {', '.join(TORCH_FREE)}\n"
        "heavy = sorted(m for m in ('torch', 'peft', 'transformers', 'flwr') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
