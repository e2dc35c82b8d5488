from __future__ import annotations

from django.urls import path

from opsdash.limits import views

app_name = "limits"
urlpatterns = [
    path("workflows/<slug:slug>/", views.workflow_limits, name="workflow"),
    path("keys/<int:pk>/", views.key_limits, name="key"),
]
