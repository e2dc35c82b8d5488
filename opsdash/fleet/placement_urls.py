from __future__ import annotations

from django.urls import path

from opsdash.fleet import placement_views

app_name = "placements"
urlpatterns = [
    path("<int:pk>/placements/", placement_views.placements_card, name="card"),
    path("<int:pk>/placements/deploy/", placement_views.deploy, name="deploy"),
    path("<int:pk>/placements/<str:node>/remove/", placement_views.remove, name="remove"),
]
