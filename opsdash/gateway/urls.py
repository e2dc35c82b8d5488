"""The gateway's pages (``/v1`` itself is in ``v1_urls``, at the site root)."""

from __future__ import annotations

from django.urls import path

from opsdash.gateway import views

app_name = "gateway"
urlpatterns = [
    path("", views.index, name="index"),
    path("workflows/<slug:slug>/", views.workflow_keys, name="workflow"),
    path("workflows/<slug:slug>/keys/", views.create_key, name="create_key"),
    path("keys/<int:pk>/revoke/", views.revoke_key, name="revoke_key"),
]
