"""Cancelling installs, and slow downloads that must not hold up the other installs.

Real background workers and a real HTTP server on loopback that dribbles its bytes.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from opsdash.accounts.services import create_token
from opsdash.catalog import jobs, services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core.models import AuditEntry
from tests.catalog.helpers import FileServer, fresh, model_files, partial_files, place, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bearer(admin: User) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=admin, name='t').secret}"}


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):  # type: ignore[no-untyped-def]
    # These tests hold downloads open on purpose; only a cancel may end them.
    settings.DOWNLOAD_MIN_BYTES_PER_SECOND = 0
    settings.DOWNLOAD_DEADLINE_SECONDS = 0


def start_download(server: FileServer, admin: User, name: str = "model.gguf") -> LocalModel:
    source = services.InstallSource(SourceKind.URL, server.url(name))
    return services.start_install(source=source, user=admin)


def downloading(model: LocalModel) -> bool:
    return fresh(model).bytes_done > 0 and bool(partial_files(settings.MODELS_DIR))


def test_two_dribbling_downloads_do_not_hold_up_an_install_from_a_path(
    admin, server, model_root, tiny_gguf_path
):
    server.mode = "dribble"
    slow = [start_download(server, admin, f"slow-{i}.gguf") for i in range(2)]
    wait_until(lambda: server.requests >= 2, "both slow downloads to connect")

    source = services.InstallSource(SourceKind.PATH, str(place(tiny_gguf_path, model_root)))
    quick = services.start_install(source=source, user=admin)
    wait_until(
        lambda: fresh(quick).status != ModelStatus.INSTALLING, "the path install", timeout=30
    )

    assert quick.status == ModelStatus.READY, quick.error
    assert [fresh(m).status for m in slow] == ["installing", "installing"], "still dribbling"
    for model in slow:
        services.cancel_install(model=model, user=admin)
    assert jobs.drain(timeout=10)
    assert all(fresh(m).error == "Cancelled by ada." for m in slow)
    assert partial_files(settings.MODELS_DIR) == []


def test_an_admin_cancels_a_download_through_the_api_and_its_partial_file_goes(
    client, bearer, admin, server
):
    server.mode = "dribble"
    created = client.post(
        "/api/models", {"source": "url", "url": server.url()}, "application/json", **bearer
    ).json()
    model = LocalModel.objects.get(pk=created["id"])
    wait_until(lambda: downloading(model), "the download to start")

    started = time.monotonic()
    response = client.post(f"/api/models/{model.pk}/cancel", **bearer)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "failed" and body["error"] == "Cancelled by ada."
    # This process ran the download, so the blocked read is interrupted at once.
    assert jobs.drain(timeout=5)
    assert time.monotonic() - started < 5
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []
    assert fresh(model).status == ModelStatus.FAILED, "the worker does not overwrite the cancel"
    entry = AuditEntry.objects.get(action="model.cancel")
    assert (entry.target_id, entry.actor, entry.outcome) == (str(model.pk), admin, "ok")

    again = client.post(f"/api/models/{model.pk}/cancel", **bearer)
    assert again.status_code == 409
    assert "not installing" in again.json()["detail"]


def test_retire_and_delete_during_an_install_say_to_cancel_it_first(client, bearer, admin, server):
    server.mode = "dribble"
    model = start_download(server, admin)
    wait_until(lambda: downloading(model), "the download to start")

    for method, url in (
        ("post", f"/api/models/{model.pk}/retire"),
        ("delete", f"/api/models/{model.pk}"),
    ):
        response = getattr(client, method)(url, **bearer)
        assert response.status_code == 409, response.content
        detail = response.json()["detail"]
        assert "still installing" in detail and "Cancel the install first" in detail
        assert f"POST /api/models/{model.pk}/cancel" in detail
    assert fresh(model).status == ModelStatus.INSTALLING, "refusing changed nothing"
    services.cancel_install(model=model, user=admin)


def test_an_admin_cancels_an_install_from_its_page(as_admin, admin, server):
    server.mode = "dribble"
    model = start_download(server, admin)
    wait_until(lambda: downloading(model), "the download to start")

    status_partial = as_admin.get(f"/models/{model.pk}/", HTTP_HX_REQUEST="true")
    assert b'data-testid="cancel-install"' in status_partial.content
    assert f'action="/models/{model.pk}/cancel/"'.encode() in status_partial.content

    page = as_admin.post(f"/models/{model.pk}/cancel/", follow=True)

    assert page.status_code == 200
    assert "was cancelled" in page.content.decode()
    assert "Cancelled by ada." in page.content.decode()
    assert b'data-testid="cancel-install"' not in page.content
    assert jobs.drain(timeout=5)
    assert partial_files(settings.MODELS_DIR) == []


def test_a_cancel_made_by_another_process_stops_the_download_within_seconds(admin, server):
    server.mode = "dribble"
    model = start_download(server, admin)
    wait_until(lambda: downloading(model), "the download to start")

    # Another web process shares only the database: it can change the record, not our threads.
    LocalModel.objects.filter(pk=model.pk).update(
        status=ModelStatus.FAILED, error="Cancelled by bea."
    )

    assert jobs.drain(timeout=5), "the worker saw the cancel in the record"
    assert partial_files(settings.MODELS_DIR) == []
    assert fresh(model).error == "Cancelled by bea."


def test_a_queued_install_cancelled_before_a_worker_is_free_never_starts(admin, server):
    server.mode = "dribble"
    busy = [start_download(server, admin, f"busy-{i}.gguf") for i in range(2)]
    wait_until(lambda: server.requests >= 2, "both workers to be busy")
    queued = start_download(server, admin, "queued.gguf")

    services.cancel_install(model=queued, user=admin)
    assert fresh(queued).status == ModelStatus.FAILED
    for model in busy:
        services.cancel_install(model=model, user=admin)

    assert jobs.drain(timeout=10)
    assert "/queued.gguf" not in server.paths, "the cancelled install never connected"
    assert partial_files(settings.MODELS_DIR) == []


def test_a_cancel_during_the_trial_load_stops_the_child_and_removes_the_file(
    admin, model_root, tiny_gguf_path, monkeypatch
):
    from inference.runtime.trial import CRASH_FOR_TESTS_ENV

    # The trial child stops itself (SIGSTOP) after importing the backend: a load that hangs.
    monkeypatch.setenv(CRASH_FOR_TESTS_ENV, "SIGSTOP")
    source = services.InstallSource(SourceKind.PATH, str(place(tiny_gguf_path, model_root)))
    model = services.start_install(source=source, user=admin)
    wait_until(lambda: fresh(model).stage == "trial load", "the trial load to start")

    started = time.monotonic()
    services.cancel_install(model=model, user=admin)

    assert jobs.drain(timeout=10)
    assert time.monotonic() - started < 5, "the trial load timeout was not waited out"
    assert fresh(model).status == ModelStatus.FAILED and model.error == "Cancelled by ada."
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []
