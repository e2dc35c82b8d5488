"""The JSON API under /api/ (schema at /api/openapi.json). Each app contributes a router."""

from __future__ import annotations

from ninja import NinjaAPI

from opsdash.accounts.api_auth import API_AUTH
from opsdash.catalog.api import router as catalog_router

api = NinjaAPI(
    title="OpsDash API",
    version="1",
    urls_namespace="api",
    auth=API_AUTH,
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("/models", catalog_router)
