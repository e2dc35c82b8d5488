from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from opsdash.accounts import oidc, services
from opsdash.accounts.models import ApiToken
from opsdash.accounts.permissions import public, requires
from opsdash.accounts.roles import Cap
from opsdash.typing import AuthedRequest


class _SignInView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True
    authentication_form = oidc.SignInForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        # Per request, not as_view(extra_context=…): read once at import it would miss a
        # test's settings override.
        return {**super().get_context_data(**kwargs), **oidc.sign_in_options()}


login = public(_SignInView.as_view())


class _SignOutView(auth_views.LogoutView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        at_provider = oidc.provider_logout_url(request)
        response = super().post(request, *args, **kwargs)
        return redirect(at_provider) if at_provider else response


logout = public(_SignOutView.as_view())


def locked_out(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """django-axes' lockout answer (``AXES_LOCKOUT_CALLABLE``): the sign-in page, saying the
    account is locked and for how long, with 429 for scripts."""
    cool_off = get_cool_off(request)
    minutes = max(1, round(cool_off.total_seconds() / 60)) if cool_off else None
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "locked_out_minutes": minutes,
        "next": request.POST.get("next", ""),
        **oidc.sign_in_options(),
    }
    return render(request, "accounts/login.html", context, status=429)


@requires(Cap.USE_API_TOKENS)
@require_http_methods(["GET", "POST"])
def tokens(request: AuthedRequest) -> HttpResponse:
    """List the user's personal tokens; POST issues one and shows its secret once."""
    new_secret = None
    if request.method == "POST":
        issued = services.create_token(user=request.user, name=request.POST.get("name", ""))
        new_secret = issued.secret
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "accounts/tokens.html", {"tokens": tokens, "new_secret": new_secret})


@requires(Cap.USE_API_TOKENS)
@require_POST
def revoke_token(request: AuthedRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    services.revoke_token(token=token, user=request.user)
    messages.success(request, f"Token “{token.name}” revoked. Scripts using it now get 401.")
    return redirect("accounts:tokens")


@requires(Cap.MANAGE_USERS)
@require_http_methods(["GET", "POST"])
def lockouts(request: AuthedRequest) -> HttpResponse:
    """Accounts locked by too many wrong passwords; POST ``username`` unlocks one."""
    if request.method == "POST":
        username = request.POST.get("username", "")
        services.unlock_account(username=username, user=request.user)
        messages.success(request, f"“{username}” may sign in again.")
        return redirect("accounts:lockouts")
    context = {"lockouts": services.locked_out_accounts(), "limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "accounts/lockouts.html", context)
