from __future__ import annotations

from django.http import HttpRequest

from opsdash.accounts.roles import capabilities_of, roles_of


def roles(request: HttpRequest) -> dict[str, object]:
    """``caps`` and ``roles``, so navigation shows only what the user may use."""
    user = request.user
    return {
        "caps": {str(cap) for cap in capabilities_of(user)},
        "roles": sorted(str(role) for role in roles_of(user)),
    }
