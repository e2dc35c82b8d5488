"""A workflow with an API key, the models, and the live server the OpenAI client talks to."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from asgiref.sync import SyncToAsync

from opsdash.gateway.services import IssuedKey, create_api_key
from opsdash.runs.models import Workflow

# For ``endless_model``: a generation that goes on until it is stopped, by construction (the
# tiny llama never writes its end token, and its 262,144-token context outlasts any test),
# while a test needs the model busy.
LONG_ANSWER = {
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 100_000,
    "temperature": 0,
}


@pytest.fixture
def workflow(db) -> Workflow:  # type: ignore[no-untyped-def]
    return Workflow.objects.create(
        name="Invoice extraction",
        slug="invoice-extraction",
        baseline_provider="openai",
        baseline_model="gpt-4o-mini",
    )


@pytest.fixture
def api_key(workflow: Workflow) -> IssuedKey:
    return create_api_key(workflow=workflow, name="n8n", user=None)


@dataclass(frozen=True)
class Gateway:
    """Where the live server's ``/v1`` is, and the key to call it with."""

    base_url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def fresh_sync_thread() -> Iterator[None]:
    """Give the server about to be forked an asgiref shared thread it can start itself.

    An async test that used the ORM started asgiref's one shared thread (``sync_to_async``
    outside a request) in this process; a forked child inherits the executor but not its
    thread. The live server's child now starts a fresh one itself
    (``tests.liveserver.prepare_server_process``), so this is belt and braces for tests that
    still ask for it.
    """
    old, SyncToAsync.single_thread_executor = (
        SyncToAsync.single_thread_executor,
        ThreadPoolExecutor(max_workers=1),
    )
    old.shutdown(wait=False)
    yield


@pytest.fixture
def gateway(api_key: IssuedKey, fresh_sync_thread: None, asgi_server: str) -> Gateway:
    # The key is written before the server is forked (fixtures start in argument order), so
    # the server process never depends on seeing a row committed after it started.
    return Gateway(base_url=f"{asgi_server}/v1", key=api_key.secret)
