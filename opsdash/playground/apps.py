from __future__ import annotations

from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    name = "opsdash.playground"
    label = "playground"

    def ready(self) -> None:
        from opsdash.catalog import hooks
        from opsdash.playground.suites import run_suites_after_install

        # Error policy: a suite that cannot run is logged and never fails the install; each
        # case's own failure is recorded on its suite run.
        hooks.after_install.register(run_suites_after_install)
