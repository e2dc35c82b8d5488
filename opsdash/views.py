"""Project-level views: the home redirect and the health check."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from opsdash.accounts.permissions import public
from opsdash.accounts.roles import Cap, can


@public
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Send each person to the first page their role can use."""
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    if can(request.user, Cap.VIEW_MODELS):
        return redirect("catalog:list")
    if can(request.user, Cap.VIEW_SAVINGS):
        return redirect("savings:index")
    return render(request, "home.html")


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
