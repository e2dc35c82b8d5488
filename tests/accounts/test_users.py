"""People: admins create users (a one-time link to choose a password), change roles, deactivate
and reactivate them, reset passwords; everyone changes their own. Services and pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from opsdash.accounts import users
from opsdash.accounts.models import OidcIdentity
from opsdash.accounts.services import create_token, user_for_token
from opsdash.core.audit import entries
from opsdash.core.errors import Code
from tests.fixtures.personas import PASSWORD, client_for
from tests.notify.conftest import Mailbox, smtp  # noqa: F401  (the real SMTP server fixture)

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new pass phrase 42"


def _signed_in(username: str, password: str = PASSWORD) -> Client:
    """A client signed in through the real sign-in form (a session in the store, not forced)."""
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302, "sign-in failed"
    return client


def _can_sign_in(username: str, password: str) -> bool:
    response = Client().post("/accounts/login/", {"username": username, "password": password})
    return response.status_code == 302


def _link_path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _is_login_page(response) -> bool:  # type: ignore[no-untyped-def]
    return response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- services ------------------------------------------------------------------------------


def test_create_user_gives_roles_no_password_and_a_one_time_link(admin, settings):
    settings.PUBLIC_URL = "https://ops.example.com"
    user, url = users.create_user(
        username="grace", email="grace@example.com", roles=["operator", "manager"], by=admin
    )

    assert users.role_names(user) == ["manager", "operator"]
    assert not user.has_usable_password() and user.is_active
    assert users.sign_in_kind(user) == "invited"
    assert url.startswith("https://ops.example.com/accounts/set-password/")
    entry = entries(action="user.create").get()
    assert (entry.actor_name, entry.target_label) == ("ada", "grace")
    assert entry.detail == {"email": "grace@example.com", "roles": ["manager", "operator"]}


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"username": "ADA"}, Code.CONFLICT, "already a user named “ADA”"),
        ({"roles": ["operator", "root"]}, Code.INVALID_PARAM, "Unknown role 'root'"),
        ({"roles": []}, Code.INVALID_PARAM, "at least one role"),
        ({"email": "not-an-address"}, Code.INVALID_PARAM, "is not an email address"),
        ({"username": "has space"}, Code.INVALID_PARAM, "is not a valid username"),
        ({"username": "  "}, Code.INVALID_PARAM, "Give a username"),
    ],
)
def test_create_user_refuses_bad_input_with_a_sentence(admin, kwargs, code, words):
    fields = {"username": "grace", "email": "", "roles": ["operator"]} | kwargs
    with pytest.raises(users.UserRefused) as refused:
        users.create_user(**fields, by=admin)
    assert refused.value.code == code
    assert words in refused.value.reason
    assert not User.objects.filter(username="grace").exists()


def test_set_roles_replaces_the_roles_and_audits_before_and_after(admin, operator):
    users.set_roles(user=operator, roles=["manager"], by=admin)

    assert users.role_names(User.objects.get(pk=operator.pk)) == ["manager"]
    assert entries(action="user.roles").get().detail == {
        "before": ["operator"],
        "after": ["manager"],
    }


def test_set_roles_keeps_groups_that_are_not_roles(admin, operator):
    extra = Group.objects.create(name="night-shift")
    operator.groups.add(extra)
    users.set_roles(user=operator, roles=["admin"], by=admin)
    assert set(operator.groups.values_list("name", flat=True)) == {"admin", "night-shift"}


def test_the_last_admin_keeps_the_admin_role_and_cannot_be_deactivated(admin, operator):
    with pytest.raises(users.UserRefused) as refused:
        users.set_roles(user=admin, roles=["operator"], by=admin)
    assert refused.value.code == Code.CONFLICT
    assert "last active admin" in refused.value.reason

    with pytest.raises(users.UserRefused) as refused:
        users.deactivate_user(user=admin, by=None)  # a command, not the admin themselves
    assert "last active admin" in refused.value.reason
    assert User.objects.get(pk=admin.pk).is_active

    # With a second admin, the first may step down.
    users.set_roles(user=operator, roles=["admin"], by=admin)
    users.set_roles(user=admin, roles=["operator"], by=admin)
    assert users.role_names(User.objects.get(pk=admin.pk)) == ["operator"]


def test_an_admin_cannot_deactivate_themselves(admin, operator):
    users.set_roles(user=operator, roles=["admin"], by=admin)  # not the last admin
    with pytest.raises(users.UserRefused) as refused:
        users.deactivate_user(user=admin, by=admin)
    assert "cannot deactivate yourself" in refused.value.reason


def test_only_a_superuser_may_change_a_superuser(admin):
    root = User.objects.create_superuser("root", password=PASSWORD)
    for change in (
        lambda: users.deactivate_user(user=root, by=admin),
        lambda: users.password_reset_link(user=root, by=admin),
        lambda: users.set_roles(user=root, roles=["operator"], by=admin),
    ):
        with pytest.raises(users.UserRefused) as refused:
            change()
        assert "only a superuser may change them" in refused.value.reason
    assert users.password_reset_link(user=root, by=root)


def test_deactivating_ends_a_live_session_and_revokes_the_tokens(admin, operator):
    browser = _signed_in("otto")
    assert browser.get("/playground/").status_code == 200
    issued = create_token(user=operator, name="nightly")
    assert user_for_token(issued.secret) == operator

    users.deactivate_user(user=operator, by=admin)

    assert _is_login_page(browser.get("/playground/"))
    assert user_for_token(issued.secret) is None
    api = Client().get("/api/runs", HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert api.status_code == 401
    entry = entries(action="user.deactivate").get()
    assert entry.detail == {"sessions_ended": 1, "tokens_revoked": 1}
    assert entries(action="token.revoke").get().actor_name == "ada"


def test_deactivating_leaves_other_peoples_sessions_alone(admin, operator, manager):
    other = _signed_in("mona")
    users.deactivate_user(user=operator, by=admin)
    assert other.get("/savings/").status_code == 200


def test_a_reactivated_user_signs_in_again_but_old_tokens_stay_revoked(admin, operator):
    issued = create_token(user=operator, name="old")
    users.deactivate_user(user=operator, by=admin)
    assert not _can_sign_in("otto", PASSWORD)

    users.reactivate_user(user=operator, by=admin)

    assert _can_sign_in("otto", PASSWORD)
    assert user_for_token(issued.secret) is None
    assert [e.action for e in entries(action=["user.deactivate", "user.reactivate"])] == [
        "user.reactivate",
        "user.deactivate",
    ]


def test_a_set_password_link_works_once(admin):
    user, url = users.create_user(username="grace", email="", roles=["operator"], by=admin)
    anonymous = Client()
    page = anonymous.get(_link_path(url))
    assert page.status_code == 200 and "Choose a password" in page.content.decode()

    short = anonymous.post(_link_path(url), {"new_password1": "abc", "new_password2": "abc"})
    assert short.status_code == 400 and "too short" in short.content.decode()

    done = anonymous.post(
        _link_path(url), {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/login/"
    assert _can_sign_in("grace", NEW_PASSWORD)
    assert users.sign_in_kind(User.objects.get(pk=user.pk)) == "local"
    assert entries(action="user.password_set").get().actor_name == "grace"

    again = anonymous.get(_link_path(url))
    assert again.status_code == 410 and "no longer works" in again.content.decode()
    reused = anonymous.post(
        _link_path(url),
        {"new_password1": "another pass 77 x", "new_password2": "another pass 77 x"},
    )
    assert reused.status_code == 410
    assert _can_sign_in("grace", NEW_PASSWORD)


def test_a_reset_link_keeps_the_old_password_until_used_and_not_for_deactivated_users(
    admin, operator
):
    url = users.password_reset_link(user=operator, by=admin)
    assert _can_sign_in("otto", PASSWORD)
    # Signing in changed last_login, which the token hashes: a link is for someone who cannot.
    assert Client().get(_link_path(url)).status_code == 410

    url = users.password_reset_link(user=operator, by=admin)
    users.deactivate_user(user=operator, by=admin)
    assert Client().get(_link_path(url)).status_code == 410
    with pytest.raises(users.UserRefused, match="reactivate them first"):
        users.password_reset_link(user=operator, by=admin)
    assert entries(action="user.password_reset").count() == 2


def test_a_garbled_link_answers_the_expired_page():
    assert Client().get("/accounts/set-password/zz/bad-token/").status_code == 410


def test_the_invite_is_mailed_when_smtp_is_configured(admin, smtp: Mailbox):  # noqa: F811
    user, url = users.create_user(
        username="grace", email="grace@example.com", roles=["operator"], by=admin
    )
    mailed = users.mail_set_password_link(user=user, url=url, invited=True, by=admin)

    assert mailed.sent and "grace@example.com" in mailed.note
    (message,) = smtp.messages
    assert message["To"] == "grace@example.com"
    assert message["Subject"] == "Your OpsDash account"
    assert url in message.get_payload(decode=True).decode()


def test_without_smtp_the_note_says_to_hand_the_link_over(admin, settings):
    settings.SMTP_HOST = ""
    user, url = users.create_user(
        username="grace", email="grace@example.com", roles=["operator"], by=admin
    )
    mailed = users.mail_set_password_link(user=user, url=url, invited=True, by=admin)
    assert not mailed.sent and "Mail is not configured" in mailed.note


# --- pages ---------------------------------------------------------------------------------


def test_the_users_page_lists_everyone_with_roles_status_and_sign_in(
    as_admin, operator, django_assert_max_num_queries
):
    User.objects.create_user("gone", is_active=False)
    sso = User.objects.create_user("sam")  # made by single sign-on: a provider identity
    OidcIdentity.objects.create(user=sso, issuer="https://idp.example.com", subject="s-1")
    User.objects.filter(pk=sso.pk).update(last_login="2026-01-02T03:04:05Z", email="s@x.org")

    with django_assert_max_num_queries(12):  # not one query per user
        page = as_admin.get("/accounts/users/").content.decode()

    table = page.split('data-testid="users"')[1].split("</table>")[0]
    assert table.index(">ada<") < table.index(">gone<") < table.index(">otto<")
    otto = table.split(">otto<")[1].split("</tr>")[0]
    assert "operator" in otto and "active" in otto and "password" in otto
    gone = table.split(">gone<")[1].split("</tr>")[0]
    assert "deactivated" in gone and "invited, no password yet" in gone
    sam = table.split(">sam<")[1].split("</tr>")[0]
    assert "single sign-on" in sam and "s@x.org" in sam and "2026-01-02 03:04" in sam


def test_the_add_form_creates_a_user_and_shows_the_link_once(as_admin, settings):
    settings.SMTP_HOST = ""
    response = as_admin.post(
        "/accounts/users/new/", {"username": "grace", "email": "", "roles": ["operator"]}
    )
    assert response.status_code == 201
    page = response.content.decode()
    url = page.split('id="set-password-url">')[1].split("<")[0]
    assert "/accounts/set-password/" in url
    assert "give them the link yourself" in page
    assert url not in as_admin.get("/accounts/users/").content.decode()
    assert Client().get(_link_path(url)).status_code == 200


def test_the_add_form_says_what_is_wrong_next_to_the_field(as_admin):
    response = as_admin.post(
        "/accounts/users/new/", {"username": "otto2", "email": "nope", "roles": ["operator"]}
    )
    assert response.status_code == 400
    assert "“nope” is not an email address" in response.content.decode()
    assert not User.objects.filter(username="otto2").exists()


def test_the_edit_page_saves_email_and_roles(as_admin, operator):
    response = as_admin.post(
        f"/accounts/users/{operator.pk}/",
        {"email": "otto@example.com", "roles": ["operator", "manager"]},
    )
    assert response.status_code == 302
    otto = User.objects.get(pk=operator.pk)
    assert otto.email == "otto@example.com" and users.role_names(otto) == ["manager", "operator"]
    assert "Saved “otto”" in as_admin.get(response["Location"]).content.decode()


def test_the_edit_page_refuses_to_demote_the_last_admin(as_admin, admin):
    response = as_admin.post(f"/accounts/users/{admin.pk}/", {"email": "", "roles": ["operator"]})
    assert response.status_code == 400
    assert "the last active admin" in response.content.decode()
    assert users.role_names(User.objects.get(pk=admin.pk)) == ["admin"]


def test_deactivate_and_reactivate_buttons(as_admin, admin, operator):
    victim = _signed_in("otto")
    done = as_admin.post(f"/accounts/users/{operator.pk}/deactivate/", follow=True)
    assert "is deactivated: signed out everywhere" in done.content.decode()
    assert _is_login_page(victim.get("/playground/"))

    done = as_admin.post(f"/accounts/users/{operator.pk}/reactivate/", follow=True)
    assert "may sign in again" in done.content.decode()
    assert User.objects.get(pk=operator.pk).is_active

    mine = as_admin.post(f"/accounts/users/{admin.pk}/deactivate/", follow=True)
    assert "You cannot deactivate yourself" in mine.content.decode()


def test_the_reset_button_shows_a_new_link(as_admin, operator, settings):
    settings.SMTP_HOST = ""
    page = as_admin.post(f"/accounts/users/{operator.pk}/reset-password/").content.decode()
    url = page.split('id="set-password-url">')[1].split("<")[0]
    assert "current password keeps working" in page
    Client().post(_link_path(url), {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert _can_sign_in("otto", NEW_PASSWORD)


@pytest.mark.parametrize("persona", ["operator", "manager"])
def test_only_admins_see_the_users_pages(persona, request, admin):
    client = client_for(request.getfixturevalue(persona))
    assert client.get("/accounts/users/").status_code == 403
    assert client.post("/accounts/users/new/", {"username": "x"}).status_code == 403
    assert client.post(f"/accounts/users/{admin.pk}/deactivate/").status_code == 403


def test_a_user_changes_their_own_password_and_other_sessions_end(operator):
    here, elsewhere = _signed_in("otto"), _signed_in("otto")

    wrong = here.post(
        "/accounts/password/",
        {"old_password": "nope", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 400 and "old password was entered incorrectly" in (
        wrong.content.decode()
    )
    common = here.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"},
    )
    assert common.status_code == 400 and "too common" in common.content.decode()

    done = here.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        follow=True,
    )
    assert "Your password is changed" in done.content.decode()
    assert here.get("/playground/").status_code == 200
    assert _is_login_page(elsewhere.get("/playground/"))
    assert _can_sign_in("otto", NEW_PASSWORD)
    assert entries(action="user.password_change").get().actor_name == "otto"


def test_a_single_sign_on_user_is_told_to_change_the_password_at_the_provider(db):
    sso = User.objects.create_user("sam")
    OidcIdentity.objects.create(user=sso, issuer="https://idp.example.com", subject="s-1")
    sso.groups.add(Group.objects.get_or_create(name="operator")[0])
    page = client_for(sso).get("/accounts/password/").content.decode()
    assert "change it there" in page and "old_password" not in page
