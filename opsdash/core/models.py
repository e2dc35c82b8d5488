from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"


class AuditImmutable(Exception):
    """Raised by any attempt to change or remove an audit entry."""


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    # The audit log is append-only. Refusing here as well as in the service layer means a
    # bulk ``.update()`` or ``.delete()`` written by mistake fails loudly instead of rewriting
    # history. (Deleting a user still nulls ``actor``: Django's collector does that with its
    # own UPDATE query, and ``actor_name`` keeps who it was.)
    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditImmutable("Audit entries are never changed.")

    def delete(self) -> NoReturn:
        raise AuditImmutable("Audit entries are never deleted.")


class AuditEntry(models.Model):
    """One thing an admin, a manager or the system did: who, what, to which, and how it ended.

    Written only by ``opsdash.core.audit.record``; append-only.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: The actor's username when the entry was written; it outlives the user. Empty: the system.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True, help_text="dotted, e.g. model.retire")
    target_type = models.CharField(max_length=32, blank=True, db_index=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OK)
    #: A sentence (a JSON string) or an object of named values.
    detail = models.JSONField(default=str, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["target_type", "target_id"], name="core_audit_target")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise AuditImmutable("Audit entries are never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditImmutable("Audit entries are never deleted.")

    @property
    def actor_label(self) -> str:
        return self.actor_name or "system"

    @property
    def detail_text(self) -> str:
        """The detail as one line: the sentence, or ``name: value`` pairs."""
        if isinstance(self.detail, dict):
            return "; ".join(f"{key}: {_shown(value)}" for key, value in self.detail.items())
        return "" if self.detail is None else str(self.detail)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor_name or None,
            "action": self.action,
            "target": {"type": self.target_type, "id": self.target_id, "label": self.target_label},
            "outcome": self.outcome,
            "detail": self.detail,
        }


def _shown(value: Any) -> str:
    """A detail value for people: a nested object as ``name value, …``, not Python's repr."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(inner)}" for key, inner in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_shown(inner) for inner in value)
    return str(value)
