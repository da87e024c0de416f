"""The engine's imports: no cycles among the package's modules, and the OpenAI-compatible
turn routes reach the model only through the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import chatsessions

PACKAGE = Path(chatsessions.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports when loaded (not under TYPE_CHECKING, not
    inside functions: those cannot make a cycle at import time)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)  # and its submodules imported by name:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "chatsessions"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules} for name, path in modules.items()}


def test_the_engine_has_no_import_cycles() -> None:
    edges = graph()
    engine = {name for name in edges if name.startswith("chatsessions.engine")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if target not in engine:
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(engine):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_openai_turn_routes_use_only_the_public_api() -> None:
    edges = graph()
    for route in ("responses", "chat_completions"):
        reached = edges[f"chatsessions.service.openai_compat.{route}"]
        inside = {m for m in reached if m.startswith(("chatsessions.engine",
                                                      "chatsessions.backends",
                                                      "chatsessions.store"))}
        assert inside == set(), route
