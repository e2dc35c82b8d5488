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

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from inference.backends.base import FinishReason, GenerationParams, LoadOptions
from inference.errors import BackendError


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


#: Interactive work (playground, ``/v1``, ``/api/runs``) always goes before batch work on the
#: same model; batch work fills the idle capacity.
Priority = Literal["interactive", "batch"]


class GenerateCommand(TypedDict):
    """Generate from ``prompt``, or from ``messages`` rendered with the model's chat template.

    ``priority`` (default "interactive"): see ``Priority``. A batch request waits while an
    interactive one does, and a runner may set it back to waiting (and later redo it from
    the start, with the same seed) to make room for an interactive one; so its text arrives
    all at once, in one ``token`` message just before its ``done``.
    """

    type: Literal["generate"]
    id: str
    prompt: str | None
    messages: list[ChatMessage] | None
    #: ``GenerationParams`` fields by name.
    params: dict[str, Any]
    priority: NotRequired[Priority]


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
    """``context_length`` is what one request may use; ``parallel_sequences`` how many
    requests the runner decodes together (1: one at a time)."""

    type: Literal["loaded"]
    pid: int
    context_length: int
    notices: list[str]
    load_ms: float
    parallel_sequences: NotRequired[int]


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
    #: How long the request waited inside the runner for a free sequence before it started.
    wait_ms: NotRequired[float]


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


# --- what callers ask for ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run and how to load it. Invalid load options raise ``BackendError``.

    ``estimated_bytes`` is what the model is expected to need in memory (see
    ``inference.formats.estimate_memory``); the budget uses it until the runner's RSS, once
    measured, is larger. A different spec for the same ``model_id`` (another context length,
    say) makes the next request reload the model.
    """

    model_id: int
    path: str
    backend: str
    model_type: str | None = None
    context_length: int | None = None
    threads: int | None = None
    estimated_bytes: int = 0
    gpu_layers: int = 0
    #: How many requests the runner decodes together (``LoadOptions.parallel_sequences``).
    parallel_sequences: int = 1

    def __post_init__(self) -> None:
        self.load_options()  # validates, with the backends' own sentences

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            context_length=self.context_length,
            threads=self.threads,
            gpu_layers=self.gpu_layers,
            model_type=self.model_type,
            parallel_sequences=self.parallel_sequences,
        )

    def runner_spec(self) -> RunnerSpec:
        options = dataclasses.asdict(self.load_options())
        return {"path": str(self.path), "backend": self.backend, "options": options}


@dataclass(frozen=True)
class GenerateRequest:
    """A ``prompt`` to continue, or chat ``messages`` for the model's chat template."""

    params: GenerationParams
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None

    def __post_init__(self) -> None:
        check_input(self.prompt, self.messages)


def check_input(prompt: str | None, messages: list[dict[str, str]] | None) -> None:
    if (prompt is None) == (messages is None):
        raise BackendError("Give either a prompt or chat messages, not both and not neither.")
    if prompt is not None and not isinstance(prompt, str):
        raise BackendError(f"The prompt must be text; got {type(prompt).__name__}.")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise BackendError("Chat messages must be a non-empty list of {role, content}.")
        for message in messages:
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise BackendError(
                    f"Each chat message needs a role and a content, both text; got {message!r}."
                )


# --- building the done event ------------------------------------------------------------------


def done_before_start(queued: float | None = None, load_ms: float = 0.0) -> DoneRunEvent:
    """The done event of a request cancelled before its generation started. ``queued`` is
    when it was queued (``time.monotonic()``); without it (a caller that keeps no queue, such
    as the fleet hub, whose node never ran the request) the queue time is 0."""
    queue_ms = 0.0 if queued is None else (time.monotonic() - queued) * 1000 - load_ms
    return {
        "type": "done",
        "finish_reason": "cancelled",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "ttft_ms": None,
        "total_ms": 0.0,
        "tokens_per_second": None,
        "queue_ms": round(queue_ms, 3),
        "load_ms": round(load_ms, 3),
        "cpu_seconds": 0.0,
        "pid": 0,
    }


def done_event(
    message: DoneMessage,
    sent: float,
    first: float | None,
    ended: float,
    queue_ms: float,
    load_ms: float,
    pid: int = 0,
) -> DoneRunEvent:
    """The caller's done event for the runner's ``message``, with the timings added.

    ``sent``, ``first`` and ``ended`` are ``time.monotonic()`` readings: when the runner was
    asked, when the first text arrived (None if none did), when the done arrived.
    """
    completion = message["completion_tokens"]
    # Waiting inside the runner for a free sequence is queueing, not generating.
    waited = min(max(message.get("wait_ms", 0.0), 0.0) / 1000, max(ended - sent, 0.0))
    queue_ms += waited * 1000
    sent += waited
    if first is not None:
        first = max(first, sent)
    rate: float | None = None
    if first is not None and completion > 1 and ended > first:
        rate = round((completion - 1) / (ended - first), 3)
    return {
        "type": "done",
        "finish_reason": message["finish_reason"],
        "prompt_tokens": message["prompt_tokens"],
        "completion_tokens": completion,
        "ttft_ms": None if first is None else round((first - sent) * 1000, 3),
        "total_ms": round((ended - sent) * 1000, 3),
        "tokens_per_second": rate,
        "queue_ms": round(queue_ms, 3),
        "load_ms": round(load_ms, 3),
        "cpu_seconds": message.get("cpu_seconds", 0.0),
        "pid": pid,
    }
