"""inference/ stays framework-free and acyclic: read from its source with ast, imports inside
functions included, so a lazy import cannot hide a dependency on Django or a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import inference

ROOT = Path(inference.__file__).resolve().parent
PACKAGE = "inference"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports, anywhere in it, as (absolute name, line)."""
    is_package = path.name == "__init__.py"
    modules = _modules()
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import: climb from this module's package.
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            if not all(sub in modules for sub in submodules):
                found.append((module, node.lineno))
            # ``from inference.formats import ggml`` imports the module inference.formats.ggml
            # (its package is imported first, as for ``import inference.formats.ggml``: that
            # edge from a module to its own package is Python's, not a dependency).
            found += [(sub, node.lineno) for sub in submodules if sub in modules]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {target for target, _ in _imports(name, path) if target in modules}
        graph[name] = targets - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_imports_inside_functions() -> None:
    """The checks below are only as good as the walk: it must see a lazy import."""
    imports = {target for target, _ in _imports("inference.backends.llama_cpp", _llama_cpp())}
    assert "llama_cpp" in imports  # imported inside LlamaCppBackend.load only


def _llama_cpp() -> Path:
    return ROOT / "backends" / "llama_cpp.py"


def test_inference_imports_nothing_from_opsdash_or_django() -> None:
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {target}"
        for name, path in _modules().items()
        for target, line in _imports(name, path)
        if target.split(".")[0] in {"opsdash", "django"}
    ]
    assert offenders == []


def test_the_modules_of_inference_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert "inference.runtime.pool" in graph["inference.runtime.supervisor"]  # the walk works
    assert _find_cycle(graph) is None, " → ".join(_find_cycle(graph) or [])


def test_a_cycle_would_be_found() -> None:
    """The cycle finder itself, on a graph with a cycle through a lazy import."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
