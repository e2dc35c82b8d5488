"""Request types for views behind a login check (django-htmx's documented pattern)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthedRequest(HttpRequest):
    """A request that passed ``@requires``: the user is signed in; ``htmx`` is always set."""

    user: User
    htmx: HtmxDetails
