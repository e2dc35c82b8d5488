from __future__ import annotations

from django.urls import path

from opsdash.runs import ledger_views, views

app_name = "runs"
urlpatterns = [
    path("", ledger_views.index, name="ledger"),
    path("export.csv", ledger_views.export_csv, name="export_csv"),
    path("<int:pk>/", ledger_views.run_detail, name="run"),
    path("models/<int:pk>/runtime/", views.runtime_card, name="runtime_card"),
    path("models/<int:pk>/load/", views.load, name="load"),
    path("models/<int:pk>/unload/", views.unload, name="unload"),
]
