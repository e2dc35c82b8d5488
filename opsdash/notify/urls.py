from __future__ import annotations

from django.urls import path

from opsdash.notify import views

app_name = "notify"
urlpatterns = [
    path("", views.index, name="index"),
    path("channels/", views.create, name="create"),
    path("channels/<int:pk>/", views.edit, name="edit"),
    path("channels/<int:pk>/toggle", views.toggle, name="toggle"),
    path("channels/<int:pk>/rotate", views.rotate, name="rotate"),
    path("channels/<int:pk>/test", views.send_test, name="test"),
    path("channels/<int:pk>/delete", views.delete, name="delete"),
]
