from __future__ import annotations

from django.urls import path

from opsdash.fleet import views

app_name = "fleet"
# "tokens" is a reserved node name (services.RESERVED_NAMES), so its paths cannot clash.
urlpatterns = [
    path("", views.node_list, name="list"),
    path("tokens/<int:pk>/revoke", views.revoke_token, name="revoke_token"),
    path("<str:name>/", views.node_detail, name="detail"),
    path("<str:name>/approve", views.approve, name="approve"),
    path("<str:name>/drain", views.drain, name="drain"),
    path("<str:name>/resume", views.resume, name="resume"),
    path("<str:name>/delete", views.delete, name="delete"),
]
