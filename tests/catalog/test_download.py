"""Installing from a URL against a real HTTP server on loopback, misbehaving ones included."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from opsdash.catalog import install, services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from tests.catalog.helpers import model_files, partial_files

pytestmark = pytest.mark.django_db


def download(url: str, admin, **options: str) -> LocalModel:  # type: ignore[no-untyped-def]
    source = services.InstallSource(SourceKind.URL, url, **options)
    return services.install_model(source=source, user=admin)


def test_it_installs_from_a_url_and_checks_the_expected_sha256(admin, server, tiny_gguf_path):
    import hashlib

    sha = hashlib.sha256(tiny_gguf_path.read_bytes()).hexdigest()
    model = download(server.url(), admin, expected_sha256=sha)

    assert model.status == ModelStatus.READY, model.error
    assert model.sha256 == sha and model.name == "model"
    assert model.bytes_done == model.bytes_total == len(server.payload)


def test_a_dropped_connection_resumes_with_a_range_request(admin, server):
    server.mode = "short-once"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.READY, model.error
    assert server.ranges[0] is None
    assert server.ranges[1] == f"bytes={len(server.payload) // 2}-"


def test_a_server_that_keeps_sending_too_few_bytes_fails_with_the_count(admin, server):
    server.mode = "short-always"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "closed the connection" in model.error and "2 attempts" in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_a_404_fails_at_once_with_the_status(admin, server):
    server.mode = "404"
    model = download(server.url("nope.gguf"), admin)

    assert model.status == ModelStatus.FAILED
    assert "404" in model.error and "nope.gguf" in model.error
    assert server.requests == 1, "a 404 is not retried"


def test_a_server_that_never_answers_times_out(admin, settings, server):
    settings.DOWNLOAD_TIMEOUT_SECONDS = 1
    server.mode = "hang"
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "1 second" in model.error
    assert partial_files(settings.MODELS_DIR) == []


def test_only_http_and_https_addresses_are_accepted(admin):
    with pytest.raises(services.InstallRefused, match="not an http"):
        download("file:///etc/passwd", admin)


def test_a_server_that_dribbles_bytes_fails_below_the_minimum_rate_and_keeps_nothing(
    admin, settings, server
):
    # One byte every 0.2 s for a minute, then the rest: before the minimum rate existed this
    # held a worker for the whole minute and then ended ready.
    settings.DOWNLOAD_MIN_BYTES_PER_SECOND = 1000
    settings.DOWNLOAD_RATE_WINDOW_SECONDS = 2
    server.mode = "dribble"
    started = time.monotonic()
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert time.monotonic() - started < 15, "it fails soon after the first window"
    assert f"The download from {server.url()} sent " in model.error, model.error
    assert "in the last 2" in model.error
    assert "below the minimum of 1000 bytes per second" in model.error
    assert "OPSDASH_DOWNLOAD_MIN_BYTES_PER_SECOND" in model.error
    assert server.requests == 1, "a server too slow is not retried"
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_a_download_still_running_at_its_deadline_fails_with_the_deadline(admin, settings, server):
    settings.DOWNLOAD_MIN_BYTES_PER_SECOND = 0
    settings.DOWNLOAD_DEADLINE_SECONDS = 2
    server.mode = "dribble"
    started = time.monotonic()
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert time.monotonic() - started < 8
    assert "did not finish within 2 s (OPSDASH_DOWNLOAD_DEADLINE_SECONDS)" in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_a_silent_server_cannot_stretch_the_deadline_past_its_read_timeout(admin, settings, server):
    settings.DOWNLOAD_TIMEOUT_SECONDS = 30  # one read could wait this long
    settings.DOWNLOAD_DEADLINE_SECONDS = 1
    server.mode = "hang"  # answers nothing for 4 s
    started = time.monotonic()
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert time.monotonic() - started < 3.5
    assert "did not finish within 1 s" in model.error, model.error


@pytest.fixture
def small_disk(settings, tmp_path):
    """A 1 MiB tmpfs as the models folder: a real disk that really runs out of space."""
    if os.geteuid() != 0:
        pytest.skip(
            "mounting a tmpfs needs root; "
            "test_a_full_disk_mid_download_fails_cleanly_without_root covers the same failure"
        )
    mount = tmp_path / "small-disk"
    mount.mkdir()
    assert os.system(f"mount -t tmpfs -o size=1m tmpfs {mount}") == 0, "could not mount a tmpfs"
    settings.MODELS_DIR = mount
    settings.MIN_FREE_BYTES = 0
    yield mount
    os.system(f"umount {mount}")


def test_a_disk_that_fills_up_mid_download_fails_cleanly(admin, server, small_disk):
    # No Content-Length, so nothing can be checked up front: the disk fills while writing.
    server.mode = "no-length"
    server.payload = os.urandom(3 * 1024 * 1024)
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "ran out of space" in model.error, model.error
    assert partial_files(small_disk) == [] and model_files(small_disk) == []


def test_a_full_disk_mid_download_fails_cleanly_without_root(admin, server, monkeypatch):
    # The same failure as above for any user: the partial file is a link to /dev/full, where
    # the kernel answers every write with ENOSPC, just as a full disk does.
    full = Path("/dev/full")
    assert full.exists(), "Linux always has /dev/full; without it this test cannot stand in"
    link = services.partial_dir() / "full"
    link.symlink_to(full)
    monkeypatch.setattr(install, "new_partial_path", lambda: link)
    server.mode = "no-length"
    server.payload = os.urandom(3 * 1024 * 1024)
    model = download(server.url(), admin)

    assert model.status == ModelStatus.FAILED
    assert "ran out of space" in model.error, model.error
    assert not link.is_symlink(), "the partial file is removed"
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []
