"""PUT /api/workflows/{slug}/limits and /api/keys/{id}/limits (admins), GET …/budget (managers
and admins): the body in the issue, 422 with a sentence for bad bodies, 403 for other roles."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from opsdash.accounts.services import create_token
from tests.limits.conftest import gateway_run

pytestmark = pytest.mark.django_db


def bearer(user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=user, name='t').secret}"}


def put(client: Client, path: str, body: object, auth: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.put(path, json.dumps(body), content_type="application/json", **auth)


BODY = {
    "budget": {"window": "month", "tokens": 10_000, "usd": "12.50", "hard": True},
    "requests_per_minute": 60,
    "tokens_per_minute": None,
}


def test_an_admin_sets_a_workflows_limits_and_a_manager_reads_its_budget(
    client, admin, manager, key, ledger_model
):
    gateway_run(key, ledger_model)  # already in this month: counted once the budget is set
    answer = put(client, f"/api/workflows/{key.workflow.slug}/limits", BODY, bearer(admin))

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["requests_per_minute"] == 60 and body["tokens_per_minute"] is None
    assert body["budget"]["window"] == "month" and body["budget"]["hard"] is True
    assert body["budget"]["tokens"] == 10_000 and body["budget"]["usd"] == "12.500000000"
    assert body["budget"]["used"] == {"tokens": 1500, "usd": "2.000000000"}
    assert body["budget"]["left"] == {"tokens": 8500, "usd": "10.500000000"}
    assert body["budget"]["percent"] == 16.0
    read = client.get(f"/api/workflows/{key.workflow.slug}/budget", **bearer(manager))
    assert read.status_code == 200 and read.json() == body


def test_a_keys_limits_are_its_own_and_null_clears_the_budget(client, admin, key):
    path = f"/api/keys/{key.pk}/limits"
    set_ = put(client, path, {"budget": {"window": "day", "tokens": 5}}, bearer(admin))
    assert set_.status_code == 200 and set_.json()["budget"]["tokens"] == 5
    assert (
        client.get(f"/api/workflows/{key.workflow.slug}/budget", **bearer(admin)).json()["budget"]
        is None
    ), "the workflow has no budget of its own"
    cleared = put(client, path, {"budget": None, "requests_per_minute": 3}, bearer(admin))
    assert cleared.json()["budget"] is None and cleared.json()["requests_per_minute"] == 3
    assert client.get(f"/api/keys/{key.pk}/budget", **bearer(admin)).json() == cleared.json()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"budget": {"window": "year", "tokens": 5}}, "budget.window: The budget window must be"),
        ({"budget": {"window": "day"}}, "in tokens, in USD, or both"),
        ({"budget": {"window": "day", "tokens": 0}}, "above 0"),
        ({"budget": {"window": "day", "usd": "ten"}}, "must be a number such as 2.50"),
        ({"budget": {"window": "day", "usd": 10}}, "budget.usd"),  # a number, not a string
        ({"requests_per_minute": -5}, "requests_per_minute"),
        ({"tokens_per_minute": "many"}, "tokens_per_minute"),
    ],
)
def test_a_bad_body_is_422_with_a_sentence_naming_the_field(client, admin, key, body, words):
    answer = put(client, f"/api/workflows/{key.workflow.slug}/limits", body, bearer(admin))
    assert answer.status_code == 422, answer.content
    assert words in answer.json()["detail"]


def test_only_admins_set_limits_and_operators_cannot_read_budgets(client, operator, manager, key):
    path = f"/api/workflows/{key.workflow.slug}/limits"
    assert put(client, path, BODY, bearer(manager)).status_code == 403
    assert put(client, path, BODY, {}).status_code == 401
    budget = f"/api/workflows/{key.workflow.slug}/budget"
    assert client.get(budget, **bearer(operator)).status_code == 403
    assert client.get("/api/workflows/nope/budget", **bearer(manager)).status_code == 404
    assert client.get("/api/keys/999999/budget", **bearer(manager)).status_code == 404
