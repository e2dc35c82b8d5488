"""What every test shares: an isolated models folder, drained install jobs, and the fixture
plugins (personas, model files and installed models, the browser and live server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opsdash.catalog import jobs

pytest_plugins = [
    "tests.fixtures.personas",
    "tests.fixtures.models",
    "tests.fixtures.browser",
    "tests.fixtures.engines",
]


@pytest.fixture(autouse=True)
def isolated_models(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Each test gets its own models folder and model root."""
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    root = tmp_path / "roots"
    root.mkdir()
    settings.MODEL_ROOTS = [root]
    settings.MIN_FREE_BYTES = 1024 * 1024
    settings.DOWNLOAD_TIMEOUT_SECONDS = 5
    settings.DOWNLOAD_ATTEMPTS = 2
    return root


@pytest.fixture
def model_root(isolated_models: Path) -> Path:
    return isolated_models


@pytest.fixture(autouse=True)
def _drain_jobs() -> Iterator[None]:
    yield
    assert jobs.drain(timeout=120), "a background install job did not finish"
