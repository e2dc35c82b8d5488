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
