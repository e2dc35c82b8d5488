"""One file, one live record: the duplicate rule holds in the database, even for installs that
run at the same moment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from opsdash.catalog import jobs, services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.catalog.transfer import PartialWriter
from tests.catalog.helpers import model_files, partial_files, place


def _uploaded(admin: User, tiny_gguf_path: Path, name: str) -> LocalModel:
    # What the upload view does once the body is in: the bytes sit in a partial file.
    partial = services.new_partial_path()
    writer = PartialWriter(partial, reserve=0)
    writer.write(tiny_gguf_path.read_bytes())
    written = writer.finish()
    return services.install_uploaded(
        partial=partial, written=written, filename=name, name="", model_type="", user=admin
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", [SourceKind.PATH, SourceKind.URL])
def test_two_installs_of_one_file_at_once_end_with_one_ready_copy(
    admin, model_root, tiny_gguf_path, server, kind
):
    # Both go to the same pool of two workers, so they run side by side. (An upload's sha256
    # is known before its record exists: the second is refused at once, see below.)
    if kind == SourceKind.PATH:
        locations = [str(place(tiny_gguf_path, model_root, f"c-{i}.gguf")) for i in range(2)]
    else:
        locations = [server.url(f"copy-{i}.gguf") for i in range(2)]
    models = [
        services.start_install(source=services.InstallSource(kind, where), user=admin)
        for where in locations
    ]
    assert jobs.drain(timeout=120)

    for model in models:
        model.refresh_from_db()
    ready = [m for m in models if m.status == ModelStatus.READY]
    failed = [m for m in models if m.status == ModelStatus.FAILED]
    assert len(ready) == 1 and len(failed) == 1, [(m.status, m.error) for m in models]
    winner, loser = ready[0], failed[0]
    assert f"already installed as “{winner.name}”" in loser.error, loser.error
    assert f"/models/{winner.pk}/" in loser.error
    assert winner.sha256 == hashlib.sha256(tiny_gguf_path.read_bytes()).hexdigest()
    assert model_files(settings.MODELS_DIR) == [Path(winner.file_path)]
    assert partial_files(settings.MODELS_DIR) == []


@pytest.mark.django_db(transaction=True)
def test_a_second_upload_of_a_file_being_installed_is_refused_and_leaves_no_record(
    admin, tiny_gguf_path
):
    first = _uploaded(admin, tiny_gguf_path, "copy-0.gguf")
    with pytest.raises(services.InstallRefused, match=f"already installed as “{first.name}”"):
        _uploaded(admin, tiny_gguf_path, "copy-1.gguf")
    assert jobs.drain(timeout=120)

    first.refresh_from_db()
    assert first.status == ModelStatus.READY, first.error
    assert list(LocalModel.objects.values_list("pk", flat=True)) == [first.pk]
    assert model_files(settings.MODELS_DIR) == [Path(first.file_path)]
    assert partial_files(settings.MODELS_DIR) == []


def _record(sha256: str, status: str, slug: str) -> LocalModel:
    return LocalModel.objects.create(
        name=slug,
        slug=slug,
        source_kind=SourceKind.PATH,
        source_ref=f"/x/{slug}",
        sha256=sha256,
        status=status,
    )


@pytest.mark.django_db
def test_the_database_refuses_a_second_live_record_of_one_file():
    sha = "a" * 64
    _record(sha, ModelStatus.READY, "first")
    for status in (ModelStatus.INSTALLING, ModelStatus.READY, ModelStatus.RETIRED):
        with pytest.raises(IntegrityError), transaction.atomic():
            _record(sha, status, f"second-{status}")
    # Failed and deleted records keep their history without holding the file's place.
    _record(sha, ModelStatus.FAILED, "failed-copy")
    _record(sha, ModelStatus.DELETED, "deleted-copy")
    assert LocalModel.objects.filter(sha256=sha).count() == 3


@pytest.mark.django_db
def test_a_deleted_model_can_be_installed_again(admin, model_root, tiny_gguf_path):
    source = services.InstallSource(SourceKind.PATH, str(place(tiny_gguf_path, model_root)))
    first = services.install_model(source=source, user=admin)
    services.retire_model(model=first, user=admin)
    services.delete_model(model=first, user=admin)

    again = services.install_model(source=source, user=admin)

    assert again.status == ModelStatus.READY, again.error
    assert again.sha256 == first.sha256
