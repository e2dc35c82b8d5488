from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.core import audit
from opsdash.core.models import AuditEntry, Outcome
from opsdash.typing import AuthedRequest

PAGE_SIZE = 50


@requires(Cap.READ_AUDIT)
@require_GET
def audit_page(request: AuthedRequest) -> HttpResponse:
    error = ""
    try:
        filters = audit.parse_filters(request.GET)
    except audit.FilterError as exc:
        error, filters = str(exc), audit.AuditFilters()
    page = Paginator(filters.entries(), PAGE_SIZE).get_page(request.GET.get("page"))
    known = AuditEntry.objects.order_by()
    context = {
        "page": page,
        "filters": filters,
        "error": error,
        "query": urlencode(filters.query),
        "outcomes": Outcome.values,
        "target_types": sorted(
            set(known.exclude(target_type="").values_list("target_type", flat=True))
        ),
        "actors": sorted(set(known.exclude(actor_name="").values_list("actor_name", flat=True))),
    }
    return render(request, "core/audit.html", context, status=400 if error else 200)
