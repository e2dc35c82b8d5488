"""Test-only controls of the provider: where it may send users back, and a user's groups.

The fixture calls these over HTTP (with the token it started the provider with), so a test can
change a group at the provider and see OpsDash apply it at the next sign-in.
"""

from __future__ import annotations

import json
import os

from django.contrib.auth.models import Group, User
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from oauth2_provider.models import get_application_model


def _allowed(request: HttpRequest) -> bool:
    return request.headers.get("X-Control-Token") == os.environ["PROVIDER_CONTROL_TOKEN"]


@csrf_exempt
@require_POST
def redirect_uris(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponseForbidden()
    body = json.loads(request.body)
    get_application_model().objects.filter(client_id=os.environ["PROVIDER_CLIENT_ID"]).update(
        redirect_uris=" ".join(body["uris"]),
        post_logout_redirect_uris=" ".join(body.get("after_logout", [])),
    )
    return HttpResponse("ok")


@csrf_exempt
@require_POST
def groups(request: HttpRequest, username: str) -> HttpResponse:
    if not _allowed(request):
        return HttpResponseForbidden()
    user = User.objects.get(username=username)
    names = json.loads(request.body)["groups"]
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in names])
    return HttpResponse("ok")
