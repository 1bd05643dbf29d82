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
# layer → rank; a module may import a layer of lower rank, or its own layer. lab's rooms are
# layers of their own: the notebook glue below them; the tuner and the report side by side (they
# never import each other); sweeps above the report, which they build when they end; tuning
# above sweeps, whose points are its trials.
LAYERS = {
    "core": 0,
    "algorithms": 1,
    "config": 2,
    "flags": 3,
    "loop": 4,
    "lab": 5,
    "flower": 5,
    "lab.tuner": 6,
    "lab.report": 6,
    "lab.sweep": 7,
    "lab.tuning": 8,
    "tools": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 0,
}
APART = ("lab", "flower")  # neither imports the other, whatever the ranks of lab's rooms
TORCH_FREE = [
    "workbench.config",
    "workbench.flags",
    "workbench.algorithms",
    "workbench.core.params",
    "workbench.core.facts",
    "workbench.core.zoo",
    "workbench.core.results",
    "workbench.core.summary",
    "workbench.core.run_files",
    "workbench.core.diagnostics",
    "workbench.core.files",
    "workbench.core.folder_lock",
]


def layer_of(module: str) -> str:
    """'workbench.loop.rounds' → 'loop'; 'workbench.lab.sweep.run' → 'lab.sweep';
    'workbench.lab.notebook' → 'lab'; 'workbench' → '__init__'."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "lab" and f"lab.{parts[2]}" in LAYERS:
        return f"lab.{parts[2]}"
    return parts[1] if len(parts) > 1 else "__init__"


def family(layer: str) -> str:
    """'lab.sweep' → 'lab'."""
    return layer.split(".")[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported by the code, skipping `if TYPE_CHECKING:` blocks; a deferred import
    (`lazy("workbench.x")`, `importlib.import_module("workbench.x")`) counts like any other."""
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
        elif isinstance(node, ast.Call) and deferred_import(node):
            found.append(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [m for m in found if m == "workbench" or m.startswith("workbench.")]


def deferred_import(call: ast.Call) -> bool:
    """`lazy("name")` or `import_module("name")` (plain or as an attribute) with a literal name."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    literal = (
        bool(call.args) and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
    )
    return called in ("lazy", "import_module") and literal


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
        assert {family(theirs), family(mine)} != set(APART), f"{here} ({mine}) imports {imported} ({theirs})"
        assert LAYERS[theirs] < LAYERS[mine], (
            f"{here} ({mine}) imports {imported} ({theirs}): only lower layers may be imported"
        )


def test_the_checker_sees_a_violation():
    bad = ast.parse(
        "from workbench.loop.runner import run_experiment\n"
        "if TYPE_CHECKING:\n    from workbench.lab import sweep\n"
        'report = lazy("workbench.lab.report.figures")\n'
        'tuner = importlib.import_module("workbench.lab.tuner.runs")\n'
    )
    assert runtime_imports(bad) == [
        "workbench.loop.runner",
        "workbench.lab.report.figures",
        "workbench.lab.tuner.runs",
    ]
    assert LAYERS[layer_of("workbench.loop.runner")] > LAYERS[layer_of("workbench.core.data")]
    # the tuner and the report are peers: neither may import the other
    assert layer_of("workbench.lab.report.figures") == "lab.report"
    assert LAYERS[layer_of("workbench.lab.tuner.runs")] == LAYERS["lab.report"]
    assert layer_of("workbench.lab.notebook") == "lab"


def test_config_and_method_declarations_import_without_torch():
    code = (
        f"import sys\nimport {', '.join(TORCH_FREE)}\n"
        "heavy = sorted(m for m in ('torch', 'peft', 'transformers', 'flwr') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
