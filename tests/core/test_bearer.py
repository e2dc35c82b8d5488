"""One reading of ``Authorization: Bearer <token>`` for the API, uploads, /v1 and /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from opsdash.accounts.services import create_token
from opsdash.core.bearer import parse_authorization, scope_bearer_token

OPSDASH = Path(__file__).resolve().parents[2] / "opsdash"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer ", None),
        ("Bearer", None),
        ("Basic abc", None),
        ("Bearerabc", None),
        ("", None),
    ],
)
def test_it_reads_the_token_of_a_bearer_header_and_nothing_else(header: str, token: str | None):
    assert parse_authorization(header) == token


def test_it_reads_the_header_of_a_raw_asgi_scope_whatever_its_case():
    scope = {"type": "http", "headers": [(b"AUTHORIZATION", b"bearer  s3cret")]}

    assert scope_bearer_token(scope) == "s3cret"
    assert scope_bearer_token({"type": "http", "headers": []}) is None


def test_the_api_accepts_a_personal_token_whatever_the_scheme_case(admin) -> None:  # type: ignore[no-untyped-def]
    secret = create_token(user=admin, name="script").secret

    answer = Client().get("/api/models", HTTP_AUTHORIZATION=f"bearer   {secret} ")

    assert answer.status_code == 200
    assert Client().get("/api/models", HTTP_AUTHORIZATION="Bearer").status_code == 401


def test_no_module_but_the_one_parser_reads_a_bearer_header_by_hand():
    by_hand = re.compile(r"""["']bearer ["']|\[7:\]""", re.IGNORECASE)
    offenders = [
        str(path.relative_to(OPSDASH.parent))
        for path in OPSDASH.rglob("*.py")
        if path.name != "bearer.py" and by_hand.search(path.read_text())
    ]
    assert offenders == []
