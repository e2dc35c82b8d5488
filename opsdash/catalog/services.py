"""The catalog's verbs, the one place other apps and the views call them from.

A thin facade over ``install`` (the install pipeline: sources, bytes, checks, trial load,
duplicates, cancel, recovery) and ``lifecycle`` (retire, restore, delete, configure). It stays so
that every app keeps the ``<app>.services`` entry point STYLE.md asks for, and the two halves can
change without their callers (views, API, commands, other apps) following.
"""

from __future__ import annotations

from opsdash.catalog.errors import InstallRefused, LifecycleError
from opsdash.catalog.install import (
    LIVE_STATUSES,
    InstallSource,
    cancel_install,
    install_model,
    install_uploaded,
    new_partial_path,
    partial_dir,
    recover_interrupted_installs,
    resolve_server_path,
    start_install,
)
from opsdash.catalog.lifecycle import (
    delete_model,
    dismiss_install,
    restore_model,
    retire_model,
    set_prompt_format,
)

__all__ = [
    "LIVE_STATUSES",
    "InstallRefused",
    "InstallSource",
    "LifecycleError",
    "cancel_install",
    "delete_model",
    "dismiss_install",
    "install_model",
    "install_uploaded",
    "new_partial_path",
    "partial_dir",
    "recover_interrupted_installs",
    "resolve_server_path",
    "restore_model",
    "retire_model",
    "set_prompt_format",
    "start_install",
]
