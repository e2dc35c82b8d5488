"""Roles and what each may do: the permission matrix of DESIGN.md in one place.

Roles are Django groups (created by a data migration). Views, API operations and consumers ask
for a *capability*; this table says which roles hold it. Superusers hold every capability.
"""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class Role(StrEnum):
    OPERATOR = "operator"
    ADMIN = "admin"
    MANAGER = "manager"


class Cap(StrEnum):
    VIEW_TELEMETRY = "view_telemetry"
    RUN_PROMPTS = "run_prompts"
    MANAGE_SUITES = "manage_suites"
    VIEW_MODELS = "view_models"
    MANAGE_MODELS = "manage_models"
    VIEW_WORKFLOWS = "view_workflows"
    MANAGE_WORKFLOWS = "manage_workflows"
    VIEW_SAVINGS = "view_savings"
    MANAGE_USERS = "manage_users"
    READ_AUDIT = "read_audit"
    USE_API_TOKENS = "use_api_tokens"
    VIEW_NODES = "view_nodes"
    MANAGE_NODES = "manage_nodes"
    MANAGE_ALERTS = "manage_alerts"
    VIEW_LEDGER = "view_ledger"


MATRIX: dict[Cap, frozenset[Role]] = {
    Cap.VIEW_TELEMETRY: frozenset({Role.OPERATOR, Role.ADMIN}),
    Cap.RUN_PROMPTS: frozenset({Role.OPERATOR, Role.ADMIN}),
    # Operators are the ones who test models, so they write the suites as well as run them.
    Cap.MANAGE_SUITES: frozenset({Role.OPERATOR, Role.ADMIN}),
    # Operators pick models in the playground, so they may see the catalog, not change it.
    Cap.VIEW_MODELS: frozenset({Role.OPERATOR, Role.ADMIN}),
    Cap.MANAGE_MODELS: frozenset({Role.ADMIN}),
    Cap.VIEW_WORKFLOWS: frozenset({Role.ADMIN, Role.MANAGER}),
    Cap.MANAGE_WORKFLOWS: frozenset({Role.ADMIN}),
    Cap.VIEW_SAVINGS: frozenset({Role.ADMIN, Role.MANAGER}),
    Cap.MANAGE_USERS: frozenset({Role.ADMIN}),
    Cap.READ_AUDIT: frozenset({Role.ADMIN}),
    Cap.USE_API_TOKENS: frozenset({Role.OPERATOR, Role.ADMIN, Role.MANAGER}),
    # Operators watch the fleet they test on; only admins enroll, drain and remove nodes.
    Cap.VIEW_NODES: frozenset({Role.OPERATOR, Role.ADMIN}),
    Cap.MANAGE_NODES: frozenset({Role.ADMIN}),
    # Where alerts and reports are delivered (SMTP recipients, webhooks and their secrets).
    Cap.MANAGE_ALERTS: frozenset({Role.ADMIN}),
    # Every run of every source and person (operators see their own in the playground history).
    Cap.VIEW_LEDGER: frozenset({Role.ADMIN}),
}


def roles_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[Role]:
    """The user's roles, cached on the user object for the request."""
    if not user.is_authenticated:
        return frozenset()
    cached: frozenset[Role] | None = getattr(user, "_opsdash_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
        cached = frozenset(role for role in Role if role.value in names)
        user._opsdash_roles = cached  # type: ignore[attr-defined]
    return cached


def can(user: AbstractBaseUser | AnonymousUser, cap: Cap) -> bool:
    """Whether the user holds the capability."""
    if not user.is_authenticated:
        return False
    if getattr(user, "is_superuser", False):
        return True
    return bool(roles_of(user) & MATRIX[cap])


def capabilities_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[Cap]:
    return frozenset(cap for cap in Cap if can(user, cap))
