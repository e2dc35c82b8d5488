from __future__ import annotations

from django.conf import settings
from django.db import models

from opsdash.runs.models import Run, Workflow


class WorkflowKey(models.Model):
    """An API key for the ``/v1`` gateway; every call made with it is a run of ``workflow``.

    Only its SHA-256 is stored; the secret is shown once, when it is created.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    request_count = models.PositiveBigIntegerField(
        default=0, help_text="Requests it authenticated, whatever their outcome."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Endpoint(models.TextChoices):
    CHAT = "chat", "/v1/chat/completions"
    COMPLETIONS = "completions", "/v1/completions"


class GatewayCall(models.Model):
    """What the run ledger does not hold about a gateway run: which key, and for whom.

    ``end_user`` is the OpenAI ``user`` field, an identifier the calling application chose.
    """

    run = models.OneToOneField(
        Run, primary_key=True, on_delete=models.CASCADE, related_name="gateway_call"
    )
    key = models.ForeignKey(WorkflowKey, on_delete=models.PROTECT, related_name="calls")
    endpoint = models.CharField(max_length=12, choices=Endpoint.choices)
    stream = models.BooleanField(default=False)
    end_user = models.CharField(max_length=256, blank=True)

    def __str__(self) -> str:
        return f"gateway call for run {self.run_id}"


# --- the Batch API (POST /v1/files, /v1/batches) ------------------------------------------------


class FilePurpose(models.TextChoices):
    BATCH = "batch", "batch"
    BATCH_OUTPUT = "batch_output", "batch_output"


class BatchFile(models.Model):
    """A file of the Batch API: an uploaded JSONL of requests (``batch``), or the output or
    error file a batch wrote (``batch_output``). It belongs to a workflow: every key of the
    workflow sees it. The bytes live in the database so every hub process can serve them."""

    public_id = models.CharField(max_length=40, unique=True)  # "file-…", what clients see
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(
        WorkflowKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purpose = models.CharField(max_length=16, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField()
    content = models.BinaryField()
    #: For ``batch`` files: how many request lines it holds (checked at upload).
    line_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.filename})"


class BatchStatus(models.TextChoices):
    # OpenAI's states, spelled as its API spells them.
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class Batch(models.Model):
    """One batch job: the requests of ``input_file`` for ``endpoint`` on ``model``.

    Its requests are ``BatchItem`` rows, created with the batch, so a restart resumes where
    it was. ``claimed_by``/``lease_until``: the hub process working on it (core.processes
    identity) and until when, so that in the fleet mode exactly one hub runs a batch and
    another takes over when that one dies.
    """

    public_id = models.CharField(max_length=40, unique=True)  # "batch_…"
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    key = models.ForeignKey(
        WorkflowKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint = models.CharField(max_length=32)  # "/v1/chat/completions" | "/v1/completions"
    model = models.ForeignKey(
        "catalog.LocalModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_name = models.CharField(max_length=200)  # as the requests named it
    input_file = models.ForeignKey(BatchFile, on_delete=models.PROTECT, related_name="+")
    output_file = models.ForeignKey(
        BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_file = models.ForeignKey(
        BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    completion_window = models.CharField(max_length=8, default="24h")
    status = models.CharField(
        max_length=12, choices=BatchStatus.choices, default=BatchStatus.VALIDATING
    )
    metadata = models.JSONField(default=dict, blank=True)
    #: OpenAI's ``errors.data``: ``[{"code", "message", "line", "param"}]``.
    errors = models.JSONField(default=list, blank=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="gateway_batch_status")]

    def __str__(self) -> str:
        return self.public_id


class ItemStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # answered: its response goes to the output file
    FAILED = "failed"  # its error goes to the error file
    CANCELLED = "cancelled"  # the batch was cancelled before it ran


class BatchItem(models.Model):
    """One request line of a batch. ``response`` is the OpenAI response body it got,
    ``error`` ``{"code", "message"}``; ``run`` the ledger row of its (last) attempt."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    line = models.PositiveIntegerField()  # 1-based line number in the input file
    custom_id = models.CharField(max_length=512)
    body = models.JSONField()
    status = models.CharField(max_length=12, choices=ItemStatus.choices, default="pending")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    response = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "line"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "line"], name="gateway_item_line"),
            models.UniqueConstraint(fields=["batch", "custom_id"], name="gateway_item_custom_id"),
        ]
        indexes = [models.Index(fields=["batch", "status", "line"], name="gateway_item_todo")]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line} ({self.custom_id})"
