from __future__ import annotations

from django.urls import path

from opsdash.catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("install/", views.install, name="install"),
    path("audit/", views.audit, name="audit"),
    path("<int:pk>/", views.model_detail, name="detail"),
    path("<int:pk>/retire/", views.retire, name="retire"),
    path("<int:pk>/restore/", views.restore, name="restore"),
    path("<int:pk>/delete/", views.delete, name="delete"),
    path("<int:pk>/cancel/", views.cancel, name="cancel"),
    path("<int:pk>/dismiss/", views.dismiss, name="dismiss"),
    path("<int:pk>/chat-format/", views.set_prompt_format, name="set_prompt_format"),
]
