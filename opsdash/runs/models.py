from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from opsdash.catalog.models import LocalModel


class Workflow(models.Model):
    """A named stream of work (an automation, a team's use) whose runs are counted together.

    ``baseline_provider`` / ``baseline_model`` name the paid API it replaces, as genai-prices
    names them (``openai`` / ``gpt-4o-mini``); the savings feature prices runs against it.

    An archived workflow (``archived_at`` set) keeps its runs and savings history but takes no
    new runs and its ``/v1`` keys are refused; restoring it clears ``archived_at``.
    """

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    baseline_provider = models.CharField(max_length=64, blank=True)
    baseline_model = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


class RunSource(models.TextChoices):
    PLAYGROUND = "playground"
    API = "api"
    SUITE = "suite"
    GATEWAY = "gateway"
    BATCH = "batch"


class RunStatus(models.TextChoices):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Run(models.Model):
    """One request to a local model: written before generation starts, finalized after.

    The ledger everything else reads: history, suites, telemetry attribution, savings.
    """

    model = models.ForeignKey(LocalModel, on_delete=models.PROTECT, related_name="runs")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    source = models.CharField(max_length=12, choices=RunSource.choices)
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    params = models.JSONField(default=dict)
    group = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="compare or suite batch"
    )

    status = models.CharField(
        max_length=12, choices=RunStatus.choices, default=RunStatus.RUNNING, db_index=True
    )
    error = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=12, blank=True)
    error_code = models.CharField(
        max_length=32, blank=True, help_text="why it failed, for programs (opsdash.core.errors)"
    )
    output = models.TextField(blank=True)
    prompt_tokens = models.IntegerField(null=True, blank=True)
    completion_tokens = models.IntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    # What the energy estimate needs: the runner's CPU time for this run, and which process.
    cpu_seconds = models.FloatField(null=True, blank=True)
    runner_pid = models.IntegerField(null=True, blank=True)

    # Which process ran it, so a restart only marks its own dead runs `interrupted`; the
    # process's start time tells it from a later process that was given the same pid.
    host = models.CharField(max_length=255, blank=True)
    # The node that generated it (the embedded node's name, or a fleet node's).
    node = models.CharField(max_length=63, blank=True, db_index=True)
    pid = models.IntegerField(null=True, blank=True)
    pid_started_at = models.FloatField(null=True, blank=True)

    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    #: Not a column: the energy a fleet node reported for this run in its final event
    #: (``{"joules", "source", "basis", "devices"}``), set by ``finish_run`` for the savings
    #: finalizer to price in the same transaction (it freezes it on the run's cost). None for
    #: the embedded mode, whose energy the local counters measure.
    node_energy: dict[str, Any] | None = None

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            # A person's runs newest first (their history, the Runs page filtered by user).
            models.Index(fields=["user", "-started_at", "-id"], name="runs_user_latest"),
            # A workflow's latest runs (its savings page), newest first without a sort.
            models.Index(fields=["workflow", "-started_at", "-id"], name="runs_workflow_latest"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"
