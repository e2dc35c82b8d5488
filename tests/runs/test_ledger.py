"""The Runs page (/runs/): every run for admins, filtered, totalled, paged and exported."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from opsdash.gateway.models import Endpoint, GatewayCall, WorkflowKey
from opsdash.runs.ledger import PAGE_SIZE
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.savings.models import RunCost
from tests.factories import finished_run, local_model, workflow
from tests.fixtures.personas import client_for
from tests.savings.factories import price

pytestmark = pytest.mark.django_db

NANO = 10**9


def _run(flow, model, **fields: Any) -> Run:  # type: ignore[no-untyped-def]
    """A finalized (and so costed) run, then given who made it, how and where."""
    usage = {
        k: fields.pop(k) for k in ("prompt_tokens", "completion_tokens", "status") if k in fields
    }
    started_at = fields.pop("started_at", None)
    run = finished_run(flow, model, started_at=started_at, **usage)
    if fields:
        Run.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


@pytest.fixture
def ledger(admin: User, operator: User) -> dict[str, Any]:
    """Runs of two workflows (one priced, one not), two models, two nodes, every source, two
    people and a gateway key, at known times."""
    now = timezone.now()
    price("openai", "gpt-4o-mini", "0.15", "0.60", start=now - timedelta(days=30))
    support = workflow("support-bot", "openai", "gpt-4o-mini", name="Support bot")
    notes = workflow("meeting-notes", name="Meeting notes")
    small, big = local_model("SmolLM2-135M"), local_model("Llama-3.2-1B")
    key = WorkflowKey.objects.create(
        workflow=support, name="=HYPERLINK(1)", prefix="odk_ab", digest="d" * 64
    )
    runs = {
        "gateway": _run(
            support,
            small,
            source=RunSource.GATEWAY,
            node="gpu-a",
            started_at=now - timedelta(hours=1),
        ),
        "api": _run(
            support,
            big,
            source=RunSource.API,
            user=operator,
            node="gpu-b",
            prompt_tokens=2000,
            started_at=now - timedelta(hours=2),
        ),
        "playground": _run(
            notes,
            small,
            source=RunSource.PLAYGROUND,
            user=admin,
            node="gpu-a",
            started_at=now - timedelta(hours=3),
        ),
        "suite": _run(
            support,
            small,
            source=RunSource.SUITE,
            user=operator,
            node="gpu-a",
            status=RunStatus.ERROR,
            completion_tokens=0,
            started_at=now - timedelta(days=2),
        ),
    }
    GatewayCall.objects.create(run=runs["gateway"], key=key, endpoint=Endpoint.CHAT)
    return {"runs": runs, "key": key, "small": small, "big": big, "now": now}


def _page(client: Client, query: str = "") -> Any:
    response = client.get(f"/runs/{query}")
    assert response.status_code == 200, response.content[:500]
    return response


def _ids(response: Any) -> set[int]:
    return {run.pk for run in response.context["page"].runs}


def _expected_totals(runs: list[Run]) -> dict[str, int]:
    """What the page must say, summed here row by row from the runs and their frozen costs."""
    costs = {c.run_id: c for c in RunCost.objects.filter(run__in=runs)}
    return {
        "runs": len(runs),
        "ok_runs": sum(r.status == RunStatus.OK for r in runs),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in runs),
        "completion_tokens": sum(r.completion_tokens or 0 for r in runs),
        "avoided_nusd": sum(c.avoided_nusd for c in costs.values()),
        "local_nusd": sum(c.local_nusd for c in costs.values()),
        "net_nusd": sum(c.net_nusd for c in costs.values()),
        "energy_mj": sum(c.energy_mj for c in costs.values()),
        "unpriced_runs": sum(not c.priced for c in costs.values()),
    }


def _totals(response: Any) -> dict[str, int]:
    totals = response.context["totals"]
    return {name: getattr(totals, name) for name in _expected_totals([])}


def test_an_admin_sees_every_run_of_every_source_and_person(as_admin: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    response = _page(as_admin)
    runs = ledger["runs"]
    assert _ids(response) == {r.pk for r in runs.values()}
    assert [r.source for r in response.context["page"].runs] == [
        "gateway",
        "api",
        "playground",
        "suite",
    ]
    html = response.content.decode()
    assert "key =HYPERLINK(1)" in html and "otto" in html and "ada" in html
    assert f'href="/runs/{runs["api"].pk}/"' in html  # each row links to its run's page


def test_the_totals_are_the_filters_and_priced_at_the_baseline(as_admin: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    runs = ledger["runs"]
    everything = _totals(_page(as_admin))
    assert everything == _expected_totals(list(runs.values()))
    assert everything["unpriced_runs"] == 1  # meeting-notes has no baseline

    support = _totals(_page(as_admin, "?workflow=support-bot"))
    assert support == _expected_totals([runs["gateway"], runs["api"], runs["suite"]])
    # 0.15 $/M in and 0.60 $/M out: gateway 1000/500, api 2000/500 tokens; the suite's run
    # failed, so it replaced no paid call and avoided nothing.
    assert support["avoided_nusd"] == (1000 + 2000) * 150 + (500 + 500) * 600
    assert support["prompt_tokens"] == 4000 and support["ok_runs"] == 2 and support["runs"] == 3
    html = _page(as_admin, "?workflow=support-bot").content.decode()
    assert "$0.00105" in html  # 1,050,000 nano-USD avoided, as a person reads it


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("?workflow=meeting-notes", {"playground"}),
        ("?key={key}", {"gateway"}),
        ("?user=otto", {"api", "suite"}),
        ("?model={big}", {"api"}),
        ("?node=gpu-a", {"gateway", "playground", "suite"}),
        ("?status=error", {"suite"}),
        ("?source=playground", {"playground"}),
        ("?from={day_ago}", {"gateway", "api", "playground"}),
        ("?to={day_ago}", {"suite"}),
        ("?from={three_days_ago}&to={day_ago}", {"suite"}),
        ("?user=otto&node=gpu-a&status=error", {"suite"}),
        ("?user=nobody-at-all", set()),
    ],
)
def test_each_filter_selects_its_runs_and_totals_only_them(
    as_admin: Client, ledger, query: str, names: set[str]
) -> None:  # type: ignore[no-untyped-def]
    now = timezone.localtime(ledger["now"])
    query = query.format(
        key=ledger["key"].pk,
        big=ledger["big"].pk,
        day_ago=(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        three_days_ago=(now - timedelta(days=3)).strftime("%Y-%m-%d"),
    )
    response = _page(as_admin, query)
    selected = [r for name, r in ledger["runs"].items() if name in names]
    assert _ids(response) == {r.pk for r in selected}
    assert _totals(response) == _expected_totals(selected)
    assert response.context["filters"].errors == []


def test_the_filter_form_keeps_its_values_in_a_shareable_url(as_admin: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    html = _page(as_admin, "?user=otto&status=error&from=2020-01-01&to=2030-12-31").content.decode()
    assert 'name="user" value="otto"' in html
    assert '<option value="error" selected>' in html
    assert 'value="2020-01-01T00:00"' in html and 'value="2030-12-31T23:59"' in html
    # The CSV link carries the same filter.
    assert (
        "/runs/export.csv?user=otto&amp;status=error&amp;from=2020-01-01&amp;to=2030-12-31" in html
    )


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("?status=bogus", "There is no status “bogus”; use one of running, ok, error"),
        ("?source=cron", "There is no source “cron”"),
        ("?from=yesterday", "The “from” time must read like 2025-03-01"),
        ("?to=2025-02-30", "The “to” time must read like"),
        ("?model=abc", "The model filter takes a number"),
        ("?from=2025-03-02&to=2025-03-01", "The “from” time is after the “to” time"),
    ],
)
def test_a_bad_filter_value_is_named_and_left_out(
    as_admin: Client, ledger, query: str, sentence: str
) -> None:  # type: ignore[no-untyped-def]
    response = _page(as_admin, query + "&user=otto")
    assert sentence in response.content.decode()
    assert _ids(response) == {ledger["runs"]["api"].pk, ledger["runs"]["suite"].pk}  # user kept
    csv_response = as_admin.get(f"/runs/export.csv{query}")
    assert csv_response.status_code == 400 and sentence in csv_response.content.decode()


def test_pages_of_fifty_walk_every_run_once_newest_first(as_admin: Client, admin: User) -> None:
    flow, model = workflow("batch"), local_model()
    start = timezone.now() - timedelta(days=1)
    made = [
        Run.objects.create(model=model, workflow=flow, source=RunSource.API, user=admin)
        for _ in range(120)
    ]
    # Two runs share each second, so the order must break ties by id.
    for i, run in enumerate(made):
        Run.objects.filter(pk=run.pk).update(started_at=start + timedelta(seconds=i // 2))
    # Newest first: the later second first, and of two in one second the later id first.
    newest_first = [run.pk for run in reversed(made)]

    seen: list[int] = []
    pages = []
    query = ""
    while True:
        page = _page(as_admin, query).context["page"]
        pages.append(page)
        seen += [r.pk for r in page.runs]
        if page.older is None:
            break
        query = f"?after={page.older}"
    assert [len(p.runs) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 20]
    assert seen == newest_first
    assert pages[0].newer is None and pages[1].newer is not None

    # Back from the last page: the middle page again, then the first.
    back = _page(as_admin, f"?before={pages[2].newer}").context["page"]
    assert [r.pk for r in back.runs] == [r.pk for r in pages[1].runs]
    first = _page(as_admin, f"?before={back.newer}").context["page"]
    assert [r.pk for r in first.runs] == [r.pk for r in pages[0].runs] and first.newer is None
    html = _page(as_admin, f"?status=running&after={pages[0].older}").content.decode()
    assert f"status=running&amp;after={pages[1].older}" in html  # the pager keeps the filter
    assert "50 of 120 runs" in html


def test_the_page_costs_the_same_queries_at_five_runs_as_at_sixty(as_admin: Client) -> None:
    flow, model = workflow("support-bot"), local_model()

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            _page(as_admin, "?source=api")
        return len(captured)

    for _ in range(5):
        finished_run(flow, model)
    few = queries()
    for _ in range(55):
        finished_run(flow, model)
    assert queries() == few
    count_queries = [q["sql"] for q in _captured(as_admin) if "COUNT(" in q["sql"].upper()]
    assert len(count_queries) == 1, count_queries  # the totals' query is the pager's count


def _captured(client: Client) -> list[dict[str, str]]:
    with CaptureQueriesContext(connection) as captured:
        _page(client)
    return list(captured.captured_queries)


def _csv(client: Client, query: str = "") -> list[list[str]]:
    response = client.get(f"/runs/export.csv{query}")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.reader(io.StringIO(body)))


@pytest.mark.parametrize("query", ["", "?workflow=support-bot", "?node=gpu-a&status=ok"])
def test_the_csv_has_the_filters_runs_and_totals_what_the_page_does(
    as_admin: Client, ledger, query: str
) -> None:  # type: ignore[no-untyped-def]
    totals = _totals(_page(as_admin, query))
    rows = _csv(as_admin, query)
    header, lines, total = rows[0], rows[1:-1], rows[-1]
    col = {name: i for i, name in enumerate(header)}
    assert total[0] == "TOTAL" and len(lines) == totals["runs"]
    assert sum(line[col["status"]] == "ok" for line in lines) == totals["ok_runs"]
    assert total[col["status"]] == f"{totals['ok_runs']} ok of {totals['runs']}"

    def money(cell: str) -> int:
        return 0 if cell in ("", "unpriced") else round(float(cell) * NANO)

    for name, figure in [
        ("prompt_tokens", "prompt_tokens"),
        ("completion_tokens", "completion_tokens"),
    ]:
        assert (
            sum(int(line[col[name]] or 0) for line in lines)
            == int(total[col[name]])
            == totals[figure]
        )
    for name, figure in [
        ("avoided_usd", "avoided_nusd"),
        ("local_cost_usd", "local_nusd"),
        ("net_usd", "net_nusd"),
    ]:
        assert (
            sum(money(line[col[name]]) for line in lines)
            == money(total[col[name]])
            == totals[figure]
        )
    assert round(float(total[col["energy_joules"]]) * 1000) == totals["energy_mj"]
    assert all(line[col["url"]].endswith(f"/runs/{line[col['run']]}/") for line in lines)


def test_the_csv_keeps_names_from_running_as_formulas(as_admin: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    rows = _csv(as_admin, f"?key={ledger['key'].pk}")
    col = rows[0].index("key")
    assert rows[1][col] == "'=HYPERLINK(1)"
    assert rows[1][rows[0].index("pricing")] == "priced"
    unpriced = _csv(as_admin, "?workflow=meeting-notes")[1]
    assert unpriced[rows[0].index("avoided_usd")] == "unpriced"


def test_an_admin_opens_anyones_run_with_who_made_it(as_admin: Client, ledger) -> None:  # type: ignore[no-untyped-def]
    gateway = ledger["runs"]["gateway"]
    response = as_admin.get(f"/runs/{gateway.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "API key" in html and "=HYPERLINK(1)" in html and f"?key={ledger['key'].pk}" in html
    assert "?rerun=" not in html  # not theirs: the playground would not find it
    own = as_admin.get(f"/runs/{ledger['runs']['playground'].pk}/").content.decode()
    assert "?rerun=" in own
    assert as_admin.get("/runs/999999/").status_code == 404


@pytest.mark.parametrize("persona", ["operator", "manager", "outsider"])
@pytest.mark.parametrize("path", ["/runs/", "/runs/export.csv", "/runs/{run}/"])
def test_only_admins_see_the_ledger(request, ledger, persona: str, path: str) -> None:  # type: ignore[no-untyped-def]
    url = path.format(run=ledger["runs"]["api"].pk)
    response = client_for(request.getfixturevalue(persona)).get(url)
    assert response.status_code == 403
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
