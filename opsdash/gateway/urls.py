"""The gateway's pages (``/v1`` itself is in ``v1_urls``, at the site root)."""

from __future__ import annotations

from django.urls import path

from opsdash.gateway import batch_views, views

app_name = "gateway"
urlpatterns = [
    path("", views.index, name="index"),
    path("workflows/<slug:slug>/", views.workflow_keys, name="workflow"),
    path("workflows/<slug:slug>/keys/", views.create_key, name="create_key"),
    path("keys/<int:pk>/revoke/", views.revoke_key, name="revoke_key"),
    path("batches/", batch_views.batch_list, name="batches"),
    path("batches/<str:public_id>/", batch_views.batch_detail, name="batch"),
    path("batches/<str:public_id>/cancel/", batch_views.cancel, name="cancel_batch"),
    path("batches/<str:public_id>/<str:which>.jsonl", batch_views.download, name="batch_file"),
]
