from __future__ import annotations

from django.urls import path

from opsdash.playground import views

app_name = "playground"
urlpatterns = [
    path("", views.index, name="index"),
    path("compare/", views.compare, name="compare"),
    path("history/", views.history, name="history"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
]
