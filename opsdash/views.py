"""Project-level views: the home overview and the health check."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from opsdash.accounts.permissions import public
from opsdash.core.overview import overview_for


@public
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """How things stand right now, per role: the first page after sign-in (served here, not a
    redirect, so a bookmark of ``/`` always shows the overview). Anonymous visitors sign in."""
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return render(request, "home.html", {"overview": overview_for(user=request.user)})


@public
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process serves and the database answers; no login, no detail leaked."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok"})
