from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsdash.catalog import services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.runs.runtime import stop_supervisor
from tests.catalog.helpers import place


@pytest.fixture
def supervisor_cleanup() -> Iterator[None]:
    """Each test that runs models leaves no runner process behind."""
    yield
    stop_supervisor()


def install_ready(path, root, **options: str) -> LocalModel:  # type: ignore[no-untyped-def]
    source = services.InstallSource(SourceKind.PATH, str(place(path, root)), **options)
    model = services.install_model(source=source, user=None)
    assert model.status == ModelStatus.READY, model.error
    return model


@pytest.fixture
def tiny_model(db, model_root, tiny_gguf_path, supervisor_cleanup) -> LocalModel:  # type: ignore[no-untyped-def]
    return install_ready(tiny_gguf_path, model_root)


@pytest.fixture
def endless_model(db, model_root, tiny_long_gguf_path, supervisor_cleanup) -> LocalModel:  # type: ignore[no-untyped-def]
    """The tiny llama that never ends (``tiny_long_gguf_path``), installed: it is loaded with
    its whole 262,144-token context, so a run asked for many tokens goes on until stopped."""
    return install_ready(tiny_long_gguf_path, model_root)


@pytest.fixture
def smol_model(db, model_root, smollm2_path, supervisor_cleanup) -> LocalModel:  # type: ignore[no-untyped-def]
    return install_ready(smollm2_path, model_root)
