"""The telemetry package's shape: probes that need no framework, one NVML module, no circle.

Each test reads the source with ``ast``, so an import inside a function counts as much as one
at the top of a module: it is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = ROOT / "opsdash" / "telemetry"
PROBES = TELEMETRY / "probes"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it: (line, dotted name)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = (package or module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # ``from package import module``
                yield node.lineno, f"{base}.{alias.name}"


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def test_the_probes_import_no_framework_and_nothing_else_of_opsdash():
    found = []
    for path in sources(PROBES):
        for line, name in imports(path):
            outside = name.startswith("opsdash.") and not name.startswith(
                "opsdash.telemetry.probes"
            )
            if name.split(".")[0] in {"django", "channels", "ninja", "asgiref"} or outside:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert len(sources(PROBES)) >= 5, "host, nvml, rapl, energy, figures"
    assert found == []


def test_exactly_one_module_imports_nvml():
    importers = set()
    for folder in (ROOT / "opsdash", ROOT / "inference"):
        for path in sources(folder):
            for _, name in imports(path):
                if name.split(".")[0] in {"pynvml", "nvidia_ml_py", "py3nvml"}:
                    importers.add(str(path.relative_to(ROOT)))
    assert importers == {"opsdash/telemetry/probes/nvml.py"}


def test_the_telemetry_modules_import_one_another_without_a_cycle():
    modules = {module_name(p): p for p in sources(TELEMETRY)}
    graph = {
        name: {m for _, m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ is imported with any of its modules; none of ours imports anything.
    assert not graph["opsdash.telemetry"] and not graph.get("opsdash.telemetry.probes")

    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(graph) > 15 and graph["opsdash.telemetry.sampler"], "the graph was read"
    assert cycles == []
