"""OpenAI request bodies in: what ``/v1/chat/completions`` and ``/v1/completions`` accept.

Pure functions over plain data (no ORM, no I/O), so every rule reads in one place.

Parameters fall in three groups. Those a local model honours are passed on (``messages`` /
``prompt``, ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``,
``stop``; and ``top_k`` / ``repeat_penalty``, which llama.cpp's server and LM Studio accept
too). Those OpenAI clients send with a neutral value (``n: 1``, ``frequency_penalty: 0``,
``response_format: {"type": "text"}``, ``logprobs: false``, bookkeeping such as ``metadata``
or ``store``) are accepted and change nothing; asking them for something the gateway cannot
do (``n: 2``, JSON mode, tools, a penalty) is refused with a 400 that names the parameter.
Anything else is refused the way OpenAI refuses an unknown argument.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.http import JsonResponse

from opsdash.core.errors import Refusal
from opsdash.gateway.errors import v1_error
from opsdash.gateway.models import Endpoint
from opsdash.runs.params import PARAM_NAMES

#: OpenAI's default for ``/v1/completions``; chat completions default to "until the context
#: is full", as OpenAI's do.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class InvalidRequest(Refusal):
    """A request the gateway refuses with 400 (``param`` names the culprit when there is one)."""

    @property
    def message(self) -> str:
        """The sentence, under the name OpenAI's error shape gives it."""
        return self.reason

    def response(self) -> JsonResponse:
        return v1_error(self.code, self.reason, param=self.param)


@dataclass(frozen=True)
class CompletionCall:
    """A validated ``/v1/chat/completions`` or ``/v1/completions`` request."""

    endpoint: Endpoint
    model: str
    prompt: str | None
    messages: list[dict[str, str]] | None
    #: ``opsdash.runs.params.PARAM_NAMES`` only; absent ones take the run's defaults.
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    user: str


# Sent by OpenAI clients; they describe the caller or OpenAI's own storage, not the answer.
_BOOKKEEPING = frozenset(
    {
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prediction",
        "parallel_tool_calls",
    }
)
# The run parameters (``opsdash.runs.params``) go through under their own names; max_tokens
# is read apart, since chat's newer max_completion_tokens wins over it and completions default it.
_GENERATION = frozenset(PARAM_NAMES) - {"max_tokens"}
_COMMON = (
    frozenset(
        {"model", "max_tokens", "stream", "stream_options", "n", "user"}
        | {"frequency_penalty", "presence_penalty", "logit_bias", "logprobs"}
    )
    | _GENERATION
)
_CHAT_ONLY = frozenset(
    {
        "messages",
        "max_completion_tokens",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "modalities",
        "audio",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
    }
)
_COMPLETIONS_ONLY = frozenset({"prompt", "best_of", "echo", "suffix"})


def parse_chat(body: Any) -> CompletionCall:
    """Validate a chat completion request; ``InvalidRequest`` says what is wrong.

    Without ``max_tokens`` / ``max_completion_tokens`` the params carry none: the caller sets
    the model's context length, so the answer runs until it ends or the context is full.
    """
    body = _object(body)
    _refuse_unknown(body, _COMMON | _CHAT_ONLY | _BOOKKEEPING)
    _require_neutral(body, "top_logprobs", (0,), "Log probabilities are not available here.")
    if body.get("logprobs") not in (None, False):
        raise InvalidRequest("Log probabilities are not available here.", param="logprobs")
    response_format = body.get("response_format")
    if response_format is not None and _field(response_format, "type") != "text":
        raise InvalidRequest(
            "Only plain text responses are available: response_format must be "
            '{"type": "text"}; JSON mode and JSON schemas are not supported by this gateway.',
            param="response_format",
        )
    for name in ("tools", "functions"):
        if body.get(name) not in (None, []):
            raise InvalidRequest(
                "Tool and function calling are not supported by this gateway.", param=name
            )
    for name in ("tool_choice", "function_call"):
        if body.get(name) not in (None, "none", "auto"):
            raise InvalidRequest(
                "Tool and function calling are not supported by this gateway.", param=name
            )
    if body.get("modalities") not in (None, ["text"]):
        raise InvalidRequest("Only text output is available.", param="modalities")
    for name in ("audio", "reasoning_effort", "verbosity", "web_search_options"):
        if body.get(name) is not None:
            raise InvalidRequest(
                f"{name} is not supported by the local models behind this gateway.", param=name
            )
    messages = _messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    return _call(body, Endpoint.CHAT, None, messages, max_tokens, None)


