"""The budget card on the workflow's savings page, the key rows' limits on the gateway page, and
the admins' edit forms (which call the same service as the API)."""

from __future__ import annotations

import pytest

from opsdash.limits.models import Limits
from opsdash.limits.services import BudgetSpec, set_limits
from tests.fixtures.personas import client_for
from tests.limits.conftest import gateway_run

pytestmark = pytest.mark.django_db


def test_the_savings_page_shows_the_budget_used_left_and_when_it_resets(
    admin, manager, key, ledger_model
):
    set_limits(
        workflow=key.workflow,
        budget=BudgetSpec(window="day", tokens=6000, usd="8"),
        requests_per_minute=120,
        tokens_per_minute=None,
        user=None,
    )
    gateway_run(key, ledger_model)  # 1,500 tokens, $2.00 avoided: 25 % of both

    page = client_for(manager).get(f"/savings/workflows/{key.workflow.slug}/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="budget-card"' in html and "25 %</strong> of the daily budget" in html
    assert "1,500 used of 6,000 · 4,500 left" in html
    assert "$2.00 used of $8.00 · $6.00 left" in html
    assert 'data-testid="budget-resets"' in html and "120" in html
    assert "Edit limits" not in html, "managers read, admins edit"
    admin_html = client_for(admin).get(f"/savings/workflows/{key.workflow.slug}/").content
    assert f'href="/limits/workflows/{key.workflow.slug}/"'.encode() in admin_html


def test_a_workflow_without_limits_says_it_has_no_budget(manager, key):
    page = client_for(manager).get(f"/savings/workflows/{key.workflow.slug}/")
    assert "No budget: gateway calls are not capped by spend." in page.content.decode()


def test_an_admin_sets_limits_in_the_form_and_is_sent_back_to_the_savings_page(admin, key):
    answer = client_for(admin).post(
        f"/limits/workflows/{key.workflow.slug}/",
        {
            "budget_window": "week",
            "budget_tokens": "1,000,000",
            "budget_usd": "",
            "requests_per_minute": "30",
            "tokens_per_minute": "",
            "alert_percents": "75, 100",
        },
    )
    assert (
        answer.status_code == 302
        and answer["Location"] == f"/savings/workflows/{key.workflow.slug}/"
    )
    limits = Limits.objects.get(workflow=key.workflow)
    assert (limits.budget_window, limits.budget_tokens, limits.budget_hard) == (
        "week",
        10**6,
        False,
    )
    assert limits.requests_per_minute == 30 and limits.alert_percents == [75, 100]


def test_a_form_that_cannot_work_is_shown_again_with_the_sentence(admin, key):
    answer = client_for(admin).post(
        f"/limits/keys/{key.pk}/", {"budget_window": "day", "budget_usd": "a lot"}
    )
    assert answer.status_code == 400
    assert "must be a number such as 2.50" in answer.content.decode()
    assert 'value="a lot"' in answer.content.decode(), "what was typed stays"
    assert not Limits.objects.filter(key=key).exists()


def test_each_key_row_shows_its_limits_and_admins_get_a_link_to_edit_them(admin, manager, key):
    set_limits(key=key, budget=None, requests_per_minute=60, tokens_per_minute=9000, user=None)
    html = client_for(admin).get(f"/gateway/workflows/{key.workflow.slug}/").content.decode()
    assert "60 req/min · 9,000 tok/min" in html
    assert f'href="/limits/keys/{key.pk}/"' in html
    manager_html = client_for(manager).get(f"/gateway/workflows/{key.workflow.slug}/").content
    assert f'href="/limits/keys/{key.pk}/"'.encode() not in manager_html


def test_only_admins_open_the_edit_forms(manager, operator, key):
    assert client_for(manager).get(f"/limits/workflows/{key.workflow.slug}/").status_code == 403
    assert client_for(operator).get(f"/limits/keys/{key.pk}/").status_code == 403
    assert client_for(None).get(f"/limits/keys/{key.pk}/").status_code == 302
