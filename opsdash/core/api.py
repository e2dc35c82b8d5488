"""GET /api/audit: the audit log for admins, with the Audit page's filters as query parameters.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.
"""

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import MAX_DB_INT, responses
from opsdash.core import audit

router = Router(tags=["audit"])


class AuditQuery(Schema):
    # Strings, not dates: the shared parser answers a bad day with a sentence, not a 422.
    actor: str | None = Field(None, description="a username, or system")
    action: str | None = Field(None, description="a dotted prefix: model, model.install, key")
    target_type: str | None = Field(None, description="model, key, workflow, price, …")
    outcome: str | None = Field(None, description="ok, refused or failed")
    start: str | None = Field(None, alias="from", description="first day, YYYY-MM-DD")
    end: str | None = Field(None, alias="to", description="last day, inclusive")
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_DB_INT)


@router.get("", response=responses({200: dict[str, Any]}, 400, 422), auth=api_auth(Cap.READ_AUDIT))
def list_audit(request: HttpRequest, query: Query[AuditQuery]) -> dict[str, Any]:
    """Audit entries, newest first: ``{"items": [...], "count"}`` (count of all that match)."""
    try:
        filters = audit.parse_filters(request.GET)
    except audit.FilterError as exc:
        raise HttpError(400, str(exc)) from exc
    found = filters.entries()
    page = found[query.offset : query.offset + query.limit]
    return {"items": [entry.as_json() for entry in page], "count": found.count()}
