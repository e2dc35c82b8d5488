"""The gateway page leads with the workflows; the long client snippets are folded below."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_workflows_and_the_new_workflow_form_come_before_the_folded_snippets(
    as_admin, workflow
):
    html = as_admin.get("/gateway/").content.decode()

    workflows = html.index('id="workflows-heading"')
    create = html.index('id="new-workflow"')
    details = re.search(r'<details class="connect-client"[^>]*>', html)
    assert details, "no 'Connect a client' fold"
    assert workflows < create < details.start()
    assert " open" not in details.group(0), "the snippets start folded"
    folded = html[details.start() : html.index("</details>", details.start())]
    assert "Connect a client" in folded
    for inside in ('id="base-url"', 'id="snippet-python"', 'id="snippet-curl"'):
        assert inside in folded, f"{inside} is outside the fold"
    assert html.count('id="snippet-') == 4
    assert "{#" not in html and "{%" not in html, "a template comment leaked onto the page"


def test_a_manager_sees_the_workflows_first_too_without_the_create_form(as_manager, workflow):
    html = as_manager.get("/gateway/").content.decode()
    assert 'id="new-workflow"' not in html
    assert html.index("Invoice extraction") < html.index('class="connect-client"')
