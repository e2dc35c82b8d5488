"""Request bodies are refused by size and by credentials before anything writes them down.

An ASGI server hands the application the body in pieces as it arrives (uvicorn reads the socket
only as fast as the application asks), so this guard, wrapped around the HTTP application, sees
each request before Django does:

- by its ``Content-Length``, before one byte of the body is read: too large → 413;
- as it streams (``Transfer-Encoding: chunked`` has no length): the byte that passes the limit
  is never handed on; the client gets the 413 and the application a disconnect;
- an endpoint that takes large bodies (model uploads) names a credentials check, run before
  any of the body is read: none → 401.

Every refusal closes the connection (``Connection: close``) without reading the rest of the body,
and says why in the shape of the part of the site asked: ``{"detail": …}`` under ``/api/``,
OpenAI's error object under ``/v1``, a plain sentence elsewhere.

Why here and not in Django: Django's ``ASGIHandler`` reads the whole body into a
``SpooledTemporaryFile`` (memory, then disk) before any middleware or view runs, so a limit in
Django is applied only after the bytes were stored. Bodies this guard lets through are no larger
than ``FILE_UPLOAD_MAX_MEMORY_SIZE``, so Django's spool of them stays in memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.template.defaultfilters import filesizeformat

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CredentialsCheck = Callable[[Scope], Awaitable[bool]]
Style = Literal["api", "openai", "page"]

#: What a request that takes no body may still carry (some clients send ``{}`` or a newline).
NO_BODY_BYTES = 1024
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Endpoints that read no body whatever the method.
BODYLESS_PATHS = frozenset({"/healthz", "/metrics"})


@dataclass(frozen=True)
class BodyRule:
    """What one endpoint accepts: at most ``limit`` bytes, and, when ``credentials`` is set,
    only from a caller it accepts (checked before the body is read)."""

    limit: int
    style: Style
    too_large: str = ""
    credentials: CredentialsCheck | None = None
    unauthorized: str = "Sign in, or send Authorization: Bearer <token>, to send this request."

    def too_large_message(self) -> str:
        return self.too_large or (
            f"The request body is larger than this endpoint accepts "
            f"({str(filesizeformat(self.limit)).replace(chr(160), ' ')})."
        )


RuleFor = Callable[[], BodyRule]


def style_for(path: str) -> Style:
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    if path.startswith("/api/"):
        return "api"
    return "page"


def default_rule(method: str, path: str) -> BodyRule:
    """Bodyless methods and endpoints get a token allowance; everything else (JSON under
    ``/api/`` and ``/v1``, page forms) what Django itself accepts, DATA_UPLOAD_MAX_MEMORY_SIZE."""
    style = style_for(path)
    if method in _BODYLESS_METHODS or path in BODYLESS_PATHS:
        return BodyRule(limit=NO_BODY_BYTES, style=style)
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return BodyRule(limit=NO_BODY_BYTES if limit is None else limit, style=style)


def refusal(rule: BodyRule, status: int, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a refusal, in the shape its part of the site answers in."""
    if rule.style == "openai":
        kind = "invalid_request_error"
        code = "request_too_large" if status == 413 else "invalid_api_key"
        body = json.dumps(
            {"error": {"message": message, "type": kind, "param": None, "code": code}}
        ).encode()
        content_type = b"application/json"
    elif rule.style == "api":
        body = json.dumps({"detail": message}).encode()
        content_type = b"application/json"
    else:
        body = (message + "\n").encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 401 and rule.style != "page":
        headers.append((b"www-authenticate", b"Bearer"))
    return headers, body


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length``, or None when there is none; a malformed one counts as huge."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 2**63
    return None


class BodyLimits:
    """ASGI middleware for HTTP: applies each request's ``BodyRule`` (see the module doc).

    ``rules`` maps exact paths to their rule (a function, so settings are read per request);
    every other path gets ``default_rule``.
    """

    def __init__(self, app: ASGIApp, *, rules: Mapping[str, RuleFor] | None = None) -> None:
        self.app = app
        self.rules = dict(rules or {})

    def rule_for(self, scope: Scope) -> BodyRule:
        method, path = scope["method"].upper(), scope["path"]
        special = self.rules.get(path)
        if special is not None and method not in _BODYLESS_METHODS:
            return special()
        return default_rule(method, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope)
        declared = _declared_length(scope)
        if declared is not None and declared > rule.limit:
            await _refuse(send, rule, 413, rule.too_large_message())
            return
        if rule.credentials is not None and declared != 0 and not await rule.credentials(scope):
            await _refuse(send, rule, 401, rule.unauthorized)
            return
        await self.app(scope, *_Metered(rule, receive, send).channels())


async def _refuse(send: Send, rule: BodyRule, status: int, message: str) -> None:
    headers, body = refusal(rule, status, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Metered:
    """The receive and send an application gets: bytes are counted as they arrive, and once
    they pass the limit the client is answered 413 and the application sees a disconnect."""

    def __init__(self, rule: BodyRule, receive: Receive, send: Send) -> None:
        self.rule = rule
        self._receive = receive
        self._send = send
        self.received = 0
        self.refused = False
        self.response_started = False

    def channels(self) -> tuple[Receive, Send]:
        return self.receive, self.send

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received > self.rule.limit:
            self.refused = True
            if not self.response_started:
                self.response_started = True
                await _refuse(self._send, self.rule, 413, self.rule.too_large_message())
            return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the client already has its 413; what the application says goes nowhere
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)
