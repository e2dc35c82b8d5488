"""Every URL, every role: the permission matrix of DESIGN.md, proved by walking the URLconf.

A URL whose view carries no capability (``@requires``, ``@api_requires``, ``@public`` or the
gateway's ``@gateway_endpoint``) fails the first test, so a new page cannot slip in unchecked; the
second asks each one as each role.

``GATEWAY_KEY`` marks the OpenAI-compatible ``/v1`` endpoints: a workflow API key opens them, not
a role, so every persona (signed in or not, without a key) must get a 401; ``NODE_CREDENTIAL``
marks what only a fleet node's credential opens (model file fetches), the same way.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver

from opsdash.accounts.permissions import PUBLIC
from opsdash.accounts.roles import MATRIX, Cap
from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel, SourceKind
from opsdash.fleet.files import NODE_CREDENTIAL
from opsdash.gateway.auth import GATEWAY_KEY
from tests.fixtures.personas import client_for
from tests.fixtures.websockets import ws_as

# Routes whose views are not ours to decorate, with the reason they are safe.
NOT_OURS = {"api/": "django-ninja's root: answers 404 (a link to the docs only when DEBUG)"}
PERSONAS = ("anonymous", "outsider", "operator", "admin", "manager")


@dataclass(frozen=True)
class Endpoint:
    route: str
    method: str
    cap: str | None
    is_api: bool


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = ""
) -> Iterator[tuple[str, object]]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        else:
            yield route, entry.callback


def _endpoints() -> list[Endpoint]:
    found = []
    for route, callback in _walk(get_resolver().url_patterns):
        closure = inspect.getclosurevars(callback).nonlocals if inspect.isfunction(callback) else {}
        path_view = closure.get("self")
        if path_view is not None and hasattr(path_view, "operations"):  # a django-ninja path
            for operation in path_view.operations:
                for method in operation.methods:
                    auth = operation.auth_callbacks
                    cap = getattr(auth[0], "cap", None) if auth else None
                    found.append(Endpoint(route, method, cap, True))
        elif route in NOT_OURS:
            continue
        else:
            is_api = route.startswith(("api/", "v1/"))
            found.append(Endpoint(route, "GET", getattr(callback, "opsdash_cap", None), is_api))
    return found


ENDPOINTS = _endpoints()


def test_the_walk_finds_pages_and_api_operations() -> None:
    routes = {e.route for e in ENDPOINTS}
    assert "models/" in routes and "api/models" in routes and "healthz" in routes
    assert "v1/chat/completions" in routes
    assert "audit/" in routes and "api/audit" in routes
    assert len(ENDPOINTS) > 15


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} /{e.route}")
def test_every_url_declares_who_may_use_it(endpoint: Endpoint) -> None:
    assert endpoint.cap is not None, (
        f"/{endpoint.route} has no permission check: decorate its view with @requires(Cap…), "
        f"@api_requires(Cap…), @gateway_endpoint(…), @node_credential or, if it must be "
        f"public, @public."
    )


def _concrete(route: str, model_id: int, token_id: int) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        return (
            str(token_id if "token" in route else model_id) if name in {"pk", "model_id"} else "1"
        )

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", fill, route)


def _expected(cap: str, persona: str) -> str:
    if cap == PUBLIC:
        return "allowed"
    if persona == "anonymous" or cap in (GATEWAY_KEY, NODE_CREDENTIAL):
        return "login"
    roles = {r.value for r in MATRIX[Cap(cap)]}
    return "allowed" if persona in roles else "forbidden"


def _outcome(status: int, location: str) -> str:
    if status == 401 or (status == 302 and "/accounts/login/" in location):
        return "login"
    if status == 403:
        return "forbidden"
    return "allowed"


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_each_role_gets_exactly_what_the_matrix_grants(persona: str, request) -> None:  # type: ignore[no-untyped-def]
    users = {name: User.objects.create_user(name) for name in ("outsider",)}
    for role in ("operator", "admin", "manager"):
        users[role] = request.getfixturevalue(role)
    model = LocalModel.objects.create(
        name="m", slug="m", source_kind=SourceKind.PATH, source_ref="/x"
    )
    token = create_token(user=users.get(persona) or users["admin"], name="t").token
    user = None if persona == "anonymous" else users[persona]

    mismatches = []
    for endpoint in ENDPOINTS:
        client = client_for(user)  # fresh each time: one of the URLs is "sign out"
        url = _concrete(endpoint.route, model.pk, token.pk)
        response = client.generic(endpoint.method, url)
        if response.status_code == 405:
            response = client.post(url)
        got = _outcome(response.status_code, response.get("Location", ""))
        if endpoint.cap == PUBLIC and got == "login":
            got = "allowed"  # public pages may send a visitor on to sign in (home, sign out)
        want = _expected(str(endpoint.cap), persona)
        if got != want:
            mismatches.append(
                f"{endpoint.method} {url}: expected {want}, got {response.status_code}"
            )
        if (
            endpoint.is_api
            and endpoint.cap != PUBLIC
            and (persona == "anonymous" or endpoint.cap in (GATEWAY_KEY, NODE_CREDENTIAL))
        ):
            assert response.status_code == 401, f"{url} must answer 401 to scripts, not redirect"
    assert not mismatches, "\n".join(mismatches)


def _websocket_routes() -> list[tuple[str, object]]:
    from opsdash.routing import websocket_urlpatterns

    return [(str(p.pattern), p.callback) for p in websocket_urlpatterns]


@pytest.mark.parametrize(("route", "consumer"), _websocket_routes(), ids=lambda v: str(v))
def test_every_websocket_declares_who_may_connect(route, consumer) -> None:  # type: ignore[no-untyped-def]
    cap = getattr(getattr(consumer, "consumer_class", None), "required_cap", None)
    assert cap is not None, f"/{route}'s consumer has no required_cap"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", PERSONAS)
async def test_each_role_may_open_exactly_the_websockets_the_matrix_grants(persona, request):  # type: ignore[no-untyped-def]
    from asgiref.sync import sync_to_async

    user = None
    if persona != "anonymous":
        user = await sync_to_async(
            lambda: (
                request.getfixturevalue(persona)
                if persona != "outsider"
                else User.objects.create_user("outsider")
            )
        )()
    for route, consumer in _websocket_routes():
        cap = consumer.consumer_class.required_cap  # type: ignore[attr-defined]
        communicator = await ws_as(user, "/" + route)
        connected, code = await communicator.connect()
        allowed = persona != "anonymous" and _expected(str(cap), persona) == "allowed"
        assert connected == allowed, f"/{route} as {persona}: connected={connected} code={code}"
        await communicator.disconnect()
