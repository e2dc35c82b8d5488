"""Fuzz every /api/ operation from the schema the app serves (schemathesis, in process).

A signed-in admin (a personal Bearer token) sends each operation a bounded, derandomized set of
generated requests, valid and invalid alike; every answer must be below 500 and carry a status
the operation declares in ``/api/openapi.json``. Nothing real is behind the long operations: no
model is installed and the model roots are empty, so runs answer 404 and path installs 400; URL
installs are pointed at a closed local port, so their background job fails at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from opsdash.accounts.services import create_token

CLOSED_PORT_URL = "http://127.0.0.1:9/model.gguf"
# Per operation, derandomized so every run sends the same requests: under a minute on 2 cores.
EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def admin_token(admin, settings) -> str:  # type: ignore[no-untyped-def]
    settings.DOWNLOAD_ATTEMPTS = 1
    return create_token(user=admin, name="fuzz").secret


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """The real WSGI handler, kept inside the test's transaction.

    Django's own test client does the same: a handler closes the database connection at the
    end of each request, which would end the transaction the test's rows live in.
    """
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app: Any, admin_token: str) -> Any:
    return schemathesis.openapi.from_wsgi(
        "/api/openapi.json", wsgi_app, headers={"Authorization": f"Bearer {admin_token}"}
    )


def _operations() -> list[tuple[str, str]]:
    # The same schema the app serves, read without a request so pytest can name one test per
    # operation; the test itself loads /api/openapi.json from the running app.
    from opsdash.api import api

    paths = api.get_openapi_schema()["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: v)
def test_every_api_operation_answers_a_declared_status_and_never_a_5xx(
    api_schema: Any, admin_token: str, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        body = case.body
        if (
            (method, path) == ("POST", "/api/models")
            and isinstance(body, dict)
            and str(body.get("url", "")).startswith(("http://", "https://"))
        ):
            body["url"] = CLOSED_PORT_URL
        case.call_and_validate(
            headers={"Authorization": f"Bearer {admin_token}"},
            checks=[not_a_server_error, status_code_conformance],
        )

    fuzz()
