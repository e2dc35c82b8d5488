"""The messages between the supervisor and a runner process, and the events callers receive.

Runner messages travel as JSON lines over two dedicated pipes (not stdin/stdout: llama.cpp
points the process's stdout and stderr at /dev/null while it loads a model, and native code
may print to them at any time). Each is a ``TypedDict`` so both ends type-check against one
definition; ``type`` tells them apart.

Supervisor → runner: ``generate``, ``tokenize``, ``count``, ``cancel``, ``ping``, ``shutdown``.
Runner → supervisor: ``loaded`` (once, first), then per request ``token``… ``done`` or
``error``, ``tokens``, ``count``, ``pong``. An ``error`` with ``id`` None before ``loaded``
means the model could not be loaded; the runner then exits with status 1.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from inference.backends.base import FinishReason


class ChatMessage(TypedDict):
    """One chat turn, as OpenAI-style APIs and chat templates spell it."""

    role: str
    content: str


class RunnerSpec(TypedDict):
    """What a runner loads; passed as a JSON command-line argument."""

    path: str
    backend: str
    #: ``LoadOptions`` fields by name.
    options: dict[str, Any]


# --- supervisor → runner ---------------------------------------------------------------------


class GenerateCommand(TypedDict):
    """Generate from ``prompt``, or from ``messages`` rendered with the model's chat template."""

    type: Literal["generate"]
    id: str
    prompt: str | None
    messages: list[ChatMessage] | None
    #: ``GenerationParams`` fields by name.
    params: dict[str, Any]


class TokenizeCommand(TypedDict):
    """Tokenize ``prompt`` or rendered ``messages``: ``tokenize`` answers the ids and their
    number, ``count`` only the number."""

    type: Literal["tokenize", "count"]
    id: str
    prompt: str | None
    messages: list[ChatMessage] | None


class CancelCommand(TypedDict):
    """Stop request ``id`` within one token (or before it starts, if it is still queued)."""

    type: Literal["cancel"]
    id: str


class PingCommand(TypedDict):
    type: Literal["ping"]
    id: str


class ShutdownCommand(TypedDict):
    """Cancel what is running, free the model and exit. Closing the pipe means the same."""

    type: Literal["shutdown"]


Command = GenerateCommand | TokenizeCommand | CancelCommand | PingCommand | ShutdownCommand


# --- runner → supervisor ---------------------------------------------------------------------


class LoadedMessage(TypedDict):
    type: Literal["loaded"]
    pid: int
    context_length: int
    notices: list[str]
    load_ms: float


class TokenMessage(TypedDict):
    type: Literal["token"]
    id: str
    text: str


class DoneMessage(TypedDict):
    """The last message of a generation that ran (or was cancelled) without an error."""

    type: Literal["done"]
    id: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cpu_seconds: float  # CPU time the runner process used for this generation, all threads


class ErrorMessage(TypedDict):
    """``reason`` is a sentence for a person. ``id`` None: the model failed to load.

    ``code``: the error's ``InferenceError.code``, when it has one.
    """

    type: Literal["error"]
    id: str | None
    reason: str
    code: NotRequired[str]


class TokensMessage(TypedDict):
    type: Literal["tokens"]
    id: str
    tokens: list[int]
    count: int


class CountMessage(TypedDict):
    type: Literal["count"]
    id: str
    count: int


class PongMessage(TypedDict):
    type: Literal["pong"]
    id: str
    pid: int
    busy: bool


RunnerMessage = (
    LoadedMessage
    | TokenMessage
    | DoneMessage
    | ErrorMessage
    | TokensMessage
    | CountMessage
    | PongMessage
)


# --- what Supervisor.generate yields -----------------------------------------------------------


class TokenRunEvent(TypedDict):
    """A piece of generated text (never empty; see ``inference.backends.base.TokenEvent``)."""

    type: Literal["token"]
    text: str


class DoneRunEvent(TypedDict):
    """The last event of every generation that did not raise.

    Token counts come from the model's own tokenizer. Timings are measured by the supervisor
    from the moment the runner is asked to generate, so they exclude waiting in the queue
    (``queue_ms``) and starting the runner (``load_ms``, 0 when it was already loaded).
    ``ttft_ms`` is None when no text was produced; ``tokens_per_second`` is the decode rate,
    completion tokens after the first over the time after the first, None with fewer than two.
    """

    type: Literal["done"]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    total_ms: float
    tokens_per_second: float | None
    queue_ms: float
    load_ms: float
    cpu_seconds: float  # the runner's CPU time for this generation (energy estimates)
    pid: int  # the runner process that generated it


RunEvent = TokenRunEvent | DoneRunEvent
