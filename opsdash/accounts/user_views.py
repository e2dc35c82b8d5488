"""The Users pages (admins) and the password pages (everyone): thin callers of
``opsdash.accounts.users``.

A one-time link is shown on the page that made it and nowhere else (as a new API token is), so
the create and reset actions answer a page instead of redirecting.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from opsdash.accounts import users
from opsdash.accounts.permissions import public, requires
from opsdash.accounts.roles import Cap, Role
from opsdash.notify.mail import smtp_configured
from opsdash.typing import AuthedRequest

ROLE_CHOICES = [
    (Role.OPERATOR.value, "operator — playground, suites, telemetry, nodes"),
    (Role.ADMIN.value, "admin — models, workflows, keys, users, everything"),
    (Role.MANAGER.value, "manager — savings, workflows (read)"),
]


def _user_for_admin(pk: int) -> User:
    return get_object_or_404(User, pk=pk)


class UserForm(forms.Form):
    """The fields only; the rules (taken names, unknown roles, last admin) live in users.py."""

    username = forms.CharField(max_length=150, required=False)
    email = forms.CharField(max_length=254, required=False)
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )


def _refused(form: forms.Form, exc: users.UserRefused) -> None:
    field = exc.param if exc.param in form.fields else None
    form.add_error(field, exc.reason)


def _listing() -> list[User]:
    return list(users.with_sign_in(User.objects.order_by("username")))


def _rows(found: list[User]) -> list[dict[str, object]]:
    return [
        {
            "user": user,
            "roles": users.role_names(user),
            "sign_in": users.sign_in_kind(user),
        }
        for user in found
    ]


def _list_page(request: AuthedRequest, form: UserForm, *, status: int = 200) -> HttpResponse:
    context = {
        "rows": _rows(_listing()),
        "form": form,
        "smtp_configured": smtp_configured(),
        "valid_for": users.link_valid_for(),
    }
    return render(request, "accounts/users.html", context, status=status)


def _link_page(
    request: AuthedRequest, *, user: User, url: str, invited: bool, status: int = 200
) -> HttpResponse:
    mailed = users.mail_set_password_link(user=user, url=url, invited=invited, by=request.user)
    context = {
        "subject": user,
        "url": url,
        "invited": invited,
        "mailed": mailed,
        "valid_for": users.link_valid_for(),
    }
    return render(request, "accounts/users_link.html", context, status=status)


@requires(Cap.MANAGE_USERS)
@require_http_methods(["GET"])
def user_list(request: AuthedRequest) -> HttpResponse:
    """Every user, and the form that creates one."""
    return _list_page(request, UserForm(initial={"roles": [Role.OPERATOR.value]}))


@requires(Cap.MANAGE_USERS)
@require_POST
def user_create(request: AuthedRequest) -> HttpResponse:
    """Create a user and show the one-time link to set their password (mailed when possible)."""
    form = UserForm(request.POST)
    if form.is_valid():
        try:
            user, url = users.create_user(
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                roles=form.cleaned_data["roles"],
                by=request.user,
            )
        except users.UserRefused as exc:
            _refused(form, exc)
        else:
            return _link_page(request, user=user, url=url, invited=True, status=201)
    return _list_page(request, form, status=400)


def _detail_page(
    request: AuthedRequest, subject: User, form: UserForm, *, status: int = 200
) -> HttpResponse:
    context = {
        "subject": subject,
        "form": form,
        "sign_in": users.sign_in_kind(subject),
        "is_self": subject.pk == request.user.pk,
        "tokens": subject.api_tokens.filter(revoked_at__isnull=True).count(),
    }
    return render(request, "accounts/users_detail.html", context, status=status)


@requires(Cap.MANAGE_USERS)
@require_http_methods(["GET", "POST"])
def user_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    """One user: POST saves their email and roles."""
    subject = _user_for_admin(pk)
    if request.method == "GET":
        initial = {"email": subject.email, "roles": users.role_names(subject)}
        return _detail_page(request, subject, UserForm(initial=initial))
    form = UserForm(request.POST)
    if form.is_valid():
        try:
            subject = users.set_email(
                user=subject, email=form.cleaned_data["email"], by=request.user
            )
            subject = users.set_roles(
                user=subject, roles=form.cleaned_data["roles"], by=request.user
            )
        except users.UserRefused as exc:
            _refused(form, exc)
        else:
            messages.success(request, f"Saved “{subject.get_username()}”.")
            return redirect("accounts:user_detail", pk=subject.pk)
    return _detail_page(request, subject, form, status=400)


@requires(Cap.MANAGE_USERS)
@require_POST
def user_deactivate(request: AuthedRequest, pk: int) -> HttpResponse:
    subject = _user_for_admin(pk)
    try:
        users.deactivate_user(user=subject, by=request.user)
    except users.UserRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            f"“{subject.get_username()}” is deactivated: signed out everywhere, their API "
            "tokens revoked, and they can no longer sign in.",
        )
    return redirect("accounts:user_detail", pk=subject.pk)


@requires(Cap.MANAGE_USERS)
@require_POST
def user_reactivate(request: AuthedRequest, pk: int) -> HttpResponse:
    subject = _user_for_admin(pk)
    try:
        users.reactivate_user(user=subject, by=request.user)
    except users.UserRefused as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(
            request,
            f"“{subject.get_username()}” may sign in again. Their old API tokens stay revoked.",
        )
    return redirect("accounts:user_detail", pk=subject.pk)


@requires(Cap.MANAGE_USERS)
@require_POST
def user_reset_password(request: AuthedRequest, pk: int) -> HttpResponse:
    """A new one-time link for the user to choose a password, shown once."""
    subject = _user_for_admin(pk)
    try:
        url = users.password_reset_link(user=subject, by=request.user)
    except users.UserRefused as exc:
        messages.error(request, exc.reason)
        return redirect("accounts:user_detail", pk=subject.pk)
    return _link_page(request, user=subject, url=url, invited=False)


# Every role may change its own password; a signed-in user without any role has no pages to
# protect, so the capability every role holds is the check (and the URL walk can prove it).
@requires(Cap.USE_API_TOKENS)
@require_http_methods(["GET", "POST"])
def password_change(request: AuthedRequest) -> HttpResponse:
    """The signed-in user changes their own password (Django's validators apply)."""
    sso = not request.user.has_usable_password()
    form = PasswordChangeForm(request.user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and not sso and form.is_valid():
        users.set_password(
            user=request.user,
            password=form.cleaned_data["new_password1"],
            by=request.user,
            via="self",
        )
        # Keep this session; the user's other sessions end with the old password's hash.
        update_session_auth_hash(request, request.user)
        messages.success(request, "Your password is changed. Your other sessions are signed out.")
        return redirect("accounts:password_change")
    status = 400 if request.method == "POST" else 200
    return render(
        request, "accounts/password_change.html", {"form": form, "sso": sso}, status=status
    )


@public
@require_http_methods(["GET", "POST"])
def set_password(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """Where a one-time link leads: choose a password, once. No sign-in needed: the link is the
    proof, and it stops working as soon as the password is set."""
    user = users.user_for_link(uidb64=uidb64, token=token)
    if user is None:
        return render(request, "accounts/password_set.html", {"expired": True}, status=410)
    form = SetPasswordForm(user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        users.set_password(
            user=user, password=form.cleaned_data["new_password1"], by=None, via="link"
        )
        messages.success(request, f"Your password is set. Sign in as “{user.get_username()}”.")
        return redirect("accounts:login")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "subject": user, "expired": False}
    return render(request, "accounts/password_set.html", context, status=status)
