"""The Content-Security-Policy header (Django 5.2 has none built in).

Pages load scripts, styles, images and fonts from this server only: no CDN, no inline script
(behaviours live in ``static/js``), no inline ``<style>`` elements. Inline ``style=""``
attributes stay allowed (``style-src-attr``): progress bars and charts set widths that way, and
an attribute cannot run code. Websockets go back to the same host.
"""

from __future__ import annotations

import contextlib

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def policy_for(request: HttpRequest) -> str:
    """The header's value: ``POLICY`` plus websockets to the host the page came from."""
    connect = "connect-src 'self'"
    # 'self' covers ws: and wss: in current browsers; naming them keeps older ones working. A
    # host Django does not serve gets its 400 with 'self' alone.
    with contextlib.suppress(DisallowedHost):
        connect += f" {'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    return "; ".join((*POLICY, connect))


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Every response carries the policy unless a view set its own (sync and async alike)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy_for(request)
        return response
