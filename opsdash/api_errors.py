"""What every /api/ operation shares: the one error shape, the statuses it may answer, and the
body parser and exception handlers that turn bad input into a 4xx with a sentence.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.

django-ninja refuses (with a 500) to answer a status an operation did not declare, and
``/api/openapi.json`` is what scripts and the fuzz test (``tests/test_api_fuzz.py``) trust, so
each operation lists its statuses through ``responses()`` instead of repeating dicts.
"""

import json
from functools import partial
from typing import Annotated, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Schema
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser

from opsdash.core.errors import Refusal

# SQLite and PostgreSQL both store ids and offsets as signed 64-bit integers; a larger number
# in a filter would reach the database and fail there (a 500), so the schema refuses it.
MAX_DB_INT = 2**63 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_INT)]

# Every operation checks a token or session (401) and a role, or CSRF for a session (403).
AUTH_STATUSES = (401, 403)
# What an operation that reads a JSON body may answer besides its own statuses: an unreadable
# body (400), one over DATA_UPLOAD_MAX_MEMORY_SIZE (413), fields that fail the schema (422).
BODY_STATUSES = (400, 413, 422)


class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(Schema):
    """Every error answer: a sentence a person can act on; ``errors`` lists fields on a 422."""

    detail: str
    errors: list[FieldError] | None = None


def responses(ok: dict[int, Any], *statuses: int) -> dict[int, Any]:
    """``ok`` plus ``ErrorOut`` for the auth statuses and each of ``statuses``."""
    declared: dict[int, Any] = dict.fromkeys((*AUTH_STATUSES, *statuses), ErrorOut)
    return declared | ok


class BadBody(ValueError):
    """A JSON body that cannot be used as it is; the message says why."""


def _check_text(data: object) -> None:
    # A lone surrogate ("\ud800") is valid JSON but not Unicode: SQLite, PostgreSQL and the
    # runner pipe all refuse to encode it, so it is refused here, with a sentence. A loop, not
    # recursion: json.loads accepts nesting deeper than the stack left at this point.
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise BadBody(
                    "The body contains text that is not valid Unicode (a lone surrogate such "
                    "as \\ud800); send UTF-8 text."
                ) from None
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


class StrictJsonParser(Parser):
    """JSON bodies that Python's json accepts but nothing downstream can store are refused."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        try:
            data = json.loads(request.body)
        except RecursionError:
            raise BadBody("The JSON body is nested too deeply.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadBody(f"The body is not valid JSON ({exc}).") from None
        _check_text(data)
        return data


def _field_path(loc: tuple[str | int, ...]) -> str:
    # ninja prefixes each location with where it came from ("query", "path", or "body" and the
    # payload's parameter name); a person knows the field by its own name.
    source = loc[0] if loc else None
    skip = 0
    if source in {"query", "path", "body"}:
        skip = 2 if source == "body" and len(loc) > 2 else 1
    return ".".join(str(p) for p in loc[skip:]) or "the request"


def _validation_error(request: HttpRequest, exc: ValidationError, api: NinjaAPI) -> HttpResponse:
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors
    ]
    first = errors[0] if errors else {"loc": [], "msg": "The request is not valid"}
    detail = f"{_field_path(tuple(first['loc']))}: {first['msg']}."
    return api.create_response(request, {"detail": detail, "errors": errors}, status=422)


def _http_error(request: HttpRequest, exc: HttpError, api: NinjaAPI) -> HttpResponse:
    # django-ninja wraps any parser failure in "Cannot parse request body"; ours say more.
    cause = exc.__cause__
    detail = str(cause) if isinstance(cause, BadBody) else str(exc)
    return api.create_response(request, {"detail": detail}, status=exc.status_code)


def _refusal(request: HttpRequest, exc: Refusal, api: NinjaAPI) -> HttpResponse:
    # The status comes from the code (opsdash.core.errors.HTTP_STATUS), never the sentence.
    return api.create_response(request, {"detail": exc.reason}, status=exc.status)


def _too_big(request: HttpRequest, exc: RequestDataTooBig, api: NinjaAPI) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    detail = (
        f"The request body is over the API's limit of {limit:,} bytes; model files go to "
        "/api/models/upload."
    )
    return api.create_response(request, {"detail": detail}, status=413)


def install_error_handlers(api: NinjaAPI) -> None:
    """Every error from ``api`` answers ``ErrorOut`` with a sentence."""
    api.add_exception_handler(ValidationError, partial(_validation_error, api=api))
    api.add_exception_handler(HttpError, partial(_http_error, api=api))
    api.add_exception_handler(Refusal, partial(_refusal, api=api))
    api.add_exception_handler(RequestDataTooBig, partial(_too_big, api=api))
