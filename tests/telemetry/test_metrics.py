"""/metrics: Prometheus text that prometheus_client's own parser reads, behind a token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel, SourceKind
from opsdash.runs.models import Run, Workflow
from opsdash.telemetry.metrics import TelemetryCollector, render
from opsdash.telemetry.sampler import Sampler
from tests.fixtures.personas import client_for
from tests.savings.factories import finished_run, local_model, price, workflow
from tests.telemetry.conftest import loaded
from tests.telemetry.fake_nvml import GIB, FakeNvml

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, metric: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    matches = [v for (n, ls), v in found.items() if n == metric and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, f"{metric} {labels}: {len(matches)} samples"
    return matches[0]


def one_gpu_frame(tmp_path, pid: int):  # type: ignore[no-untyped-def]
    sampler = Sampler(
        tick_seconds=1.0,
        host="node-a",
        models_dir=tmp_path,
        nvml=FakeNvml(gpus=1, processes={0: [(pid, 5 * GIB)]}),
        runners=lambda: [loaded(3, pid, queue=2, state="busy", name="Tiny", slug="tiny")],
        persist=False,
    )
    sampler.tick()
    return sampler.tick()


# What `promtool check metrics` (client_golang's promlint) reports, as far as it can bite here.
NON_BASE_UNITS = {
    "microseconds",
    "milliseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "days",
    "weeks",
    "bits",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "terabytes",
    "kibibytes",
    "mebibytes",
    "gibibytes",
    "percent",
    "fahrenheit",
    "kilowatts",
    "kilojoules",
    "millijoules",
}
ABBREVIATED_UNITS = {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
TYPE_WORDS = {"counter", "gauge", "histogram", "summary", "untyped"}


def lint(text: str) -> list[str]:
    """promtool's lint rules applied to an exposition, plus ours: every sample has a host."""
    problems: list[str] = []
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            helps[name] = doc.strip()
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind.strip()
    for name, kind in types.items():
        if not helps.get(name):
            problems.append(f"{name}: no help text")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: counter metrics should have a _total suffix")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: non-counter metrics should not have a _total suffix")
        if kind != "histogram" and name.endswith(("_bucket", "_count")):
            problems.append(f"{name}: non-histogram metrics should not end in _bucket/_count")
        if kind not in ("histogram", "summary") and name.endswith("_sum"):
            problems.append(f"{name}: non-histogram, non-summary metrics should not end in _sum")
        words = name.split("_")
        problems += [f"{name}: use base units, not {w}" for w in words if w in NON_BASE_UNITS]
        problems += [f"{name}: abbreviated unit {w!r}" for w in words if w in ABBREVIATED_UNITS]
        problems += [f"{name}: names its type {w!r}" for w in words if w in TYPE_WORDS]
        if name != name.lower() or ":" in name:
            problems.append(f"{name}: not snake_case, or uses a reserved ':'")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels.get("host"):
                problems.append(f"{sample.name}{sample.labels}: no host label")
    return problems


def test_the_lint_rules_catch_what_promtool_flagged() -> None:
    bad = (
        "# HELP opsdash_cpu_count Logical CPUs.\n# TYPE opsdash_cpu_count gauge\n"
        'opsdash_cpu_count{host="a"} 2.0\n'
        "# HELP opsdash_runs Runs.\n# TYPE opsdash_runs counter\nopsdash_runs 3.0\n"
        "# HELP opsdash_load_ms Load time.\n# TYPE opsdash_load_ms gauge\n"
        'opsdash_load_ms{host="a"} 2.0\n'
    )
    assert lint(bad) == [
        "opsdash_cpu_count: non-histogram metrics should not end in _bucket/_count",
        "opsdash_runs: counter metrics should have a _total suffix",
        "opsdash_load_ms: abbreviated unit 'ms'",
        "opsdash_runs_total{}: no host label",
    ]


