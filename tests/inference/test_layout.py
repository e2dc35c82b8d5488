"""inference/ stays framework-free and acyclic: read from its source with ast, imports inside
functions included, so a lazy import cannot hide a dependency on Django or a cycle."""

from __future__ import annotations

from pathlib import Path

import inference
from tests.importgraph import find_cycle, graph, imports, modules

ROOT = Path(inference.__file__).resolve().parent
PACKAGE = "inference"


def test_the_walk_sees_imports_inside_functions() -> None:
    """The checks below are only as good as the walk: it must see a lazy import."""
    found = {target for target, _ in imports("inference.backends.llama_cpp", _llama_cpp())}
    assert "llama_cpp" in found  # imported inside LlamaCppBackend.load only


def _llama_cpp() -> Path:
    return ROOT / "backends" / "llama_cpp.py"


def test_inference_imports_nothing_from_opsdash_or_django() -> None:
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {target}"
        for name, path in modules(PACKAGE).items()
        for target, line in imports(name, path)
        if target.split(".")[0] in {"opsdash", "django"}
    ]
    assert offenders == []


def test_the_modules_of_inference_import_each_other_without_a_cycle() -> None:
    edges = graph(PACKAGE)
    assert "inference.runtime.pool" in edges["inference.runtime.supervisor"]  # the walk works
    assert find_cycle(edges) is None, " → ".join(find_cycle(edges) or [])


def test_a_cycle_would_be_found() -> None:
    """The cycle finder itself, on a graph with a cycle through a lazy import."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
