"""Workflow API keys on ``/v1``: the check every gateway endpoint runs first.

``/v1`` is for scripts using OpenAI clients, not for people: a browser session or a personal
token does not open it, only ``Authorization: Bearer <workflow key>``. Anyone without a valid
key gets OpenAI's 401 JSON, signed in or not.

The decorator marks its view with ``opsdash_cap = GATEWAY_KEY`` so the permission walk in
``tests/test_permissions.py`` knows what to expect from it (401 for every role).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from opsdash.core.bearer import bearer_token
from opsdash.gateway import services
from opsdash.gateway.models import WorkflowKey
from opsdash.gateway.responses import error_response

logger = logging.getLogger(__name__)

GATEWAY_KEY = "gateway_key"

AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


class KeyedRequest(HttpRequest):
    """A request whose workflow key passed the check."""

    gateway_key: WorkflowKey


def _mask(secret: str) -> str:
    return f"{secret[:8]}***{secret[-4:]}" if len(secret) > 16 else "***"


def openai_errors(view: AsyncView) -> AsyncView:
    """Whatever escapes ``view`` is answered as OpenAI's 500, in JSON, never Django's page.

    OpenAI clients turn that JSON into their ``InternalServerError`` (and retry it); an HTML
    page becomes a parse error. Cancellation (the client left) is not an ``Exception`` and
    goes on.
    """

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return await view(request, *args, **kwargs)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(
                500, "The server had an error while processing your request.", type="server_error"
            )

    return wrapper


def gateway_endpoint(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """An async ``/v1`` view: answers only ``methods``, needs a workflow key, no CSRF.

    CSRF protection is for cookies a browser sends by itself; a bearer key is never sent
    that way, so the check would only get in the way of scripts.
    """

    def decorator(view: AsyncView) -> AsyncView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return error_response(
                    405,
                    f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                    headers={"Allow": ", ".join(methods)},
                )
            secret = bearer_token(request)
            if secret is None:
                return error_response(
                    401,
                    "You didn't provide an API key. Send a workflow API key from the OpsDash "
                    "gateway page as 'Authorization: Bearer <key>' (an OpenAI client's api_key).",
                    type="authentication_error",
                )
            key = await sync_to_async(services.use_api_key)(secret=secret)
            if key is None:
                return error_response(
                    401,
                    f"Incorrect API key provided: {_mask(secret)}. Workflow keys are created "
                    "by an admin on the OpsDash gateway page.",
                    type="authentication_error",
                    code="invalid_api_key",
                )
            if not key.is_active:
                return error_response(
                    401,
                    f"The API key {key.prefix}… (“{key.name}”) was revoked; ask an "
                    "OpsDash admin for a new one.",
                    type="authentication_error",
                    code="invalid_api_key",
                )
            if key.workflow.is_archived:
                # Read from the database on every request, so an archive made through any hub
                # process holds on the next request everywhere, like a revocation.
                return error_response(
                    401,
                    f"The API key {key.prefix}… (“{key.name}”) belongs to the workflow "
                    f"{key.workflow.slug}, which is archived; an OpsDash admin can restore it "
                    "on its page.",
                    type="authentication_error",
                    code="invalid_api_key",
                )
            request.gateway_key = key  # type: ignore[attr-defined]
            return await view(request, *args, **kwargs)

        checked = csrf_exempt(openai_errors(wrapper))
        checked.opsdash_cap = GATEWAY_KEY  # type: ignore[attr-defined]
        return checked

    return decorator
