from __future__ import annotations

from django.urls import path

from opsdash.playground import suite_views as views

app_name = "suites"
urlpatterns = [
    path("", views.suite_list, name="index"),
    path("new/", views.suite_create, name="create"),
    path("<int:pk>/", views.suite_detail, name="suite"),
    path("<int:pk>/edit/", views.suite_edit, name="edit"),
    path("<int:pk>/run/", views.suite_run_start, name="run"),
    path("runs/<int:pk>/", views.suite_run_detail, name="result"),
    path("models/<int:model_id>/", views.model_history, name="model_history"),
]
