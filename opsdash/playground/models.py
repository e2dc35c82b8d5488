"""Prompt suites: saved prompts with expectations, run against a model on demand or after install.

A suite run writes one ``runs.Run`` per case (the ledger row, ``source="suite"``, ``group`` set to
the suite run's ``group``) and one ``CaseResult`` saying whether the answer met the case's
expectations, and why not.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Run


class Suite(models.Model):
    """A named list of prompts, each with what a good answer looks like."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    params = models.JSONField(
        default=dict, blank=True, help_text="Generation parameters for every case (max_tokens…)."
    )
    use_chat_template = models.BooleanField(
        default=True, help_text="Send each prompt as a user chat message, not as raw text."
    )
    auto_run_after_install = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class SuiteCase(models.Model):
    """One prompt; every expectation left empty is not checked."""

    suite = models.ForeignKey(Suite, on_delete=models.CASCADE, related_name="cases")
    order = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=120)
    prompt = models.TextField()
    expect_contains = models.TextField(blank=True, help_text="Text the answer must contain.")
    expect_regex = models.TextField(blank=True, help_text="A pattern the answer must match.")
    max_latency_ms = models.FloatField(
        null=True, blank=True, help_text="Longest acceptable total time of the run."
    )
    min_tokens_per_second = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name

    def expectations(self) -> dict[str, object]:
        """What is checked, as a plain dict (kept on each result, so later edits of the case
        do not rewrite what an old run was held to)."""
        return {
            "expect_contains": self.expect_contains,
            "expect_regex": self.expect_regex,
            "max_latency_ms": self.max_latency_ms,
            "min_tokens_per_second": self.min_tokens_per_second,
        }


class SuiteTrigger(models.TextChoices):
    MANUAL = "manual"
    INSTALL = "install"


class SuiteRunStatus(models.TextChoices):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


class SuiteRun(models.Model):
    """One pass of a suite over one model."""

    suite = models.ForeignKey(Suite, on_delete=models.PROTECT, related_name="runs")
    model = models.ForeignKey(LocalModel, on_delete=models.PROTECT, related_name="suite_runs")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger = models.CharField(max_length=8, choices=SuiteTrigger.choices)
    status = models.CharField(
        max_length=8, choices=SuiteRunStatus.choices, default=SuiteRunStatus.RUNNING
    )
    error = models.TextField(blank=True, help_text="Why the suite run itself could not finish.")
    group = models.UUIDField(
        default=uuid.uuid4, unique=True, help_text="The ``group`` of this run's ledger rows."
    )
    case_count = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Which process drives it, so a run orphaned by a restart can be told from a live one.
    host = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    pid_started_at = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["model", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.suite} on {self.model} ({self.status})"

    @property
    def done(self) -> int:
        return self.passed + self.failed

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class CaseResult(models.Model):
    """How one case fared in one suite run. ``reasons`` is empty when it passed."""

    suite_run = models.ForeignKey(SuiteRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(
        SuiteCase, null=True, blank=True, on_delete=models.SET_NULL, related_name="results"
    )
    order = models.PositiveIntegerField(default=0)
    case_name = models.CharField(max_length=120)
    prompt = models.TextField(blank=True)
    expectations = models.JSONField(default=dict, blank=True)
    run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when the run was refused before it started.",
    )
    passed = models.BooleanField(default=False)
    reasons = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.case_name}: {'passed' if self.passed else 'failed'}"
