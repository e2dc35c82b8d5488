"""OpenAI response bodies out: completions, stream chunks, model objects and errors.

Pure functions over plain data, so the shapes OpenAI clients parse are all in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from django.http import JsonResponse

from opsdash.gateway.models import Endpoint

OWNED_BY = "opsdash"

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "rate_limit_error",
    "server_error",
    # OpenAI's types for a used-up quota and for its requests / tokens per minute limits.
    "insufficient_quota",
    "requests",
    "tokens",
]


def error_body(
    message: str, *, type: ErrorType, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type: ErrorType = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """An error in OpenAI's JSON shape, which every OpenAI client turns into its exception."""
    return JsonResponse(
        error_body(message, type=type, param=param, code=code), status=status, headers=headers
    )


def model_object(slug: str, created: int) -> dict[str, Any]:
    return {"id": slug, "object": "model", "created": created, "owned_by": OWNED_BY}


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    prompt, completion = prompt_tokens or 0, completion_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(reason: str) -> str:
    """OpenAI's finish reasons: our backends end with ``stop`` or ``length``."""
    return "length" if reason == "length" else "stop"


@dataclass(frozen=True)
class Answer:
    """What the response bodies need from a run, without the ORM."""

    id: str
    created: int
    model: str
    text: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    system_fingerprint: str


def completion_body(endpoint: Endpoint, answer: Answer) -> dict[str, Any]:
    reason = finish_reason(answer.finish_reason)
    if endpoint == Endpoint.CHAT:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.text, "refusal": None},
            "logprobs": None,
            "finish_reason": reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": answer.text, "logprobs": None, "finish_reason": reason}
        obj = "text_completion"
    return {
        "id": answer.id,
        "object": obj,
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": answer.system_fingerprint,
        "choices": [choice],
        "usage": usage(answer.prompt_tokens, answer.completion_tokens),
    }


@dataclass(frozen=True)
class Chunks:
    """Server-sent events for one streamed completion, each ``data: {json}`` and a blank line."""

    endpoint: Endpoint
    id: str
    created: int
    model: str
    include_usage: bool
    system_fingerprint: str

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = "chat.completion.chunk" if self.endpoint == Endpoint.CHAT else "text_completion"
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None  # on every chunk but the last, as OpenAI does
        chunk.update(extra)
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _choice(self, text: str | None, reason: str | None) -> dict[str, Any]:
        if self.endpoint == Endpoint.CHAT:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}

    def opening(self) -> bytes:
        """Chat streams start with the assistant's role and no text; completions need none."""
        if self.endpoint != Endpoint.CHAT:
            return b""
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._event([choice])

    def text(self, text: str) -> bytes:
        return self._event([self._choice(text, None)])

    def finish(self, reason: str) -> bytes:
        return self._event([self._choice(None, finish_reason(reason))])

    def usage(self, prompt_tokens: int | None, completion_tokens: int | None) -> bytes:
        return self._event([], usage=usage(prompt_tokens, completion_tokens))

    @staticmethod
    def error(message: str, *, type: ErrorType = "server_error") -> bytes:
        """A failure after the stream began: OpenAI clients raise it as an ``APIError``."""
        return b"data: " + json.dumps(error_body(message, type=type)).encode() + b"\n\n"

    DONE = b"data: [DONE]\n\n"
