"""The home overview (``/``): served after sign-in, one card per concern, each for the roles
that may open its page, each linking there; a fixed number of queries; an empty install is
told what to do first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse
from django.utils import timezone

from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.fleet import services as fleet_services
from opsdash.fleet.models import Node
from opsdash.notify.models import Delivery, DeliveryStatus, Notification
from opsdash.runs.models import Run, RunStatus, Workflow
from opsdash.savings.days import report_today
from opsdash.savings.filters import parse_filters
from opsdash.savings.money import format_usd, nano_to_str
from opsdash.savings.reports import overview
from opsdash.telemetry.models import AlertEpisode
from opsdash.telemetry.sampler import stop_sampler
from tests.factories import finished_run, local_model, workflow
from tests.fixtures.personas import PASSWORD, client_for
from tests.savings.factories import price

pytestmark = pytest.mark.django_db

CARDS = ("nodes", "loaded", "alerts", "activity", "failed-runs", "savings", "failed-installs")


@pytest.fixture(autouse=True)
def _no_sampler(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The embedded node's listing would start this process's sampler, whose thread then
    writes minutes into the test database behind the test; without it the host is still the
    one node, with the figures the OS gives (as before a sampler's first frame)."""
    settings.TELEMETRY_EMBEDDED = False
    yield
    stop_sampler()


def _text(response) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r"\s+", " ", response.content.decode())


def _cards(text: str) -> set[str]:
    return set(re.findall(r'data-card="([a-z-]+)"', text)) - {"first-steps"}


def _card(text: str, name: str) -> str:
    """One card's HTML (up to the next card or the end of the grid)."""
    start = text.index(f'data-card="{name}"')
    end = text.find("</section>", start)
    return text[start:end]


def _money(nano: int, testid: str) -> str:
    """How a saving reads on the page: the savings pages' own format, the exact sum on hover."""
    return f'data-testid="{testid}"><strong title="{nano_to_str(nano)} USD">{format_usd(nano)}<'


def _episode(*, message: str, ended: bool) -> AlertEpisode:
    now = timezone.now()
    return AlertEpisode.objects.create(
        kind="ram",
        host="testhost",
        subject="Host",
        threshold=90,
        peak=97,
        message=message,
        started_at=now - timedelta(minutes=12),
        ended_at=now - timedelta(minutes=1) if ended else None,
    )


