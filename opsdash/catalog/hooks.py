"""What other apps do when a model becomes ready (playground runs the suites marked for it).

The catalog calls every registered hook after the install has committed, outside its
transaction. Error policy (said again where each hook is registered): a hook that raises is
logged and never fails the install; the next hook still runs.
"""

from __future__ import annotations

import logging
from typing import Protocol

from opsdash.core.registry import Registry

logger = logging.getLogger(__name__)


class AfterInstall(Protocol):
    """Acts on model ``model_id``, which has just become ``ready``."""

    def __call__(self, *, model_id: int) -> object: ...


after_install: Registry[AfterInstall] = Registry("after-install hooks")


def run_after_install(*, model_id: int) -> None:
    for hook in after_install.entries():
        try:
            hook(model_id=model_id)
        except Exception:
            logger.exception("after-install hook %r failed for model %s", hook, model_id)
