from __future__ import annotations

from django.urls import path

from opsdash.accounts import oidc, user_views, views
from opsdash.accounts.permissions import public

app_name = "accounts"
urlpatterns = [
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="revoke_token"),
    path("lockouts/", views.lockouts, name="lockouts"),
    # People (issue 13): users and roles for admins, passwords for everyone.
    path("users/", user_views.user_list, name="users"),
    path("users/new/", user_views.user_create, name="user_create"),
    path("users/<int:pk>/", user_views.user_detail, name="user_detail"),
    path("users/<int:pk>/deactivate/", user_views.user_deactivate, name="user_deactivate"),
    path("users/<int:pk>/reactivate/", user_views.user_reactivate, name="user_reactivate"),
    path(
        "users/<int:pk>/reset-password/",
        user_views.user_reset_password,
        name="user_reset_password",
    ),
    path("password/", user_views.password_change, name="password_change"),
    path("set-password/<uidb64>/<token>/", user_views.set_password, name="set_password"),
    # Single sign-on (issue 13): 404 while OPSDASH_OIDC_ISSUER is unset.
    path("oidc/start/", public(oidc.start), name="oidc_start"),
    path("oidc/callback/", public(oidc.callback), name="oidc_callback"),
]
