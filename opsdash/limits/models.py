"""Budgets and rate limits per workflow or per workflow key, and the counters that enforce them.

``Limits`` is what an admin set; ``UsageCounter`` is what was used, one row per scope × window
× window start. The counters live in the database every web process shares (see
``opsdash.limits.services`` for why not Redis).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from opsdash.gateway.models import WorkflowKey
from opsdash.runs.models import Workflow

#: The percents of a budget that alert, unless an admin chose others.
DEFAULT_ALERT_PERCENTS = (50, 80, 100)


def default_alert_percents() -> list[int]:
    return list(DEFAULT_ALERT_PERCENTS)


class Window(models.TextChoices):
    """A budget's window, in ``OPSDASH_REPORT_TIME_ZONE``: a day, a week from Monday, or a
    calendar month."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Limits(models.Model):
    """One workflow's or one key's limits (exactly one of the two is set).

    A budget (``budget_window`` set, and ``budget_tokens`` and/or ``budget_nusd``) counts the
    tokens (prompt + completion) and the avoided USD of every run in the window; a hard one
    refuses gateway calls once used up, a soft one only alerts. ``requests_per_minute`` and
    ``tokens_per_minute`` refuse gateway calls over the rate. A null field is no limit.
    """

    workflow = models.OneToOneField(
        Workflow, null=True, blank=True, on_delete=models.CASCADE, related_name="limits"
    )
    key = models.OneToOneField(
        WorkflowKey, null=True, blank=True, on_delete=models.CASCADE, related_name="limits"
    )
    budget_window = models.CharField(max_length=5, choices=Window.choices, blank=True)
    budget_tokens = models.BigIntegerField(null=True, blank=True)
    budget_nusd = models.BigIntegerField(null=True, blank=True)
    budget_hard = models.BooleanField(default=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.BigIntegerField(null=True, blank=True)
    alert_percents = models.JSONField(default=default_alert_percents)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "limits"
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(workflow__isnull=False, key__isnull=True)
                    | models.Q(workflow__isnull=True, key__isnull=False)
                ),
                name="limits_workflow_xor_key",
            )
        ]

    def __str__(self) -> str:
        return f"limits of {self.scope}"

    @property
    def scope(self) -> str:
        """The counters' name for what these limits hold: ``workflow:<id>`` or ``key:<id>``."""
        return f"workflow:{self.workflow_id}" if self.workflow_id else f"key:{self.key_id}"

    @property
    def has_budget(self) -> bool:
        return bool(self.budget_window) and (
            self.budget_tokens is not None or self.budget_nusd is not None
        )


class CounterWindow(models.TextChoices):
    MINUTE = "minute"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class UsageCounter(models.Model):
    """What one scope used in one window: requests admitted (minute windows), tokens and
    avoided nano-USD of its finalized runs.

    Unique per (scope, window, start), so every process adds to the same row with one atomic
    statement (``INSERT … ON CONFLICT … DO UPDATE`` or a conditional ``UPDATE``).
    """

    scope = models.CharField(max_length=40)
    window = models.CharField(max_length=6, choices=CounterWindow.choices)
    start = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    avoided_nusd = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "window", "start"], name="usage_counter_scope_window_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.window} from {self.start:%Y-%m-%d %H:%M}"
