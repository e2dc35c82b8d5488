from __future__ import annotations

from django.urls import path

from opsdash.core import views

app_name = "core"
urlpatterns = [
    path("", views.audit_page, name="audit"),
]
