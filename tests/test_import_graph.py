"""The import graph of preprocess, pipeline and trainer, read from the source with `ast`
(nothing is imported): no import cycle, and every import goes the documented way
(docs/architecture.md; each package's __init__ docstring):

    preprocess <- pipeline <- trainer
    inside trainer:  runstore <- run <- analysis,  run <- demo,  runstore <- server
    the server and the run store never reach torch, pipeline or the run, even indirectly.

Imports inside functions count too: a lazy import is still a dependency, and a lazy import
that closes a circle only hides it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocess", "pipeline", "trainer")

# room -> the rooms it may import (its own always allowed). A module's room is the longest
# prefix of its dotted name found here.
MAY_IMPORT: dict[str, set[str]] = {
    "preprocess": set(),
    "pipeline": {"preprocess"},
    "trainer.runstore": {"preprocess"},
    "trainer.server": {"preprocess", "trainer.runstore"},
    "trainer.run": {"preprocess", "pipeline", "trainer.runstore"},
    "trainer.analysis": {"preprocess", "pipeline", "trainer.runstore", "trainer.run"},
    "trainer.demo": {"preprocess", "pipeline", "trainer.runstore", "trainer.run", "trainer.server"},
    # the entry points: __main__ and cli (which names the subcommands' modules as strings)
    "trainer": {"preprocess", "pipeline"},
}
# rooms that must not reach these third-party packages through any chain of imports
NEVER_REACH = {"trainer.server": {"torch", "nvidia"}, "trainer.runstore": {"torch", "nvidia"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def room(name: str) -> str:
    return max((r for r in MAY_IMPORT if name == r or name.startswith(r + ".")), key=len)


def _resolve(name: str) -> str | None:
    """The project module `name` denotes (a name inside a module -> that module)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> list[tuple[str, int]]:
    """(dotted name imported, line) for each import in module `name`, relative ones resolved."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub where there is one
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base, node.lineno)
                      for alias in node.names]
    return found


@cache
def graph() -> dict[str, set[str]]:
    edges = {}
    for name in modules():
        targets = {_resolve(imported) for imported, _ in imports_of(name)}
        edges[name] = {t for t in targets if t and t != name}
    return edges


def third_party(name: str) -> set[str]:
    return {imported.split(".")[0] for imported, _ in imports_of(name) if _resolve(imported) is None}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_rooms():
    """Guards the test itself: a parser that found nothing would pass everything below."""
    assert {"trainer.run.train", "trainer.analysis.evaluate", "trainer.demo.launcher",
            "trainer.server.app", "trainer.runstore.runlock"} <= set(modules())
    assert "trainer.run.model" in graph()["trainer.analysis.inference"]
    assert "trainer.runstore.runlock" in graph()["trainer.server.deps"]
    assert "torch" in third_party("trainer.run.train")


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_go_the_documented_way():
    wrong = []
    for name in modules():
        allowed = MAY_IMPORT[room(name)] | {room(name)}
        for imported, line in imports_of(name):
            target = _resolve(imported)
            if target and room(target) not in allowed:
                wrong.append(f"{modules()[name].relative_to(ROOT)}:{line}: {room(name)} imports {target}")
    assert not wrong, "imports against the documented direction:\n" + "\n".join(wrong)


def test_server_and_runstore_never_reach_torch():
    wrong = []
    for name in modules():
        banned = NEVER_REACH.get(room(name))
        if not banned:
            continue
        seen, todo = {name}, [name]
        while todo:
            for dep in graph()[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        wrong += [f"{name} reaches {pkg} through {m}" for m in sorted(seen) for pkg in third_party(m) & banned]
    assert not wrong, "\n".join(wrong)


def test_cli_names_existing_modules():
    """`trainer SUBCOMMAND` imports its module by name: a stale name fails only when chosen."""
    from_cli = [node.value for node in ast.walk(ast.parse((ROOT / "trainer/cli.py").read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("trainer.")]
    assert len(from_cli) >= 7
    assert [name for name in from_cli if name not in modules()] == []
