"""Fleet tests: ``fleet`` is a real fleet (two hub processes on a throwaway PostgreSQL and Redis,
agents started by the test) shared by the tests of one module; see tests/fleet/harness.py.

Tests that start processes carry ``pytest.mark.fleet`` and run in a session of their own
(``make test``'s third phase). A failing fleet test shows the tail of every process's log.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.fixtures.engines import Postgres, Redis
from tests.fleet.harness import Fleet

FLEET_HUBS = 2


@pytest.fixture(scope="module")
def fleet(
    postgres_server: Postgres, redis_server: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """A migrated database of its own, the demo users with API tokens, and two hubs running."""
    instance = Fleet(
        root=tmp_path_factory.mktemp("fleet"), postgres=postgres_server, redis=redis_server
    )
    try:
        instance.prepare()
        instance.start_hubs(FLEET_HUBS)
        yield instance
    finally:
        instance.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    if report.failed and isinstance(funcargs.get("fleet"), Fleet):
        report.sections.append(("fleet process logs", funcargs["fleet"].report()))
