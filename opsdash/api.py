"""The JSON API under /api/ (schema at /api/openapi.json). Each app contributes a router."""

from __future__ import annotations

from ninja import NinjaAPI

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap
from opsdash.api_errors import StrictJsonParser, install_error_handlers
from opsdash.catalog.api import router as catalog_router
from opsdash.runs.api import router as runs_router
from opsdash.savings.api import router as savings_router

api = NinjaAPI(
    title="OpsDash API",
    version="1",
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    # Any signed-in role may read the schema; scripts get 401, not a login page.
    docs_decorator=requires(Cap.USE_API_TOKENS, api=True),
    parser=StrictJsonParser(),
)
install_error_handlers(api)
api.add_router("/models", catalog_router)
api.add_router("/models", "opsdash.fleet.placement_api.router")  # its /{id}/placements
api.add_router("", runs_router)
api.add_router("/savings", savings_router)
api.add_router("/telemetry", "opsdash.telemetry.api.router")
api.add_router("/audit", "opsdash.core.api.router")
api.add_router("/nodes", "opsdash.fleet.api.router")
api.add_router("", "opsdash.limits.api.router")  # /workflows/{slug}/limits, /keys/{id}/limits
api.add_router("", "opsdash.accounts.user_api.router")  # /users, /users/{id}
