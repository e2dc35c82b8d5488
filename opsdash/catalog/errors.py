"""The catalog's refusals, each with a code that callers branch on (never the sentence)."""

from __future__ import annotations

from opsdash.core.errors import Code, Refusal


class InstallRefused(Refusal):
    """The request is refused before anything is written; ``reason`` tells the admin why.

    ``code``: ``invalid`` (the request itself), ``already_installed`` (a live copy exists).
    """

    default_code = Code.INVALID


class LifecycleError(Refusal):
    """The action does not apply to the model in its current state (``wrong_status``,
    ``still_installing``, ``not_installing``, ``file_missing``, ``unknown_format``)."""

    default_code = Code.WRONG_STATUS
