"""What other apps do with a run the moment it is finalized (savings prices it).

``finish_run`` calls every registered finalizer inside the transaction that finalizes the run,
each in its own savepoint. The error policy is this module's and every registration says it
again: a finalizer that raises has its writes rolled back and is logged, its ``on_failure``
(when given) records the failure, and the run is still finalized with its own status. A bug in
pricing can never leave a run ``running``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from django.db import transaction

from opsdash.core.registry import Registry
from opsdash.runs.models import Run

logger = logging.getLogger(__name__)


class RunFinalizer(Protocol):
    """Acts on a run that has just been finalized (its row is saved, the transaction open)."""

    def __call__(self, *, run: Run) -> object: ...


class FinalizerFailure(Protocol):
    """Records that ``finalizer`` raised ``error`` for ``run`` (its writes already undone)."""

    def __call__(self, *, run: Run, error: Exception) -> object: ...


@dataclass(frozen=True)
class Finalizer:
    finalize: RunFinalizer
    on_failure: FinalizerFailure | None = None


finalizers: Registry[Finalizer] = Registry("run finalizers")


def register(finalize: RunFinalizer, *, on_failure: FinalizerFailure | None = None) -> Finalizer:
    """Call ``finalize(run=...)`` for every finalized run; ``on_failure`` records its errors."""
    return finalizers.register(Finalizer(finalize, on_failure))


def run_finalizers(*, run: Run) -> None:
    """Every registered finalizer on ``run``; none of them can stop the run being finalized."""
    for entry in finalizers.entries():
        try:
            with transaction.atomic():
                entry.finalize(run=run)
        except Exception as exc:
            logger.exception("run finalizer %r failed for run %s", entry.finalize, run.pk)
            if entry.on_failure is None:
                continue
            try:
                with transaction.atomic():
                    entry.on_failure(run=run, error=exc)
            except Exception:
                logger.exception("recording the failure of %r for run %s", entry.finalize, run.pk)
