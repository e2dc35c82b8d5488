"""What other apps do when a model becomes ready (playground runs the suites marked for it) or
is retired (the fleet takes it off its nodes), and where other apps say a model is placed.

The catalog calls every registered hook after the install (or the retire) has committed,
outside its transaction. Error policy (said again where each hook is registered): a hook that
raises is logged and never fails the install or the retire; the next hook still runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from opsdash.core.registry import Registry

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from opsdash.catalog.models import LocalModel

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


class AfterRetire(Protocol):
    """Acts on model ``model_id``, which has just been retired or deleted (no longer served)."""

    def __call__(self, *, model_id: int) -> object: ...


after_retire: Registry[AfterRetire] = Registry("after-retire hooks")


def run_after_retire(*, model_id: int) -> None:
    for hook in after_retire.entries():
        try:
            hook(model_id=model_id)
        except Exception:
            logger.exception("after-retire hook %r failed for model %s", hook, model_id)


class PlacementsOf(Protocol):
    """Where ``model`` runs: ``[{"node", "status", "error", "bytes_done"}]``."""

    def __call__(self, *, model: LocalModel) -> list[Any]: ...


#: The fleet app answers where a model is placed; the catalog shows it without importing it.
placements_of: Registry[PlacementsOf] = Registry("placement providers")


def model_placements(*, model: LocalModel) -> list[Any]:
    """Every registered provider's answer, joined (none registered: ``[]``)."""
    return [entry for provider in placements_of.entries() for entry in provider(model=model)]


class InstallOnNode(Protocol):
    """Starts installing ``source`` (an ``install.InstallSource``: typed ``Any`` here, since
    install imports this module) on fleet node ``node``, the path resolved on that node; the
    ``installing`` record, or ``InstallRefused`` with the sentence."""

    def __call__(self, *, source: Any, node: str, user: User | None) -> LocalModel: ...


#: The fleet app installs on a node (``POST /api/models`` with ``"node"``); the catalog asks it
#: without importing it. A refusal it raises is the answer (no other error policy).
node_installers: Registry[InstallOnNode] = Registry("node installers")


def install_on_node(*, source: Any, node: str, user: User | None) -> LocalModel:
    """The registered node installer's answer; without one, refused: nodes are a fleet's."""
    from opsdash.catalog.errors import InstallRefused

    for installer in node_installers.entries():
        return installer(source=source, node=node, user=user)
    raise InstallRefused("“node” is for fleet mode: this OpsDash has no nodes; leave it out.")
