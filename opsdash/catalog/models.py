from __future__ import annotations

from django.conf import settings
from django.db import models


class ModelStatus(models.TextChoices):
    INSTALLING = "installing"
    READY = "ready"
    RETIRED = "retired"
    DELETED = "deleted"
    FAILED = "failed"


class SourceKind(models.TextChoices):
    PATH = "path"
    UPLOAD = "upload"
    URL = "url"


class LocalModel(models.Model):
    """A model file installed (or being installed) into the models folder.

    Lifecycle: installing → ready → retired → deleted, or installing → failed. Records are never
    removed: runs and savings history keep pointing at them.
    """

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    status = models.CharField(
        max_length=12, choices=ModelStatus.choices, default=ModelStatus.INSTALLING
    )
    error = models.TextField(
        blank=True, help_text="Why the install failed, in words a person can act on."
    )

    # Where it came from, and progress while it is being acquired.
    source_kind = models.CharField(max_length=8, choices=SourceKind.choices)
    source_ref = models.TextField(help_text="The server path, URL or uploaded file name.")
    expected_sha256 = models.CharField(max_length=64, blank=True)
    stage = models.CharField(max_length=40, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    install_host = models.CharField(max_length=255, blank=True)
    install_pid = models.IntegerField(null=True, blank=True)
    # With host and pid, tells the installing process from a later one that got its pid.
    install_pid_started_at = models.FloatField(null=True, blank=True)

    # The file.
    file_path = models.TextField(blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)

    # Metadata read from the file header.
    format = models.CharField(max_length=8, blank=True)
    format_version = models.IntegerField(null=True, blank=True)
    architecture = models.CharField(max_length=64, blank=True)
    model_type = models.CharField(
        max_length=32, blank=True, help_text="ctransformers model type (legacy GGML)."
    )
    parameter_count = models.BigIntegerField(null=True, blank=True)
    quantization = models.CharField(max_length=32, blank=True)
    context_length = models.IntegerField(null=True, blank=True)
    vocab_size = models.IntegerField(null=True, blank=True)
    tokenizer_model = models.CharField(max_length=64, blank=True)
    chat_template = models.TextField(blank=True)
    prompt_format = models.CharField(
        max_length=16,
        blank=True,
        help_text="A plain chat format (inference.chat_formats) used instead of the file's "
        "template; for models whose file has none.",
    )
    metadata = models.JSONField(default=dict, blank=True)

    # How it runs.
    backend = models.CharField(max_length=16, blank=True)
    backend_reason = models.TextField(blank=True)
    trial_seconds = models.FloatField(null=True, blank=True)
    trial_sample = models.TextField(blank=True)

    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    installed_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The duplicate rule, atomic: of two installs of one file that reach the checking
            # stage together, only one can claim its sha256 (services._claim_sha256).
            models.UniqueConstraint(
                fields=["sha256"],
                condition=models.Q(status__in=["installing", "ready", "retired"])
                & ~models.Q(sha256=""),
                name="catalog_one_live_record_per_sha256",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def progress_percent(self) -> int | None:
        if not self.bytes_total:
            return None
        return min(100, int(self.bytes_done * 100 / self.bytes_total))

    @property
    def short_sha256(self) -> str:
        return self.sha256[:12]
