"""Nodes (the GPU machines an agent runs on), the tokens that enroll them, and which models are
placed on which node.

Desired state (approved, draining, placements) lives here and is sent to an agent on every
reconnect, so a node that comes back converges by itself. ``Node.status`` is the last state the
hub recorded; ``opsdash.fleet.services`` moves it (heartbeats, the health sweep, admins) and
audits every transition.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from opsdash.catalog.models import LocalModel

#: Node names are also channel-layer group names (``protocol.node_group``) and URL segments.
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
node_name_validator = RegexValidator(
    NODE_NAME_PATTERN,
    "A node name is 1–63 letters, digits, dots, hyphens or underscores, starting with a letter "
    "or digit.",
)


class NodeToken(models.Model):
    """An enrollment secret (``manage.py create_node_token``): an agent presents it once to
    register, and then holds a credential of its own. Stored as a hash; revocable."""

    name = models.CharField(max_length=120, blank=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="the first characters, to recognize it")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or self.prefix


class NodeStatus(models.TextChoices):
    PENDING = "pending"  # registered, waiting for an admin's approval
    HEALTHY = "healthy"  # approved, heartbeat within NODE_UNHEALTHY_SECONDS
    UNHEALTHY = "unhealthy"  # no heartbeat for NODE_UNHEALTHY_SECONDS
    OFFLINE = "offline"  # no heartbeat for NODE_OFFLINE_SECONDS
    DRAINING = "draining"  # an admin drained it: finishes what it has, takes nothing new


class Node(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[node_name_validator])
    status = models.CharField(
        max_length=12, choices=NodeStatus.choices, default=NodeStatus.PENDING, db_index=True
    )
    # Desired state, set by admins.
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    draining = models.BooleanField(default=False)
    # The node's own identity, given once at registration (hash of the secret the agent keeps).
    credential_hash = models.CharField(max_length=64, blank=True, db_index=True)
    enrolled_with = models.ForeignKey(
        NodeToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="nodes"
    )
    # What the agent last reported.
    last_seen = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=40, blank=True)
    address = models.CharField(max_length=64, blank=True, help_text="the agent's peer address")
    cpu_count = models.IntegerField(null=True, blank=True)
    memory_total_bytes = models.BigIntegerField(null=True, blank=True)
    gpus = models.JSONField(default=list, blank=True)
    loaded = models.JSONField(default=list, blank=True)
    queue_length = models.IntegerField(default=0)
    # The hub process holding the node's socket (its channel name), "" while none does.
    connected_via = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PlacementStatus(models.TextChoices):
    PENDING = "pending"  # asked for; the node has not started (it may be offline)
    FETCHING = "fetching"  # the agent is downloading the file from the hub
    LOADING = "loading"  # the agent is trial-loading it
    READY = "ready"  # requests for the model may be routed to the node
    FAILED = "failed"  # ``error`` says why
    REMOVING = "removing"  # asked to go; the agent deletes its copy


class Placement(models.Model):
    """One model deployed to one node."""

    model = models.ForeignKey(LocalModel, on_delete=models.CASCADE, related_name="placements")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="placements")
    status = models.CharField(
        max_length=12, choices=PlacementStatus.choices, default=PlacementStatus.PENDING
    )
    error = models.TextField(blank=True)
    bytes_done = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node__name"]
        constraints = [
            models.UniqueConstraint(fields=["model", "node"], name="one_placement_per_node")
        ]

    def __str__(self) -> str:
        return f"{self.model_id} on {self.node_id} ({self.status})"
