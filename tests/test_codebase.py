"""The shape of the code itself (issue 23): no import cycle, no module too long to change in an
afternoon, and the CLI reaching the service only through the commands that serve it."""
from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"engine": "pressor.engine", "cli": "pressor.cli", "service": "pressor.service"}
#: Longest module, in lines: past it a module has usually grown a second reason to change.
MAX_LINES = 600
#: Modules over the limit for now, each with why it is not split yet. Remove an entry when it is.
TOO_LONG: dict[str, str] = {}
#: Import cycles not yet broken, each with why.
KNOWN_CYCLES: dict[frozenset[str], str] = {}
#: The only CLI modules that may import the service: the commands that serve it.
SERVING_COMMANDS = {"cli/serve.py", "cli/ui.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports, at the top or inside functions (typing-only imports left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    found = {c for c in cycles(import_graph())}
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}; move what both sides need into a module of its own"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_no_module_over_the_limit():
    long = {}
    for folder in (*PACKAGES, "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES and rel not in TOO_LONG:
                long[rel] = lines
    assert not long, f"modules over {MAX_LINES} lines: {long}; split each along its reasons to change"
    fixed = [rel for rel in TOO_LONG if len((ROOT / rel).read_text(encoding="utf-8").splitlines()) <= MAX_LINES]
    assert not fixed, f"now within the limit: remove from TOO_LONG: {fixed}"


def test_the_cli_reaches_the_service_only_through_the_commands_that_serve_it():
    graph = import_graph()
    reaching = sorted(
        path.relative_to(ROOT).as_posix() for name, path in _modules().items()
        if name.startswith("pressor.cli") and any(m.startswith("pressor.service") for m in graph[name])
    )
    assert set(reaching) <= SERVING_COMMANDS, f"{reaching} import the service; the engine should hold what they need"
