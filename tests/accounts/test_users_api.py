"""GET/POST /api/users and GET/PATCH /api/users/{id}: admins only, every refusal a sentence."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from opsdash.accounts import users
from opsdash.accounts.services import create_token, user_for_token
from opsdash.core.audit import entries

pytestmark = pytest.mark.django_db


def _bearer(user: User) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=user, name='script').secret}"}


def _post(client: Client, body: object, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/api/users", json.dumps(body), content_type="application/json", **headers)


def _patch(client: Client, pk: int, body: object, **headers: str):  # type: ignore[no-untyped-def]
    return client.patch(
        f"/api/users/{pk}", json.dumps(body), content_type="application/json", **headers
    )


def test_an_admin_script_creates_a_user_and_gets_the_one_time_link(admin, settings):
    settings.SMTP_HOST = ""
    response = _post(
        Client(),
        {"username": "grace", "email": "grace@example.com", "roles": ["operator"]},
        **_bearer(admin),
    )

    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "grace" and body["roles"] == ["operator"]
    assert body["sign_in"] == "invited" and body["is_active"] is True
    assert body["mailed"] is False and "Mail is not configured" in body["mail_note"]
    path = "/" + body["set_password_url"].split("/", 3)[3]
    assert Client().get(path).status_code == 200
    assert entries(action="user.create").get().actor_name == "ada"


def test_the_list_answers_items_and_count(as_admin, operator, manager):
    body = as_admin.get("/api/users?limit=2").json()
    assert body["count"] == 3
    assert [u["username"] for u in body["items"]] == ["ada", "mona"]
    assert body["items"][0]["roles"] == ["admin"] and body["items"][0]["sign_in"] == "local"
    assert as_admin.get("/api/users?offset=2").json()["items"][0]["username"] == "otto"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"username": "otto", "roles": ["operator"]}, 409, "already a user named “otto”"),
        ({"username": "g", "roles": ["wizard"]}, 400, "Unknown role 'wizard'"),
        ({"username": "g", "email": "g@", "roles": ["admin"]}, 400, "not an email address"),
        ({"username": "g", "roles": []}, 400, "at least one role"),
        ({"roles": ["admin"]}, 422, "username"),
        ({"username": "g", "roles": "admin"}, 422, "roles"),
    ],
)
def test_create_refuses_with_a_sentence(as_admin, operator, body, status, words):
    response = _post(as_admin, body)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert not User.objects.filter(username="g").exists()


def test_patch_changes_email_and_roles(as_admin, operator):
    response = _patch(as_admin, operator.pk, {"email": "o@example.com", "roles": ["manager"]})
    assert response.status_code == 200
    assert response.json()["email"] == "o@example.com"
    assert response.json()["roles"] == ["manager"]
    assert users.role_names(User.objects.get(pk=operator.pk)) == ["manager"]


def test_patch_is_active_false_ends_sessions_and_revokes_tokens(as_admin, operator):
    issued = create_token(user=operator, name="nightly")
    browser = Client()
    browser.force_login(operator)

    response = _patch(as_admin, operator.pk, {"is_active": False})

    assert response.status_code == 200 and response.json()["is_active"] is False
    assert user_for_token(issued.secret) is None
    assert "/accounts/login/" in browser.get("/playground/")["Location"]
    back = _patch(as_admin, operator.pk, {"is_active": True})
    assert back.json()["is_active"] is True


def test_patch_applies_all_or_nothing(as_admin, admin):
    # The email is fine, the roles would leave no admin: neither is applied.
    response = _patch(as_admin, admin.pk, {"email": "ada@example.com", "roles": ["operator"]})
    assert response.status_code == 409
    assert "last active admin" in response.json()["detail"]
    assert User.objects.get(pk=admin.pk).email == ""
    assert not entries(action="user.email").exists()


def test_patch_of_yourself_inactive_is_refused(as_admin, admin, operator):
    _patch(as_admin, operator.pk, {"roles": ["admin"]})
    response = _patch(as_admin, admin.pk, {"is_active": False})
    assert response.status_code == 409
    assert "cannot deactivate yourself" in response.json()["detail"]


def test_unknown_user_is_404_and_a_bad_id_422(as_admin):
    assert _patch(as_admin, 999999, {"email": ""}).status_code == 404
    assert as_admin.get("/api/users/999999").status_code == 404
    assert as_admin.get("/api/users/0").status_code == 422


@pytest.mark.parametrize("persona", ["operator", "manager"])
def test_only_admins_may_use_it(persona, request, admin):
    headers = _bearer(request.getfixturevalue(persona))
    assert Client().get("/api/users", **headers).status_code == 403
    assert _post(Client(), {"username": "x", "roles": ["admin"]}, **headers).status_code == 403
    assert _patch(Client(), admin.pk, {"is_active": False}, **headers).status_code == 403
    assert Client().get("/api/users").status_code == 401
    assert User.objects.get(pk=admin.pk).is_active


def test_the_schema_declares_the_statuses(as_admin):
    schema = as_admin.get("/api/openapi.json").json()
    post = schema["paths"]["/api/users"]["post"]["responses"]
    patch = schema["paths"]["/api/users/{user_id}"]["patch"]["responses"]
    assert {"201", "400", "401", "403", "409", "422"} <= set(post)
    assert {"200", "400", "404", "409", "422"} <= set(patch)