def parse_completion(body: Any) -> CompletionCall:
    """Validate a (legacy) text completion request; ``InvalidRequest`` says what is wrong."""
    body = _object(body)
    _refuse_unknown(body, _COMMON | _COMPLETIONS_ONLY | _BOOKKEEPING)
    if body.get("logprobs") is not None:
        raise InvalidRequest("Log probabilities are not available here.", param="logprobs")
    _require_neutral(body, "best_of", (1,), "best_of must be 1: one completion per request.")
    _require_neutral(body, "echo", (False,), "echo is not supported by this gateway.")
    _require_neutral(body, "suffix", ("",), "suffix (insertion) is not supported by this gateway.")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one
    if prompt is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest(
            "prompt must be a string (one prompt per request; token arrays are not accepted).",
            param="prompt",
        )
    return _call(
        body,
        Endpoint.COMPLETIONS,
        prompt,
        None,
        body.get("max_tokens"),
        COMPLETIONS_DEFAULT_MAX_TOKENS,
    )


def _call(
    body: dict[str, Any],
    endpoint: Endpoint,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    max_tokens: Any,
    default_max_tokens: int | None,
) -> CompletionCall:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string: a model id from /v1/models.", param="model")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidRequest(
            f"n must be 1: this gateway generates one choice per request; got {n!r}.", param="n"
        )
    for name in ("frequency_penalty", "presence_penalty"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or value != 0):
            raise InvalidRequest(
                f"{name} is not supported by this gateway; leave it at 0 "
                "(repeat_penalty is available instead).",
                param=name,
            )
    if body.get("logit_bias") not in (None, {}):
        raise InvalidRequest("logit_bias is not supported by this gateway.", param="logit_bias")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object.", param="stream_options")
    include_usage = bool(options and options.get("include_usage"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("user must be a string.", param="user")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("stop must be a string or an array of strings.", param="stop")
    params = {name: body[name] for name in _GENERATION if body.get(name) is not None}
    if max_tokens is None:
        max_tokens = default_max_tokens
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return CompletionCall(
        endpoint=endpoint,
        model=model,
        prompt=prompt,
        messages=messages,
        params=params,
        stream=bool(stream),
        include_usage=include_usage,
        user=user or "",
    )


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _refuse_unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    for name in body:
        if name not in known:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name}", param=name, code=None
            )


def _require_neutral(body: dict[str, Any], name: str, neutral: tuple[Any, ...], why: str) -> None:
    value = body.get(name)
    # isinstance: in Python False == 0, but echo=0 or best_of=false is not a neutral value.
    if value is not None and (
        value not in neutral or isinstance(value, bool) != isinstance(neutral[0], bool)
    ):
        raise InvalidRequest(why, param=name)


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "messages must be a non-empty array of {role, content} objects.", param="messages"
        )
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object.", param=where)
        role = message.get("role")
        if (
            role in {"tool", "function"}
            or message.get("tool_calls")
            or message.get("function_call")
        ):
            raise InvalidRequest(
                "Tool and function calling are not supported by this gateway.", param=where
            )
        if role not in _ROLES:
            raise InvalidRequest(
                f"{where}.role must be system, developer, user or assistant; got {role!r}.",
                param=f"{where}.role",
            )
        content = _text(message.get("content"), role=role, where=f"{where}.content")
        messages.append({"role": _ROLES[role], "content": content})
    return messages


def _text(content: Any, *, role: str, where: str) -> str:
    """The text of a message: a string, or an array of text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if _field(part, "type") != "text" or not isinstance(_field(part, "text"), str):
                kind = _field(part, "type") or type(part).__name__
                raise InvalidRequest(
                    f"The local models behind this gateway read text only; {where} has a "
                    f"{kind!r} part.",
                    param=where,
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidRequest(f"{where} must be a string or an array of text parts.", param=where)


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; ``InvalidRequest`` for anything a model cannot be given.

    Two inputs that ``json.loads`` accepts or dies on without a ``ValueError`` are refused
    here too: nesting deep enough to exhaust the parser's stack (``RecursionError``), and a
    lone UTF-16 surrogate (``"\\ud800"``), which JSON can escape but UTF-8 cannot encode, so
    it would fail later, writing the run or sending the prompt to the model.
    """
    try:
        body = json.loads(raw)
    except RecursionError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request: it is nested too deeply. The "
            "body must be a JSON object."
        ) from exc
    except ValueError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). The body must be a "
            "JSON object.",
        ) from exc
    found, where = _lone_surrogate(body)
    if found:
        raise InvalidRequest(
            f"{where or 'The request body'} holds a lone UTF-16 surrogate (an unpaired "
            "\\ud800-\\udfff escape), which is not text; send valid Unicode.",
            param=where,
        )
    return body


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _lone_surrogate(body: Any) -> tuple[bool, str | None]:
    """Whether a string in ``body`` holds a lone surrogate, and where (``messages[0].content``).

    A loop, not recursion: the body may be nested nearly as deep as the parser allows.
    """
    pending: list[tuple[str, Any]] = [("", body)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True, where or None
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return True, where or None
                pending.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return False, None
