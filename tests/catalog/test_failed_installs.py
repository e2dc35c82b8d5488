"""Failed installs: their own section of the models list, with the reason; dismissed, not
"deleted"; and a duplicate upload refused at once instead of leaving a second, failed row."""

from __future__ import annotations

import io
import re

import pytest
from django.conf import settings

from opsdash.catalog import jobs
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core.models import AuditEntry
from tests.catalog.helpers import partial_files

pytestmark = pytest.mark.django_db(transaction=True)


def _failed(name: str, error: str) -> LocalModel:
    return LocalModel.objects.create(
        name=name,
        slug=name,
        source_kind=SourceKind.PATH,
        source_ref=f"/srv/models/{name}.gguf",
        status=ModelStatus.FAILED,
        error=error,
    )


def _section(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}".*?</table>', html, re.S)
    assert match, f"no {testid} on the page"
    return match.group(0)


def upload(client, data: bytes, name: str):  # type: ignore[no-untyped-def]
    body = {"file": io.BytesIO(data)}
    body["file"].name = name  # type: ignore[attr-defined]
    return client.post("/api/models/upload", body)


def test_failed_installs_are_listed_apart_with_their_reason(as_admin, tiny_model):
    _failed("broken-one", "The file is not a model file (it starts with 'READ').")

    html = as_admin.get("/models/").content.decode()

    models = _section(html, "models")
    failed = _section(html, "failed-installs")
    assert tiny_model.name in models and "broken-one" not in models
    assert "broken-one" in failed and "not a model file" in failed
    assert "Dismiss" in failed
    # Under "All, with deleted" they stay in their own section too.
    everything = as_admin.get("/models/?show=all").content.decode()
    assert "broken-one" not in _section(everything, "models")


def test_no_failed_section_when_nothing_failed_and_no_dismiss_for_operators(
    as_admin, as_operator, tiny_model
):
    assert 'data-testid="failed-installs"' not in as_admin.get("/models/").content.decode()
    _failed("broken-two", "The trial load failed.")
    operator_page = as_operator.get("/models/").content.decode()
    assert "broken-two" in _section(operator_page, "failed-installs")
    assert "Dismiss" not in operator_page


def test_dismiss_answers_dismissed_and_clears_the_row_keeping_the_record(as_admin):
    model = _failed("broken-three", "The trial load failed.")

    response = as_admin.post(f"/models/{model.pk}/dismiss/", follow=True)

    page = response.content.decode()
    assert response.redirect_chain[-1][0] == "/models/"
    assert "Dismissed the failed install of “broken-three”." in page
    assert "deleted" not in page.split("Dismissed")[1].split("</")[0]
    assert 'data-testid="failed-installs"' not in page
    model.refresh_from_db()
    assert model.status == ModelStatus.DELETED
    entry = AuditEntry.objects.get(action="model.dismiss")
    assert entry.outcome == "ok" and entry.target_id == str(model.pk)


def test_only_a_failed_install_can_be_dismissed(as_admin, tiny_model, as_operator):
    response = as_admin.post(f"/models/{tiny_model.pk}/dismiss/", follow=True)

    assert "only failed models can be dismissed" in response.content.decode()
    tiny_model.refresh_from_db()
    assert tiny_model.status == ModelStatus.READY
    failed = _failed("broken-four", "x")
    assert as_operator.post(f"/models/{failed.pk}/dismiss/").status_code == 403


def test_a_duplicate_upload_is_refused_pointing_at_the_model_and_leaves_no_row(
    as_admin, tiny_gguf_path
):
    data = tiny_gguf_path.read_bytes()
    first = upload(as_admin, data, "first.gguf")
    assert first.status_code == 202, first.content
    # Still installing: the file's place is taken from the moment its bytes are in.
    again_at_once = upload(as_admin, data, "second.gguf")
    assert jobs.drain(timeout=60)
    again_later = upload(as_admin, data, "third.gguf")

    winner = LocalModel.objects.get(pk=first.json()["id"])
    assert winner.status == ModelStatus.READY, winner.error
    for refused in (again_at_once, again_later):
        assert refused.status_code == 409, refused.content
        body = refused.json()
        assert body["code"] == "already_installed"
        assert f"already installed as “{winner.name}”" in body["detail"]
        assert f"/models/{winner.pk}/" in body["detail"]
    assert list(LocalModel.objects.values_list("pk", flat=True)) == [winner.pk]
    assert partial_files(settings.MODELS_DIR) == []
    refusals = AuditEntry.objects.filter(action="model.install", outcome="refused")
    assert refusals.count() == 2 and "already installed" in refusals.first().detail  # type: ignore[union-attr]
