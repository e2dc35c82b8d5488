"""Log filters named in ``settings.LOGGING``.

A refused request is the client's problem, not ours: Django logs a 403 (and a suspicious
request) with the exception's traceback attached, which buried real errors under pages of
frames nobody needs. ``RefusalsInOneLine`` keeps the one WARNING line and adds who was refused
what, instead of the traceback.
"""

from __future__ import annotations

import logging

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation

# Exceptions Django turns into a 4xx response itself: their traceback says nothing about a bug.
REFUSALS = (PermissionDenied, SuspiciousOperation, BadRequest)


class RefusalsInOneLine(logging.Filter):
    """Drops the traceback of a refusal's record and names the refusal in its message.

    Set on the ``django.request`` and ``django.security`` loggers (before any handler, so every
    handler sees the same line) and on the console handler, which also receives the records of
    ``django.security.<ExceptionName>`` children (a logger's filters skip its children's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, REFUSALS):
            message = record.getMessage()
            detail = _detail(exc)
            record.msg = f"{message} ({detail})" if detail and detail not in message else message
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _detail(exc: BaseException) -> str:
    # A missing capability reads best by its internal name here: the log is for the operator.
    username, cap = getattr(exc, "username", None), getattr(exc, "cap", None)
    if username is not None and cap is not None:
        return f"{username} lacks {cap}"
    return str(exc)
