"""The playground tests use the same installed-model fixtures as the run tests."""

from __future__ import annotations

from tests.runs.conftest import (  # noqa: F401 - fixtures, registered by importing them here
    install_ready,
    smol_model,
    supervisor_cleanup,
    tiny_model,
)
