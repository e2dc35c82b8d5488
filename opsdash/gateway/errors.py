"""``/v1``'s one table from refusal codes (``opsdash.core.errors.Code``) to OpenAI's answers.

OpenAI clients branch on the status, the error's ``type`` and ``code`` (a 429 is retried, a
``context_length_exceeded`` makes some trim the history), so each case is written once here;
callers pass the code they were given and a sentence, never a status of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import JsonResponse

from opsdash.core.errors import Code
from opsdash.gateway.responses import ErrorType, error_response
from opsdash.limits.services import LimitExceeded

#: What a 429 or 503 asks the client to wait before it tries again.
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True)
class OpenAIError:
    status: int
    type: ErrorType = "invalid_request_error"
    code: str | None = None
    retry: bool = False


V1_ERRORS: dict[Code, OpenAIError] = {
    Code.NOT_FOUND: OpenAIError(404, code="model_not_found"),
    Code.TOO_LARGE: OpenAIError(413),
    Code.BUSY: OpenAIError(429, "rate_limit_error", "rate_limit_exceeded", retry=True),
    Code.CONTEXT_FULL: OpenAIError(400, code="context_length_exceeded"),
    Code.LOAD_FAILED: OpenAIError(503, "server_error", "model_not_loaded"),
    Code.CRASHED: OpenAIError(503, "server_error", "model_not_loaded"),
    Code.SHUTTING_DOWN: OpenAIError(503, "server_error", "server_shutting_down", retry=True),
    # Fleet mode: no node can serve the model now (the sentence says why), or the node was
    # lost before any text was sent; another try may find a node.
    Code.NO_NODE: OpenAIError(503, "server_error", "model_not_loaded", retry=True),
    Code.NODE_LOST: OpenAIError(503, "server_error", "node_lost", retry=True),
    # Spend governance (opsdash.limits), as OpenAI answers them: a used-up budget is not worth
    # retrying (no Retry-After); a rate limit is, after the seconds its window has left
    # (``limit_error``, which also picks the "requests" or "tokens" type).
    Code.INSUFFICIENT_QUOTA: OpenAIError(429, "insufficient_quota", "insufficient_quota"),
    Code.RATE_LIMITED: OpenAIError(429, "requests", "rate_limit_exceeded"),
}
#: Anything else the gateway refuses is the request's own fault.
REFUSED = OpenAIError(400)


def v1_error(code: str, message: str, *, param: str | None = None) -> JsonResponse:
    """The OpenAI-shaped answer for ``code``, with ``message`` and the culprit ``param``."""
    try:
        found = V1_ERRORS.get(Code(code), REFUSED)
    except ValueError:  # a code /v1 has no case for: the request's own fault
        found = REFUSED
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if found.retry else None
    return error_response(
        found.status, message, type=found.type, param=param, code=found.code, headers=headers
    )


def limit_error(exc: LimitExceeded) -> JsonResponse:
    """OpenAI's 429 for a call a budget or rate limit refused: ``insufficient_quota``, or
    ``rate_limit_exceeded`` of type ``requests`` / ``tokens`` with ``Retry-After`` from the
    real window."""
    found = V1_ERRORS[exc.code]
    type: ErrorType = found.type
    if exc.code == Code.RATE_LIMITED:
        type = "tokens" if exc.limit == "tokens" else "requests"
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return error_response(found.status, exc.reason, type=type, code=found.code, headers=headers)
