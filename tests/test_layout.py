"""opsdash/ and inference/ together import one another without a cycle.

Read from the source with ``ast`` (tests/importgraph.py): an import inside a function counts as
much as one at the top of a module, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

from pathlib import Path

from tests.importgraph import find_cycle, graph


def test_opsdash_and_inference_have_no_import_cycle() -> None:
    edges = graph("opsdash", "inference")
    assert len(edges) > 50 and edges["opsdash.telemetry.sampler"], "the graph was read"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """A cycle that exists only through a function-level import is found."""
    package = tmp_path / "loopy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loopy import b\n\nVALUE = b.VALUE\n")
    (package / "b.py").write_text(
        "VALUE = 1\n\n\ndef later():\n    from . import a\n\n    return a.VALUE\n"
    )
    (package / "c.py").write_text("import loopy.a\n")

    edges = graph(package)
    assert edges == {
        "loopy": set(),
        "loopy.a": {"loopy.b"},
        "loopy.b": {"loopy.a"},
        "loopy.c": {"loopy.a"},
    }
    assert find_cycle(edges) == ["loopy.a", "loopy.b", "loopy.a"]
    assert find_cycle({**edges, "loopy.b": set()}) is None  # without the lazy import: no cycle
