from __future__ import annotations

from django.urls import include, path

from opsdash import views
from opsdash.api import api
from opsdash.catalog import views as catalog_views
from opsdash.fleet import files as fleet_files
from opsdash.telemetry import views as telemetry_views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", telemetry_views.metrics, name="metrics"),
    path("accounts/", include("opsdash.accounts.urls")),
    path("models/", include("opsdash.catalog.urls")),
    path("models/", include("opsdash.fleet.placement_urls")),  # a model's Placements card
    path("playground/suites/", include("opsdash.playground.suite_urls")),
    path("playground/", include("opsdash.playground.urls")),
    path("runs/", include("opsdash.runs.urls")),
    path("telemetry/", include("opsdash.telemetry.urls")),
    path("savings/", include("opsdash.savings.urls")),
    path("gateway/", include("opsdash.gateway.urls")),
    path("audit/", include("opsdash.core.urls")),
    path("nodes/", include("opsdash.fleet.urls")),
    path("limits/", include("opsdash.limits.urls")),
    path("notifications/", include("opsdash.notify.urls")),
    path("v1/", include("opsdash.gateway.v1_urls")),
    # Uploads stream through our own upload handler, which django-ninja's body parsing would
    # bypass, so this one API endpoint is a plain view with the same token/session auth.
    path("api/models/upload", catalog_views.upload, name="api_models_upload"),
    # Agents fetch placed model files with their node credential, not a user's session or
    # token; a plain view so the file streams in chunks with Range support (fleet/files.py).
    path("api/fleet/files/<str:sha256>", fleet_files.model_file, name="api_fleet_file"),
    path("api/", api.urls),
]
