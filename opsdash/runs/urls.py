from __future__ import annotations

from django.urls import path

from opsdash.runs import views

app_name = "runs"
urlpatterns = [
    path("models/<int:pk>/runtime/", views.runtime_card, name="runtime_card"),
    path("models/<int:pk>/load/", views.load, name="load"),
    path("models/<int:pk>/unload/", views.unload, name="unload"),
]
