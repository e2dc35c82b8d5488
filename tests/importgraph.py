"""The import graph of the project's packages, read from their source with ``ast``.

Nothing is imported to build it: an import inside a function or a method counts as much as one
at the top of a module, so a lazy import cannot hide a dependency or a cycle. The layout tests
(tests/test_layout.py, tests/inference/test_layout.py, tests/telemetry/test_layout.py) share it.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _folder(root: str | Path) -> Path:
    """A root is a dotted package name under the repository ("opsdash.telemetry") or a folder."""
    if isinstance(root, Path):
        return root.resolve()
    return REPO.joinpath(*root.split("."))


def module_name(path: Path) -> str:
    """``path``'s dotted name: its folders up to the last one that is still a package."""
    path = path.resolve()
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def modules(*roots: str | Path) -> dict[str, Path]:
    """Every module under ``roots``, by dotted name; migrations folders are left out."""
    found: dict[str, Path] = {}
    for root in roots:
        folder = _folder(root)
        for path in sorted(folder.rglob("*.py")):
            if "migrations" not in path.relative_to(folder).parts:
                found[module_name(path)] = path.resolve()
    return found


@cache
def _is_module(dotted: str, base: Path) -> bool:
    """Whether ``dotted`` names a module (not some other name in a package's namespace)."""
    parts = dotted.split(".")
    top, rest = parts[0], parts[1:]
    locations = [base / top] if (base / top / "__init__.py").is_file() else []
    if not locations:
        try:  # a top-level package elsewhere: finding it does not import it
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return not rest and spec is not None
        locations = [Path(location) for location in spec.submodule_search_locations]
    if not rest:
        return True
    for location in locations:
        folder = location.joinpath(*rest[:-1])
        if (folder / f"{rest[-1]}.py").is_file() or (folder / rest[-1] / "__init__.py").is_file():
            return True
    return False


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` (the module ``name``) imports, anywhere in it: (dotted name, line).

    Relative imports are resolved against ``name``; ``from pkg import sub`` gives ``pkg.sub``
    where that is a module, and ``pkg`` where any name imported is not a module of it. (The
    package is imported first in either case, as for ``import pkg.sub``: that edge from a module
    to its own package is Python's, not a dependency.)
    """
    is_package = path.name == "__init__.py"
    parts = name.split(".")
    base = path.resolve().parents[len(parts) - (0 if is_package else 1)]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: climb from this module's package
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                module = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
            are_modules = [sub for sub in submodules if _is_module(sub, base)]
            if len(are_modules) < len(node.names):
                found.append((module, node.lineno))
            found += [(sub, node.lineno) for sub in are_modules]
    return found


def graph(*roots: str | Path) -> dict[str, set[str]]:
    """Module -> the modules it imports, keeping only edges to modules inside ``roots``."""
    found = modules(*roots)
    return {
        name: {target for target, _ in imports(name, path) if target in found} - {name}
        for name, path in found.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path that ends where it starts (``[a, b, a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
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
