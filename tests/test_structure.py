"""The module structure: no import loop in server/, and protocol/ stays pure.

Every import counts, wherever it is: top level, inside a function, or under
``if TYPE_CHECKING:`` (a loop hidden from the interpreter is still a loop in
the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``path`` imports (any import statement)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                out.add(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_server_has_no_import_loop() -> None:
    known = modules("server")
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}
    assert cycles(graph) == []


def test_the_connection_layer_does_not_reach_back_into_the_hub() -> None:
    known = modules("server")
    for name in ("server.connection", "server.router", "server.session_watch", "server.peer"):
        assert "server.hub" not in imports_of(known[name], known)
    assert "server.config" not in imports_of(known["server.security.keys"], known)


def test_capabilities_are_named_only_by_the_composition_root() -> None:
    known = modules("server")
    capability_modules = {"server.chat", "server.presence", "server.calls", "server.eeg"}
    for name, path in known.items():
        if name == "server.app" or any(name.startswith(c) for c in capability_modules):
            continue
        reached = {m for m in imports_of(path, known) if m.startswith(tuple(capability_modules))}
        assert not reached, f"{name} imports {sorted(reached)}"


def test_protocol_imports_nothing_of_ours_but_itself() -> None:
    ours = {**modules("server"), **modules("clients"), **modules("media")}
    for name, path in modules("protocol").items():
        assert imports_of(path, ours) == set(), name
