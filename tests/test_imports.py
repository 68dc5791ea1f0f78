"""No module of the pack imports one that imports it back, directly or through its package (issue 34): the imports of
every module, function-level ones included, read from its source; cycles looked for between modules and between
packages at every depth (a package stands for all its modules)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = {"tests", "benchmarks", "scripts", "example_workflows", "web", "docs"}


def pack_modules() -> dict[str, Path]:
    """Dotted names of the pack's modules (a package by its __init__), relative to the pack."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] in OUTSIDE or parts[0].startswith("."):
            continue
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pack modules `name` imports anywhere in its source (relative imports: the pack imports itself only so)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                target = ".".join(base + [alias.name])
                out.add(target if target in modules else ".".join(base))
    return {t for t in out if t in modules and t != name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def graphs() -> list[dict[str, set[str]]]:
    """The module graph, and for each depth d the graph of the modules' d-deep packages (edges inside one dropped)."""
    modules = pack_modules()
    edges = {name: imports(name, path, modules) for name, path in modules.items()}
    out = [edges]
    depth = max(name.count(".") for name in modules) + 1
    for d in range(1, depth + 1):
        prefix = lambda name: ".".join(name.split(".")[:d]) or "<root>"  # noqa: E731
        packed: dict[str, set[str]] = {}
        for a, targets in edges.items():
            for b in targets:
                if prefix(a) != prefix(b) and not prefix(b).startswith(prefix(a) + ".") \
                        and not prefix(a).startswith(prefix(b) + "."):
                    packed.setdefault(prefix(a), set()).add(prefix(b))
        out.append(packed)
    return out


def test_the_walk_sees_function_level_imports():
    modules = pack_modules()
    assert "pipeline.fused" in imports("pipeline.strategies", modules["pipeline.strategies"], modules)
    assert "nodes.refiner" in imports("plan_query", modules["plan_query"], modules)  # inside limits()
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"] and cycle({"a": {"b"}}) is None


def test_no_module_imports_one_that_imports_it_back_directly_or_through_its_package():
    for graph in graphs():
        assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph))}"
