"""The architecture's arrows, read from the source: service and CLI -> public API ->
engine -> store / backends, and no import cycles anywhere in the package.

Imports are read from the AST (every ``import``, also inside functions, but not under
``if TYPE_CHECKING``), so a forbidden arrow fails here before anyone runs the code path.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import chatsessions

ROOT = Path(chatsessions.__file__).parent
PACKAGE = "chatsessions"

#: what the service and the CLI may not reach: they go through ``chatsessions`` itself
BEHIND_THE_API = ("store", "backends", "engine", "migrations")
#: attributes that would be the sessions' insides (the Responses API's own ``store``
#: parameter is read from its request body, named ``body`` or ``request`` there)
INSIDES = {"store", "cache", "_core", "_runtime"}
REQUEST_BODIES = {"body", "request"}
#: modules that still reach past the public API until the model call has one public path
#: (a one-off answer and a stateless completion on the sessions); the test fails once
#: one of them no longer does, so this list only ever shrinks
AWAITING_PUBLIC_MODEL_CALL: set[str] = set()

#: import edges of a cycle that goes once backends are found through entry points (the
#: factory imports each first-party backend, which imports the protocol back); checked
#: to still exist, so this list too only ever shrinks
AWAITING_BACKEND_ENTRY_POINTS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping ``if TYPE_CHECKING:`` bodies (annotations, not imports)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _known(name: str) -> str | None:
    """The package's module ``name`` names, or its nearest enclosing one."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import module`` depends on the module, not on what pkg re-exports
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in MODULES else base)
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                known = _known(target)
                if known is not None and known != name:
                    found.append(Import(name, known, node.lineno))  # type: ignore[attr-defined]
    return list(dict.fromkeys(found))


GRAPH = {name: imports_of(name) for name in MODULES}


def _part(module: str) -> str:
    """The architectural part a module belongs to: a subpackage's name, or the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module in _PACKAGES) else "root"


_PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _reaches_behind(edge: Import) -> bool:
    target = edge.target.split(".")
    return len(target) > 1 and (target[1] in BEHIND_THE_API or target[1].startswith("_"))


def test_the_module_graph_is_read() -> None:
    """The checks below look at something: the imports we know of are found."""
    assert "chatsessions.service.app" in GRAPH
    targets = {edge.target for edge in GRAPH["chatsessions.sessions"]}
    assert {"chatsessions._sessions.turns", "chatsessions.keys"} <= targets
    assert "chatsessions.engine.turn" in {e.target for e in GRAPH["chatsessions._sessions.turns"]}


@pytest.mark.parametrize("part", ["service", "cli"])
def test_service_and_cli_use_only_the_public_api(part: str) -> None:
    offending = {}
    for name, edges in GRAPH.items():
        if _part(name) != part or name in AWAITING_PUBLIC_MODEL_CALL:
            continue
        bad = [f"line {e.line}: {e.target}" for e in edges if _reaches_behind(e)]
        other = "service" if part == "cli" else "cli"
        if name != "chatsessions.cli.serve":  # serve may import the service's app
            bad += [f"line {e.line}: {e.target}" for e in edges if _part(e.target) == other]
        if bad:
            offending[name] = bad
    assert offending == {}


@pytest.mark.parametrize("part", ["service", "cli"])
def test_service_and_cli_do_not_touch_the_sessions_insides(part: str) -> None:
    offending = []
    for name, path in MODULES.items():
        if _part(name) != part:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or node.attr not in INSIDES:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in REQUEST_BODIES and (
                    node.attr == "store"):
                continue
            offending.append(f"{name} line {node.lineno}: .{node.attr}")
    assert offending == []


def test_modules_awaiting_the_public_model_call_still_need_their_exemption() -> None:
    """Once one of them uses only the public API, it leaves the list (and is checked)."""
    for name in AWAITING_PUBLIC_MODEL_CALL:
        assert name in GRAPH, f"{name} is gone: remove it from the list"
        assert any(_reaches_behind(e) for e in GRAPH[name]), (
            f"{name} uses only the public API now: remove it from the list")


def test_the_engine_does_not_import_the_service_or_the_cli() -> None:
    lower = ("engine", "store", "backends", "migrations")
    offending = [f"{name} line {e.line}: {e.target}" for name, edges in GRAPH.items()
                 if _part(name) in lower for e in edges if _part(e.target) in ("service", "cli")]
    assert offending == []


def _cycle() -> list[str] | None:
    """One import cycle among the package's modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for edge in GRAPH[name]:
            if (name, edge.target) in AWAITING_BACKEND_ENTRY_POINTS:
                continue
            if state.get(edge.target) == 1:
                return [*path[path.index(edge.target):], edge.target]
            if edge.target not in state and (found := visit(edge.target)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_edges_awaiting_entry_points_still_exist() -> None:
    edges = {(e.source, e.target) for edges in GRAPH.values() for e in edges}
    gone = AWAITING_BACKEND_ENTRY_POINTS - edges
    assert not gone, f"remove {sorted(gone)} from AWAITING_BACKEND_ENTRY_POINTS"


def test_a_cycle_is_found_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search itself works: an edge back from the engine closes a cycle it reports."""
    back = Import("chatsessions.engine.turn", "chatsessions.sessions", 1)
    monkeypatch.setitem(GRAPH, "chatsessions.engine.turn",
                        [*GRAPH["chatsessions.engine.turn"], back])
    cycle = _cycle()
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert "chatsessions.sessions" in cycle
