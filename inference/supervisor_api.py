"""The supervisor's public types: what callers pass in, what they get back, what it raises.

``inference.supervisor`` re-exports the public ones; import them from there. The done-event
builders at the end are shared by the pool and its tests.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from inference.backends.base import GenerationParams, LoadOptions
from inference.errors import BackendError, InferenceError
from inference.protocol import DoneMessage, DoneRunEvent, RunnerSpec


class SupervisorBusy(InferenceError):
    """The model's queue (requests running plus waiting) is full. HTTP answers 429."""


class RunnerCrashed(InferenceError):
    """The model's process died during a request; the next request starts a fresh one."""


class MemoryBudgetExceeded(InferenceError):
    """The model does not fit in the memory budget, even after unloading idle models."""


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

    def __post_init__(self) -> None:
        self.load_options()  # validates, with the backends' own sentences

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            context_length=self.context_length,
            threads=self.threads,
            gpu_layers=self.gpu_layers,
            model_type=self.model_type,
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


RunnerState = Literal["starting", "idle", "busy", "stopping"]


@dataclass(frozen=True)
class RunnerStatus:
    """One runner process as measured now. Times are timezone-aware UTC datetimes.

    ``queue_length`` counts the model's requests running plus waiting (what ``queue_depth``
    limits). ``loaded_at`` and ``last_used_at`` are None while the model is still loading.
    """

    model_id: int
    pid: int
    rss_bytes: int
    loaded_at: datetime | None
    last_used_at: datetime | None
    queue_length: int
    state: RunnerState
    backend: str
    context_length: int | None
    estimated_bytes: int
    notices: tuple[str, ...] = ()


def done_before_start(queued: float, load_ms: float = 0.0) -> DoneRunEvent:
    """The done event of a request cancelled before its generation started."""
    return {
        "type": "done",
        "finish_reason": "cancelled",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "ttft_ms": None,
        "total_ms": 0.0,
        "tokens_per_second": None,
        "queue_ms": round((time.monotonic() - queued) * 1000 - load_ms, 3),
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
