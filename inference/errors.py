"""The one error type of the inference package."""

from __future__ import annotations


class InferenceError(Exception):
    """A failure with a reason a person can read and act on.

    ``reason`` is a full sentence fit to show in the UI; ``str(error)`` is the same text.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormatError(InferenceError):
    """The file is not a model file OpsDash can read, or its header is malformed."""


class BackendError(InferenceError):
    """A backend could not load or run a model."""
