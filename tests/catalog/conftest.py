"""Fixtures the catalog tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalog.helpers import FileServer


@pytest.fixture
def server(tiny_gguf_path: Path) -> Iterator[FileServer]:
    """A real HTTP server on 127.0.0.1 serving the tiny GGUF (set ``mode`` to misbehave)."""
    srv = FileServer()
    srv.payload = tiny_gguf_path.read_bytes()
    yield srv
    srv.stop()
