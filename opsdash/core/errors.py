"""Refusals: a sentence for the person and a code for the program.

Every refusal an app raises to its callers is a ``Refusal`` (or a subclass naming its domain:
``InstallRefused``, ``RunRefused``, ``PriceRefused`` …). ``reason`` is a full sentence fit to
show as it is; ``code`` says which case it is, and callers branch on the code only, never on
the sentence, so rewording a message cannot change a status. ``param`` names the field at
fault when there is one.

``HTTP_STATUS`` is the one table from codes to statuses for the pages and ``/api/`` (the API's
exception handler in ``opsdash.api_errors`` reads it); ``/v1`` has its own table in
``opsdash.gateway.errors`` because it answers in OpenAI's terms.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Code(StrEnum):
    """Why something was refused. Values are stable: runs keep them as ``error_code``."""

    INVALID = "invalid"
    INVALID_PARAM = "invalid_param"
    UNKNOWN_PARAM = "unknown_param"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    ALREADY_INSTALLED = "already_installed"
    WRONG_STATUS = "wrong_status"
    STILL_INSTALLING = "still_installing"
    NOT_INSTALLING = "not_installing"
    FILE_MISSING = "file_missing"
    UNKNOWN_FORMAT = "unknown_format"
    TOO_LARGE = "too_large"
    BUSY = "busy"
    CONTEXT_FULL = "context_full"
    LOAD_FAILED = "load_failed"
    CRASHED = "crashed"
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"
    NO_NODE = "no_node"  # fleet mode: no node can serve the model now (opsdash.fleet.scheduler)
    NODE_LOST = "node_lost"  # fleet mode: the node stopped answering during the generation
    # Spend governance (opsdash.limits): a hard budget is used up; a rate limit is reached.
    # The values are OpenAI's error codes, so /v1 answers them as they are.
    INSUFFICIENT_QUOTA = "insufficient_quota"
    RATE_LIMITED = "rate_limit_exceeded"


HTTP_STATUS: dict[Code, int] = {
    Code.INVALID: 400,
    Code.INVALID_PARAM: 400,
    Code.UNKNOWN_PARAM: 400,
    Code.UNKNOWN_FORMAT: 400,
    Code.CONTEXT_FULL: 400,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.ALREADY_INSTALLED: 409,
    Code.WRONG_STATUS: 409,
    Code.STILL_INSTALLING: 409,
    Code.NOT_INSTALLING: 409,
    Code.FILE_MISSING: 409,
    Code.TOO_LARGE: 413,
    Code.BUSY: 429,
    Code.INSUFFICIENT_QUOTA: 429,
    Code.RATE_LIMITED: 429,
    Code.LOAD_FAILED: 503,
    Code.CRASHED: 503,
    Code.SHUTTING_DOWN: 503,
    Code.UNAVAILABLE: 503,
    Code.NO_NODE: 503,
    Code.NODE_LOST: 503,
}


def http_status(code: str) -> int:
    """The status a page or ``/api/`` answers for ``code`` (400 for a code it does not know)."""
    try:
        return HTTP_STATUS[Code(code)]
    except ValueError:
        return 400


class Refusal(Exception):
    """A refusal with a sentence (``reason``), a ``code`` and, optionally, the ``param``."""

    default_code: ClassVar[Code] = Code.INVALID

    def __init__(self, reason: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = Code(code) if code is not None else self.default_code
        self.param = param

    @property
    def status(self) -> int:
        return http_status(self.code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, code={self.code.value!r})"
