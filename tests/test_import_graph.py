"""The import graph of the project's packages, read from the source with `ast` (nothing is
imported), against the diagram of docs/architecture.md (its ```text block, one arrow
`A --> B` a line, "A imports B"): no import cycle, no import between two rooms that the
diagram lacks, no arrow in the diagram that no import draws, and the mermaid picture the
same arrows as the text. The bottom room `common` imports nothing of the project; the server
and the run store import no domain package and never reach torch, even indirectly.

Imports inside functions count too: a lazy import is still a dependency, and a lazy import
that closes a circle only hides it.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "preprocess", "pipeline", "trainer")
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _block(text: str, lang: str) -> str:
    found = re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)
    assert len(found) == 1, f"docs/architecture.md has {len(found)} ```{lang} blocks, expected one"
    return found[0]


def diagram_arrows(text: str) -> set[tuple[str, str]]:
    """The (importer, imported) room pairs of the text diagram; `A --> B --> C` is two."""
    arrows = set()
    for line in _block(text, "text").splitlines():
        rooms = [part.strip() for part in line.split("-->")]
        if len(rooms) < 2 or not all(rooms):
            assert not line.strip(), f"not an arrow in the text diagram: {line!r}"
            continue
        arrows |= set(zip(rooms, rooms[1:]))
    return arrows


def mermaid_arrows(text: str) -> set[tuple[str, str]]:
    """The same pairs from the mermaid picture, its node ids replaced by their labels."""
    block = _block(text, "mermaid")
    labels = dict(re.findall(r'^\s*(\w+)\["([\w.]+)"\]\s*$', block, re.M))
    pairs = re.findall(r"^\s*([\w.]+)\s*-->\s*([\w.]+)\s*$", block, re.M)
    return {(labels.get(a, a), labels.get(b, b)) for a, b in pairs}


@cache
def documented() -> set[tuple[str, str]]:
    return diagram_arrows(ARCHITECTURE.read_text())


@cache
def rooms() -> set[str]:
    return {r for arrow in documented() for r in arrow}


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
    """A module's room: the longest room name that is its name or a prefix of it (a package
    the diagram does not name is a room of its own, so its imports show as undrawn arrows)."""
    return max((r for r in rooms() if name == r or name.startswith(r + ".")), key=len,
               default=name.split(".")[0])


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


def room_arrows() -> dict[tuple[str, str], list[str]]:
    """(importer's room, imported room) -> the imports that draw it, as "path:line: module"."""
    drawn = {}
    for name in modules():
        for imported, line in imports_of(name):
            target = _resolve(imported)
            if target and room(target) != room(name):
                drawn.setdefault((room(name), room(target)), []).append(
                    f"{modules()[name].relative_to(ROOT)}:{line}: imports {target}")
    return drawn


def test_the_diagram_is_read():
    """Guards the test itself: a diagram read as empty would forbid nothing it could check."""
    assert {"common", "preprocess", "pipeline", "trainer.run", "trainer.server", "trainer.runstore"} <= rooms()
    assert ("pipeline", "preprocess") in documented()
    assert diagram_arrows("```text\na --> b --> c\n\nd --> c\n```\n") == {("a", "b"), ("b", "c"), ("d", "c")}


def test_bottom_room_server_and_runstore_import_no_domain_package():
    """Held by the diagram too; this keeps an arrow added to the diagram from allowing it."""
    allowed = {"common": set(), "trainer.runstore": {"common"}, "trainer.server": {"common", "trainer.runstore"}}
    wrong = [f"{a} --> {b}: {sites[0]}" for (a, b), sites in sorted(room_arrows().items())
             if a in allowed and b not in allowed[a]]
    wrong += [f"the diagram draws {a} --> {b}" for a, b in sorted(documented()) if a in allowed and b not in allowed[a]]
    assert not wrong, "\n".join(wrong)


def test_imports_go_the_documented_way():
    drawn = room_arrows()
    wrong = [f"{where} ({a} --> {b} is not in docs/architecture.md)"
             for (a, b), sites in sorted(drawn.items()) if (a, b) not in documented() for where in sites]
    assert not wrong, "imports against the documented direction:\n" + "\n".join(wrong)


def test_every_documented_arrow_is_drawn_by_an_import():
    stale = sorted(documented() - set(room_arrows()))
    assert not stale, "docs/architecture.md draws arrows no import makes: " + ", ".join(
        f"{a} --> {b}" for a, b in stale)


def test_the_picture_matches_the_text():
    text = ARCHITECTURE.read_text()
    assert mermaid_arrows(text) == diagram_arrows(text), (
        f"mermaid only: {sorted(mermaid_arrows(text) - diagram_arrows(text))}, "
        f"text only: {sorted(diagram_arrows(text) - mermaid_arrows(text))}")


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
