from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path

from tests.oidc_provider import control

urlpatterns = [
    path("login/", LoginView.as_view(template_name="provider_login.html")),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("control/redirect-uris/", control.redirect_uris),
    path("control/groups/<str:username>/", control.groups),
]