def test_every_figure_is_exported_in_base_units_with_node_exporter_and_dcgm_names(tmp_path):
    import os

    frame = one_gpu_frame(tmp_path, os.getpid())
    totals = [
        {
            "model__slug": "tiny",
            "status": "ok",
            "runs": 3,
            "prompt_tokens": 30,
            "completion_tokens": 60,
        },
        {
            "model__slug": "tiny",
            "status": "error",
            "runs": 1,
            "prompt_tokens": 9,
            "completion_tokens": None,
        },
    ]
    text = render(TelemetryCollector(lambda: [frame], lambda: totals))
    found = samples(text.decode())

    host = {"host": "node-a"}
    assert value(found, "opsdash_cpu_usage_ratio", **host) == pytest.approx(
        frame["cpu"]["total"] / 100
    )
    assert value(found, "opsdash_cpu_core_usage_ratio", core="0", **host) <= 1
    assert value(found, "opsdash_memory_used_bytes", **host) == frame["memory"]["used_bytes"]
    assert value(found, "opsdash_load1", **host) == frame["cpu"]["load"][0]
    assert (
        value(found, "opsdash_network_receive_bytes_total", **host)
        == frame["net"]["rx_bytes_total"]
    )
    assert value(found, "opsdash_filesystem_avail_bytes", mountpoint="models", **host) > 0
    gpu = {"gpu": "0", **host}
    assert value(found, "opsdash_gpu_utilization_ratio", **gpu) == 0.87
    assert value(found, "opsdash_gpu_temperature_celsius", **gpu) == 64
    assert value(found, "opsdash_gpu_power_watts", **gpu) == 612.3
    assert value(found, "opsdash_gpu_power_limit_watts", **gpu) == 700
    assert value(found, "opsdash_gpu_energy_joules_total", **gpu) == 123_456_789
    assert value(found, "opsdash_gpu_memory_total_bytes", **gpu) == 80 * GIB
    assert value(found, "opsdash_gpu_sm_clock_hertz", **gpu) == 1980e6
    assert value(found, "opsdash_gpu_info", name="NVIDIA H100 80GB HBM3", **gpu) == 1
    assert value(found, "opsdash_gpu_state_info", state="ok", **host) == 1
    assert not [k for k in found if k[0] == "opsdash_gpu_fan_speed_ratio"], "no fan: no sample"
    model = {"model": "tiny", **host}
    assert value(found, "opsdash_runner_resident_memory_bytes", **model) > 10 * 1024 * 1024
    assert value(found, "opsdash_runner_gpu_memory_bytes", **model) == 5 * GIB
    assert value(found, "opsdash_runner_queue_length", **model) == 2
    assert value(found, "opsdash_models_loaded", **host) == 1
    assert value(found, "opsdash_runs_total", model="tiny", status="ok") == 3
    assert (
        value(found, "opsdash_run_tokens_total", model="tiny", status="ok", kind="completion") == 60
    )
    assert (
        value(found, "opsdash_run_tokens_total", model="tiny", status="error", kind="completion")
        == 0
    )


def test_a_scrape_with_gpus_runners_runs_and_savings_is_lint_clean_and_labelled_by_host(
    tmp_path, settings
):
    import os

    from opsdash.runs.ledger import run_totals
    from opsdash.savings.metrics import SavingsCollector

    settings.TELEMETRY_HOST = "node-a"
    price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=1))
    finished_run(workflow("drafts", "acme", "chat-1"), local_model("tiny"))
    frame = one_gpu_frame(tmp_path, os.getpid())
    collector = TelemetryCollector(lambda: [frame], run_totals)

    text = render(collector, SavingsCollector()).decode()

    assert lint(text) == []
    found = samples(text)
    assert value(found, "opsdash_cpu_cores", host="node-a") == frame["cpu"]["count"]
    assert value(found, "opsdash_gpu_power_watts", host="node-a", gpu="0") == 612.3
    assert value(found, "opsdash_runs_total", host="node-a", model="tiny", status="ok") == 1
    assert value(found, "opsdash_savings_runs", host="node-a", workflow="drafts") == 1
    assert not [name for name, _ in found if name == "opsdash_cpu_count"]


def test_the_metrics_endpoint_answers_a_lint_clean_scrape(admin):
    price("acme", "chat-1", "1", "2", start=timezone.now() - timedelta(days=1))
    finished_run(workflow("drafts", "acme", "chat-1"), local_model("tiny"))

    response = client_for(admin).get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert lint(text) == []
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"opsdash_cpu_cores", "opsdash_runs", "opsdash_savings_avoided_usd"} <= families


def test_the_endpoint_counts_runs_from_the_ledger_and_says_why_there_is_no_gpu(admin):
    model = LocalModel.objects.create(
        name="Tiny", slug="tiny", source_kind=SourceKind.PATH, source_ref="/x"
    )
    workflow = Workflow.objects.create(name="W", slug="w")
    for status, completion in (("ok", 7), ("ok", 5), ("cancelled", 2)):
        Run.objects.create(
            model=model,
            workflow=workflow,
            source="api",
            status=status,
            prompt_tokens=10,
            completion_tokens=completion,
        )

    response = client_for(admin).get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = samples(response.content.decode())
    assert value(found, "opsdash_runs_total", model="tiny", status="ok") == 2
    assert (
        value(found, "opsdash_run_tokens_total", model="tiny", status="ok", kind="completion") == 12
    )
    assert (
        value(found, "opsdash_run_tokens_total", model="tiny", status="cancelled", kind="prompt")
        == 10
    )
    assert value(found, "opsdash_cpu_usage_ratio", host="testhost") >= 0
    states = [dict(ls)["state"] for (n, ls) in found if n == "opsdash_gpu_state_info"]
    assert states and (states[0] == "ok") == (value(found, "opsdash_gpu_available") == 1)


def test_scrapers_need_the_token_or_an_allowed_address(settings, operator, admin, manager):
    settings.METRICS_TOKEN = "scrape-secret"
    anonymous = client_for(None)

    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client_for(operator).get("/metrics").status_code == 403
    assert client_for(manager).get("/metrics").status_code == 403
    personal = create_token(user=admin, name="prometheus").secret
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {personal}").status_code == 200

    settings.METRICS_ALLOW_FROM = ["10.0.0.0/8"]
    assert anonymous.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert anonymous.get("/metrics", REMOTE_ADDR="192.168.1.9").status_code == 401


@pytest.mark.django_db
def test_metrics_carry_the_savings_figures_per_workflow(settings, client, admin):
    from prometheus_client.parser import text_string_to_metric_families

    client.force_login(admin)
    response = client.get("/metrics")
    assert response.status_code == 200, response.content[:300]
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert "opsdash_savings_avoided_usd" in names and "opsdash_savings_runs" in names
