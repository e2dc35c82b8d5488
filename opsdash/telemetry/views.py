"""Telemetry pages (the overview, thresholds) and the Prometheus ``/metrics`` endpoint.

Of the other apps, telemetry reads only ``runs``, through public functions: the runner state
(``runs.runtime.loaded_runners``, in the sampler) and the run ledger's totals for ``/metrics``
(``runs.ledger.run_totals``). Apps that add figures to ``/metrics`` register a collector
(``telemetry.collectors``).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from prometheus_client import CONTENT_TYPE_LATEST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.core.bearer import bearer_token
from opsdash.runs.ledger import run_totals
from opsdash.telemetry import metrics as prometheus
from opsdash.telemetry import services
from opsdash.telemetry.collectors import extra_collectors
from opsdash.telemetry.forms import ThresholdsForm
from opsdash.typing import AuthedRequest

# Who may change thresholds and read /metrics with a login: admins. The role matrix has no
# capability of its own for either, and admins are the ones who run the host.
ADMIN_CAP = Cap.MANAGE_MODELS


def _page_context(request: AuthedRequest, form: ThresholdsForm | None = None) -> dict[str, object]:
    cards = services.node_cards()
    # A card of a node that sends no frame (offline, pending) has nothing to show in full.
    hosts = [c["host"] for c in cards if c["live"]]
    # The node shown in full: the one asked for, else the first (the only one when embedded).
    asked = request.GET.get("host") or None
    focus = asked if asked in hosts else (hosts[0] if hosts else asked or "")
    frame = next((c["frame"] for c in cards if c["host"] == focus), None)
    rules = services.alert_rules()
    return {
        "frame": frame,
        "cards": cards,
        "focus": focus,
        "unknown_host": asked if asked and asked not in hosts else None,
        "embedded": settings.TELEMETRY_EMBEDDED,
        "episodes": services.recent_episodes(limit=20),
        "form": form or ThresholdsForm.for_rules(rules),
        "rules": rules,
        "can_edit": can(request.user, ADMIN_CAP),
        "stall_seconds": settings.TELEMETRY_STALL_SECONDS,
        "unhealthy_seconds": settings.NODE_UNHEALTHY_SECONDS,
        # On a hub the cards refresh the nodes' recorded statuses from here.
        "nodes_url": "" if settings.TELEMETRY_EMBEDDED else reverse("api:telemetry_nodes"),
    }


@requires(Cap.VIEW_TELEMETRY)
@require_GET
def index(request: AuthedRequest) -> HttpResponse:
    context = _page_context(request)
    if request.htmx and request.htmx.target == "alert-episodes":
        return render(request, "telemetry/index.html#episodes", context)
    return render(request, "telemetry/index.html", context)


@requires(ADMIN_CAP)
@require_POST
def thresholds(request: AuthedRequest) -> HttpResponse:
    form = ThresholdsForm(request.POST)
    if not form.is_valid():
        return render(request, "telemetry/index.html", _page_context(request, form), status=400)
    services.update_thresholds(values=form.values(), user=request.user)
    messages.success(request, "Alert thresholds saved; they apply from the next second.")
    return redirect("telemetry:index")


def _scraper_allowed(request: HttpRequest) -> bool:
    """The configured bearer token, or an address on the allow-list."""
    token = settings.METRICS_TOKEN
    bearer = bearer_token(request)
    if token and bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return True
    if not settings.METRICS_ALLOW_FROM:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in settings.METRICS_ALLOW_FROM)


def _metrics_response() -> HttpResponse:
    try:
        collector = prometheus.TelemetryCollector(services.snapshots, run_totals)
        # Other apps' collectors (savings) are registered with telemetry, which imports none.
        body = prometheus.render(collector, *extra_collectors())
    except services.TelemetryUnavailable as exc:
        return HttpResponse(exc.reason, status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


@requires(ADMIN_CAP, api=True)
def _metrics_for_admin(request: HttpRequest) -> HttpResponse:
    return _metrics_response()


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. ``OPSDASH_METRICS_TOKEN`` as a bearer token, an address in
    ``OPSDASH_METRICS_ALLOW_FROM``, or an admin's session or personal token."""
    if _scraper_allowed(request):
        return _metrics_response()
    return _metrics_for_admin(request)


metrics.opsdash_cap = ADMIN_CAP  # type: ignore[attr-defined]  # read by the permission walk
