"""The inference package's one error family: ``InferenceError`` and its subclasses.

Every error carries ``reason`` (a sentence for a person) and ``code`` (for callers to branch
on); the subclasses only name the case, none re-implements either. Framework-free: the Django
side maps these to its own coded errors (``opsdash.core.errors``).
"""

from __future__ import annotations

#: ``code`` of the error for a prompt that leaves no room in the model's context (at most 12
#: characters: a failed run keeps the code as its ``finish_reason``).
CONTEXT_FULL = "context_full"
#: ``code`` of the error for a model whose runner could not load it (told apart from a loaded
#: model refusing one request, which raises the same ``BackendError`` type).
LOAD_FAILED = "load_failed"


class InferenceError(Exception):
    """A failure with a reason a person can read and act on.

    ``reason`` is a full sentence fit to show in the UI; ``str(error)`` is the same text.
    ``code``, when set, names the case for callers to branch on (never on the sentence).
    """

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class FormatError(InferenceError):
    """The file is not a model file OpsDash can read, or its header is malformed."""


class BackendError(InferenceError):
    """A backend could not load or run a model."""


class SupervisorBusy(InferenceError):
    """The model's queue (requests running plus waiting) is full. HTTP answers 429."""


class RunnerCrashed(InferenceError):
    """The model's process died during a request; the next request starts a fresh one."""


class MemoryBudgetExceeded(InferenceError):
    """The model does not fit in the memory budget, even after unloading idle models."""
