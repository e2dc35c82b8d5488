"""The playground's history and a run's page read as text: a chat as "role: content", the
parameters as a table; history says it holds the user's runs only and sends admins to /runs/."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from opsdash.runs.models import Run, RunSource
from tests.factories import local_model, workflow

pytestmark = pytest.mark.django_db

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And times three?"},
]


def _chat_run(user: User) -> Run:
    return Run.objects.create(
        model=local_model(),
        workflow=workflow("playground-chat"),
        user=user,
        source=RunSource.PLAYGROUND,
        messages=CHAT,
        params={"max_tokens": 64, "temperature": 0.2, "seed": None, "stop": ["###", "\n\n"]},
    )


def test_history_shows_a_chats_last_turn_as_text_not_a_python_dict(
    as_operator: Client, operator: User
) -> None:
    _chat_run(operator)
    html = as_operator.get("/playground/history/").content.decode()
    assert "user: And times three?" in html
    assert "{&#x27;role&#x27;" not in html and "{'role'" not in html


def test_a_runs_page_shows_each_message_and_its_parameters_as_a_table(
    as_operator: Client, operator: User
) -> None:
    run = _chat_run(operator)
    response = as_operator.get(f"/playground/runs/{run.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    for message in CHAT:
        assert f'data-role="{message["role"]}"><strong>{message["role"]}:</strong> ' in html
    table = html[html.index('data-testid="params"') : html.index("</table>", html.index("params"))]
    assert '<th scope="row">Max tokens</th><td>64</td>' in table
    assert '<th scope="row">Temperature</th><td>0.2</td>' in table
    assert "“###”" in table  # stop sequences, each quoted
    assert "Seed" not in table and "None" not in table  # an unset parameter is left out
    assert "{&#x27;" not in html


def test_a_run_with_no_parameters_says_it_used_the_defaults(
    as_operator: Client, operator: User
) -> None:
    run = Run.objects.create(
        model=local_model(), workflow=workflow("w"), user=operator, source="api", prompt="hi"
    )
    html = as_operator.get(f"/playground/runs/{run.pk}/").content.decode()
    assert "the defaults" in html and 'data-testid="params"' not in html


def test_history_says_your_runs_only_and_sends_admins_to_the_runs_page(
    as_operator: Client, as_admin: Client
) -> None:
    operator_html = as_operator.get("/playground/history/").content.decode()
    admin_html = as_admin.get("/playground/history/").content.decode()

    def scope(html: str) -> str:
        start = html.index('data-testid="history-scope"')
        return html[start : html.index("</p>", start)]

    assert "Your runs only" in scope(operator_html) and "Your runs only" in scope(admin_html)
    assert 'href="/runs/">Runs page</a>' in scope(admin_html)
    assert "/runs/" not in scope(operator_html)  # they could not open it
