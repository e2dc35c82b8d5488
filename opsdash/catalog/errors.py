"""The catalog's refusals, each with a code that callers branch on (never the sentence)."""

from __future__ import annotations

from enum import StrEnum


class RefusalCode(StrEnum):
    """Why an install was refused; callers branch on this, never on the sentence."""

    INVALID = "invalid"
    DUPLICATE = "duplicate"


class InstallRefused(Exception):
    """The request is refused before anything is written; ``reason`` tells the admin why."""

    def __init__(self, reason: str, *, code: RefusalCode = RefusalCode.INVALID) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class LifecycleCode(StrEnum):
    WRONG_STATUS = "wrong_status"
    STILL_INSTALLING = "still_installing"
    NOT_INSTALLING = "not_installing"
    FILE_MISSING = "file_missing"
    UNKNOWN_FORMAT = "unknown_format"


class LifecycleError(Exception):
    """The action does not apply to the model in its current state."""

    def __init__(self, reason: str, *, code: LifecycleCode = LifecycleCode.WRONG_STATUS) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