def _run(
    flow: Workflow,
    model: LocalModel,
    *,
    minutes: float,
    user: User | None = None,
    error: str = "",
    prompt_tokens: int = 1000,
    completion_tokens: int = 500,
) -> Run:
    """A finalized run started ``minutes`` ago (failed when ``error`` is given)."""
    run = finished_run(
        flow,
        model,
        started_at=timezone.now() - timedelta(minutes=minutes),
        status=RunStatus.ERROR if error else RunStatus.OK,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    Run.objects.filter(pk=run.pk).update(user=user, error=error)
    run.refresh_from_db()
    return run


def _failed_install(name: str, error: str = "Not a GGUF or GGML file.") -> LocalModel:
    return LocalModel.objects.create(
        name=name,
        slug=name,
        status=ModelStatus.FAILED,
        error=error,
        source_kind=SourceKind.UPLOAD,
        source_ref=f"{name}.gguf",
    )


def _failed_delivery() -> Delivery:
    note = Notification.objects.create(
        kind="alert", key=f"k{Notification.objects.count()}", subject="RAM at 97%"
    )
    return Delivery.objects.create(
        notification=note,
        channel_name="ops mail",
        status=DeliveryStatus.FAILED,
        next_attempt_at=timezone.now(),
        last_error="SMTP is not configured.",
    )


@pytest.fixture
def busy(operator: User, admin: User) -> dict[str, object]:
    """An install in use: runs of the operator, of the admin and of the gateway in the last
    hour, failures in the last day, an older failure, a failed install and an open alert."""
    now = timezone.now()
    price("acme", "chat-1", "1.00", "2.00", start=now - timedelta(days=60))
    priced = workflow("drafts", "acme", "chat-1")
    model = local_model("tiny-llama")
    runs = {
        "mine": _run(
            priced, model, minutes=5, user=operator, prompt_tokens=100, completion_tokens=20
        ),
        "theirs": _run(
            priced, model, minutes=9, user=admin, prompt_tokens=1000, completion_tokens=200
        ),
        "gateway": _run(priced, model, minutes=30, prompt_tokens=3000, completion_tokens=600),
        "my_failure": _run(
            priced, model, minutes=180, user=operator, error="The model's runner died."
        ),
        "their_failure": _run(priced, model, minutes=300, user=admin, error="Context is full."),
        "old_failure": _run(priced, model, minutes=30 * 60, error="Old news."),
    }
    _failed_install("broken-upload")
    _episode(message="Host RAM at 97% (over 90%)", ended=False)
    _episode(message="GPU 0 at 99 °C", ended=True)
    _failed_delivery()
    return {"runs": runs, "model": model}


def test_signing_in_lands_on_the_overview_served_at_the_root(operator: User) -> None:
    client = Client()
    signed_in = client.post(reverse("accounts:login"), {"username": "otto", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200, "the root is a page, not a redirect"
    assert "<h1>Overview</h1>" in _text(home)


def test_anonymous_visitors_are_sent_to_sign_in() -> None:
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_user_without_a_role_is_told_to_ask_an_admin(outsider: User, busy) -> None:  # type: ignore[no-untyped-def]
    text = _text(client_for(outsider).get("/"))
    assert "Ask an admin to make you an operator, admin or manager." in text
    assert _cards(text) == set()
    assert "Host RAM at 97%" not in text and "broken-upload" not in text


def test_operators_see_the_fleet_alerts_and_their_runs_beside_everyones(
    operator: User, busy
) -> None:  # type: ignore[no-untyped-def]
    text = _text(client_for(operator).get("/"))
    assert _cards(text) == {"nodes", "loaded", "alerts", "activity", "failed-runs"}

    nodes = _card(text, "nodes")
    assert 'href="/nodes/"' in nodes and ">healthy<" in nodes  # the embedded host is the node

    alerts = _card(text, "alerts")
    assert 'href="/telemetry/"' in alerts
    assert "Host RAM at 97% (over 90%)" in alerts and "GPU 0 at 99" not in alerts
    assert "failed-deliveries" not in alerts, "where alerts are delivered is the admins' page"

    activity = _card(text, "activity")
    # Theirs: one run of 120 tokens; everyone: three runs of 4,920 tokens in the last hour.
    assert re.search(
        r'data-testid="own-runs"><a href="/playground/history/">1 run</a> · 120 tokens', activity
    )
    assert 'data-testid="all-runs">3 runs · 4.9k tokens' in activity

    failed = _card(text, "failed-runs")
    runs = busy["runs"]
    assert '<strong class="home-bad">1</strong> of yours' in failed and "2 in all" in failed
    assert f'href="/playground/runs/{runs["my_failure"].pk}/"' in failed
    assert "The model&#x27;s runner died." in failed
    assert "Context is full." not in failed, "another person's run is not listed to an operator"
    assert "Old news." not in failed

    assert "Net saving" not in text and "broken-upload" not in text


def test_admins_see_every_card_with_everyones_figures(admin: User, busy) -> None:  # type: ignore[no-untyped-def]
    text = _text(client_for(admin).get("/"))
    assert _cards(text) == set(CARDS)

    activity = _card(text, "activity")
    assert (
        "own-runs" not in activity and 'data-testid="all-runs"><strong>3</strong> runs' in activity
    )

    failed = _card(text, "failed-runs")
    assert '<strong class="home-bad">2</strong> failed' in failed
    assert "The model&#x27;s runner died." in failed and "Context is full." in failed
    assert "Old news." not in failed

    installs = _card(text, "failed-installs")
    model = LocalModel.objects.get(slug="broken-upload")
    assert f'href="/models/{model.pk}/"' in installs and "Not a GGUF or GGML file." in installs
    assert 'href="/models/"' in installs

    alerts = _card(text, "alerts")
    assert '<a class="home-bad" href="/notifications/">1 notification not delivered</a>' in alerts

    savings = _card(text, "savings")
    assert 'href="/savings/?range=month"' in savings
    assert 'data-testid="saving-today"><strong' in savings and "$" in savings


def test_an_admins_run_cards_open_the_runs_page_on_the_same_runs(admin: User, busy) -> None:  # type: ignore[no-untyped-def]
    client = client_for(admin)
    text = _text(client.get("/"))
    for card, figure in (("activity", "3"), ("failed-runs", "2")):
        html = _card(text, card)
        link = re.search(r'<h2><a href="(/runs/\?[^"]+)"', html)
        assert link, f"the {card} card links to the Runs page"
        page = _text(client.get(link.group(1).replace("&amp;", "&")))
        assert f'data-testid="total-runs">{figure}<' in page, f"{card}: {link.group(1)}"
    failure = busy["runs"]["their_failure"]
    assert f'href="/runs/{failure.pk}/"' in _card(text, "failed-runs")


def test_managers_see_the_savings_and_nothing_of_the_fleet(manager: User, busy) -> None:  # type: ignore[no-untyped-def]
    text = _text(client_for(manager).get("/"))
    assert _cards(text) == {"savings"}
    assert "Host RAM at 97%" not in text and "/nodes/" not in text and "broken-upload" not in text


def test_the_saving_is_the_savings_pages_own_figure_and_unpriced_is_not_zero(
    manager: User,
    busy,  # type: ignore[no-untyped-def]
) -> None:
    day = report_today().isoformat()
    today = overview(parse_filters({"from": day, "to": day})).totals
    month = overview(parse_filters({"range": "month"})).totals
    savings = _card(_text(client_for(manager).get("/")), "savings")
    # The month can net less than today: yesterday's failed runs cost energy and avoid nothing.
    assert today.net_nusd > 0 and month.runs >= today.runs
    assert _money(today.net_nusd, "saving-today") in savings
    assert _money(month.net_nusd, "saving-month") in savings
    assert "unpriced" not in savings

    _run(workflow("notes"), busy["model"], minutes=1)  # no baseline: its saving is unknown
    savings = _card(_text(client_for(manager).get("/")), "savings")
    assert "1 of 5 runs unpriced" in savings or "1 of 6 runs unpriced" in savings


def test_a_day_of_only_unpriced_runs_says_unpriced_not_zero(manager: User) -> None:
    finished_run(workflow("notes"), local_model("m"))
    savings = _card(_text(client_for(manager).get("/")), "savings")
    today = savings[savings.index("saving-today") : savings.index("saving-month")]
    assert "unpriced" in today and "$0" not in today


def test_an_empty_install_says_what_to_do_first(admin: User, operator: User, manager: User) -> None:
    admin_text = _text(client_for(admin).get("/"))
    first = _card(admin_text, "first-steps")
    assert '<a href="/models/install/">Install a model' in first
    assert '<a href="/gateway/">Set a baseline on a workflow' in first

    operator_first = _card(_text(client_for(operator).get("/")), "first-steps")
    assert "ask an admin to install one" in operator_first and "<a " not in operator_first

    manager_first = _card(_text(client_for(manager).get("/")), "first-steps")
    assert "ask an admin to set one" in manager_first

    local_model("ready-one")
    flow = workflow("drafts", "acme", "chat-1")
    assert flow.baseline_model
    assert 'data-card="first-steps"' not in _text(client_for(admin).get("/"))


def test_a_fleet_lists_its_nodes_troubled_first_with_their_loaded_models(
    settings,
    operator: User,  # type: ignore[no-untyped-def]
) -> None:
    settings.FLEET = True
    settings.NODE_UNHEALTHY_SECONDS = 15
    settings.NODE_OFFLINE_SECONDS = 60
    model = local_model("tiny-llama")
    for name in ("gpu-a", "gpu-b", "gpu-c"):
        _, secret = fleet_services.create_node_token(name="t", user=None)
        with override_settings(FLEET=False):  # no health-sweep thread beside the test database
            node, _ = fleet_services.register_node(
                name=name, token_secret=secret, facts={"cpu_count": 8}, version="1"
            )
        if name != "gpu-c":
            fleet_services.approve_node(node=node, user=None)
    Node.objects.filter(name="gpu-a").update(
        last_seen=timezone.now() - timedelta(seconds=20),
    )
    Node.objects.filter(name="gpu-b").update(
        last_seen=timezone.now(),
        loaded=[
            {
                "model": model.pk,
                "name": "tiny-llama",
                "slug": "tiny-llama",
                "pid": 9,
                "rss_bytes": 2**20,
                "queue_length": 2,
                "state": "ready",
            }
        ],
    )
    text = _text(client_for(operator).get("/"))
    nodes = _card(text, "nodes")
    states = re.findall(
        r'href="/nodes/([a-z-]+)/">[a-z-]+</a> <span class="home-state home-state-(\w+)"', nodes
    )
    assert states == [("gpu-a", "unhealthy"), ("gpu-c", "pending"), ("gpu-b", "healthy")]
    assert "2 need a look" in nodes
    loaded = _card(text, "loaded")
    assert f'href="/models/{model.pk}/">tiny-llama</a>' in loaded and "on gpu-b" in loaded
    assert "2 queued" in loaded


def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/").status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize("persona", ["admin", "operator"])
def test_the_overview_takes_a_few_queries_however_much_there_is(
    persona: str, busy, request
) -> None:  # type: ignore[no-untyped-def]
    client = client_for(request.getfixturevalue(persona))
    client.get("/")  # warm: the runner labels, the content types
    few = _queries(client)
    # Session, user, roles; nodes; alerts (+ deliveries); runs (+ the operator's own); savings;
    # failed installs; the first steps' two checks.
    assert few <= 16, f"the home page took {few} queries"

    flow, model = workflow("more"), busy["model"]
    for i in range(12):
        _run(flow, model, minutes=i, error=f"failure {i}", user=request.getfixturevalue(persona))
        _failed_install(f"broken-{i}")
        _episode(message=f"alert {i}", ended=False)
        _failed_delivery()
    many = _queries(client)
    assert many == few, "a card reads per row"
    text = _text(client.get("/"))
    failed = _card(text, "failed-runs")
    assert failed.count("<li>") == 5
    assert "14</strong> failed" in failed or "13</strong> of yours" in failed
    if persona == "admin":
        assert '<strong class="home-bad">13</strong> failed' in _card(text, "failed-installs")
        assert _card(text, "failed-installs").count("<li>") == 5
    assert _card(text, "alerts").count("<li>") == 5


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_overview_in_a_browser_at_1280_and_390_px(
    browser,
    live_server,
    admin: User,
    operator: User,
    busy,
    scheme: str,  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    from tests.e2e.conftest import screenshot, sign_in

    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, live_server.url, "ada")
        assert page.url == f"{live_server.url}/", "signing in lands on the overview"
        for card in CARDS:
            expect(page.locator(f'[data-card="{card}"]')).to_be_visible()
        expect(page.get_by_test_id("saving-today")).to_contain_text("$")
        screenshot(page, f"home-admin-1280-{scheme}")

        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the overview scrolls {overflow} px sideways at 390 px"
        screenshot(page, f"home-admin-390-{scheme}")

        page.locator('[data-card="failed-installs"] h2 a').click()
        page.wait_for_url(f"{live_server.url}/models/")

        page.context.clear_cookies()
        page.set_viewport_size({"width": 1280, "height": 900})
        sign_in(page, live_server.url, "otto")
        expect(page.get_by_test_id("own-runs")).to_contain_text("1 run")
        expect(page.locator('[data-card="savings"]')).to_have_count(0)
        screenshot(page, f"home-operator-1280-{scheme}")
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, f"home-operator-390-{scheme}")
    finally:
        context.close()


def test_an_alert_still_open_behind_many_newer_ended_ones_is_shown(operator: User) -> None:
    now = timezone.now()
    AlertEpisode.objects.create(
        kind="disk_free",
        host="testhost",
        subject="Models disk",
        threshold=10,
        peak=2,
        message="Models disk: 2 GB free, below 10 GB",
        started_at=now - timedelta(hours=3),
    )
    for minute in range(60):
        AlertEpisode.objects.create(
            kind="ram",
            host="testhost",
            subject="Host",
            threshold=90,
            peak=95,
            message="Host RAM at 95% (over 90%)",
            started_at=now - timedelta(minutes=minute + 1),
            ended_at=now - timedelta(minutes=minute),
        )

    alerts = _card(_text(client_for(operator).get("/")), "alerts")

    assert "Models disk: 2 GB free, below 10 GB" in alerts
    assert "Host RAM at 95%" not in alerts, "ended episodes are not active alerts"
