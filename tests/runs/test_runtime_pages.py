"""Manual load and unload from the model page."""

from __future__ import annotations

import pytest

from opsdash.runs.runtime import get_supervisor

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_loads_and_unloads_a_model_from_its_page(as_operator, tiny_model):
    card = as_operator.get(f"/runs/models/{tiny_model.pk}/runtime/").content.decode()
    assert "Not loaded" in card and "Load now" in card

    as_operator.post(f"/runs/models/{tiny_model.pk}/load/")
    (status,) = get_supervisor().status()
    assert status.model_id == tiny_model.pk
    card = as_operator.get(f"/runs/models/{tiny_model.pk}/runtime/").content.decode()
    assert f"pid {status.pid}" in card and "Unload" in card
    assert "loaded" in as_operator.get("/playground/").content.decode()

    as_operator.post(f"/runs/models/{tiny_model.pk}/unload/")
    assert get_supervisor().status() == []


def test_a_retired_model_cannot_be_loaded(as_operator, tiny_model):
    from opsdash.catalog.services import retire_model

    retire_model(model=tiny_model, user=None)
    response = as_operator.post(f"/runs/models/{tiny_model.pk}/load/", follow=True)
    assert "only ready models" in response.content.decode()
    assert get_supervisor().status() == []
