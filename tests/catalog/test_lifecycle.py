"""Retire, restore, delete: what each keeps, what each refuses, and the audit of all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdash.catalog import services
from opsdash.catalog.models import ModelStatus, SourceKind
from opsdash.core.models import AuditEntry
from tests.catalog.helpers import fresh, place

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready_model(admin, model_root, tiny_gguf_path):  # type: ignore[no-untyped-def]
    source = services.InstallSource(SourceKind.PATH, str(place(tiny_gguf_path, model_root)))
    model = services.install_model(source=source, user=admin)
    assert model.status == ModelStatus.READY, model.error
    return model


def test_retire_keeps_the_file_and_restore_brings_it_back(admin, ready_model):
    services.retire_model(model=ready_model, user=admin)
    assert fresh(ready_model).status == ModelStatus.RETIRED and ready_model.retired_at
    assert Path(ready_model.file_path).is_file()

    services.restore_model(model=ready_model, user=admin)
    assert fresh(ready_model).status == ModelStatus.READY and ready_model.retired_at is None


def test_delete_removes_the_file_but_keeps_the_record(admin, ready_model):
    with pytest.raises(services.LifecycleError, match="only retired or failed"):
        services.delete_model(model=ready_model, user=admin)
    services.retire_model(model=ready_model, user=admin)
    services.delete_model(model=ready_model, user=admin)

    assert fresh(ready_model).status == ModelStatus.DELETED and ready_model.deleted_at
    assert not Path(ready_model.file_path).exists()
    with pytest.raises(services.LifecycleError):
        services.restore_model(model=ready_model, user=admin)


def test_restoring_a_model_whose_file_vanished_says_so(admin, ready_model):
    services.retire_model(model=ready_model, user=admin)
    Path(ready_model.file_path).unlink()
    with pytest.raises(services.LifecycleError, match="missing"):
        services.restore_model(model=ready_model, user=admin)
    assert fresh(ready_model).status == ModelStatus.RETIRED


def test_every_action_is_in_the_audit_trail_with_who_and_outcome(admin, ready_model, as_admin):
    for verb in ("retire", "restore", "retire"):
        as_admin.post(f"/models/{ready_model.pk}/{verb}/")
    as_admin.post(f"/models/{ready_model.pk}/delete/", {"confirm": ready_model.slug})

    trail = list(
        AuditEntry.objects.filter(target_type="model", target_id=str(ready_model.pk))
        .order_by("id")
        .values_list("action", "outcome", "actor_name")
    )
    assert trail == [
        ("model.install.start", "ok", "ada"),
        ("model.install", "ok", "ada"),
        ("model.retire", "ok", "ada"),
        ("model.restore", "ok", "ada"),
        ("model.retire", "ok", "ada"),
        ("model.delete", "ok", "ada"),
    ]
    old_page = as_admin.get("/models/audit/")
    assert old_page.status_code == 302 and old_page["Location"] == "/audit/?target_type=model"
    page = as_admin.get(old_page["Location"]).content.decode()
    assert page.count("ada") >= 6 and "model.delete" in page


def test_deleting_from_the_page_needs_the_slug_typed(admin, ready_model, as_admin):
    services.retire_model(model=ready_model, user=admin)
    as_admin.post(f"/models/{ready_model.pk}/delete/", {"confirm": "wrong"})
    assert fresh(ready_model).status == ModelStatus.RETIRED
    assert Path(ready_model.file_path).is_file()
