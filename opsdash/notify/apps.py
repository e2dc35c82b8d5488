from __future__ import annotations

from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "opsdash.notify"
    label = "notify"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from opsdash.core import background
        from opsdash.notify import sender

        # Every web process delivers what is queued (the claims keep two from sending one
        # delivery twice). Started with the server, not on first use: an alert must go out
        # even if nobody opens a page. A failing round is logged and retried; stopping joins
        # at most the send in progress.
        background.register(
            "notification sender",
            start=sender.start_sender,
            stop=sender.stop_sender,
            reset_after_fork=sender.reset_after_fork,
            at_startup=True,
        )
