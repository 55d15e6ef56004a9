"""No import circle in pipeline/: `make_loader` sits above the backends, recovery below DALI's."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"


def imports_of(path: Path) -> set[str]:
    """pipeline modules a module imports anywhere in it (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pipeline":
                out |= {a.name for a in node.names if (PIPELINE / f"{a.name}.py").exists()}
            elif node.module.startswith("pipeline."):
                out.add(node.module.split(".")[1])
    return out


def test_pipeline_modules_import_no_circle():
    graph = {p.stem: imports_of(p) - {p.stem} for p in PIPELINE.glob("*.py") if p.stem != "__init__"}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "loader" not in graph["dali"] | graph["reference"] | graph["base"]
    assert "dali" not in graph["badinput"]
