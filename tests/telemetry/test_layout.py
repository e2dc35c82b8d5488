"""The telemetry package's shape: probes that need no framework, one NVML module, no circle.

Each test reads the source with ``ast`` (tests/importgraph.py), so an import inside a function
counts as much as one at the top of a module: it is still a dependency.
"""

from __future__ import annotations

from pathlib import Path

from tests.importgraph import find_cycle, graph, imports, modules

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = "opsdash.telemetry"
PROBES = "opsdash.telemetry.probes"


def test_the_probes_import_no_framework_and_nothing_else_of_opsdash():
    found = []
    probes = modules(PROBES)
    for module, path in probes.items():
        for name, line in imports(module, path):
            outside = name.startswith("opsdash.") and not name.startswith(PROBES)
            if name.split(".")[0] in {"django", "channels", "ninja", "asgiref"} or outside:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert len(probes) >= 5, "host, nvml, rapl, energy, figures"
    assert found == []


def test_exactly_one_module_imports_nvml():
    importers = set()
    for module, path in modules("opsdash", "inference").items():
        for name, _ in imports(module, path):
            if name.split(".")[0] in {"pynvml", "nvidia_ml_py", "py3nvml"}:
                importers.add(str(path.relative_to(ROOT)))
    assert importers == {"opsdash/telemetry/probes/nvml.py"}


def test_the_telemetry_modules_import_one_another_without_a_cycle():
    edges = graph(TELEMETRY)
    # A package's __init__ is imported with any of its modules; none of ours imports anything.
    assert not edges["opsdash.telemetry"] and not edges.get("opsdash.telemetry.probes")

    assert len(edges) > 15 and edges["opsdash.telemetry.sampler"], "the graph was read"
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])
