"""Errors carry a code; statuses come from the code, and no caller reads the sentence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from opsdash.core.errors import HTTP_STATUS, Code, Refusal, http_status
from opsdash.gateway.errors import V1_ERRORS, v1_error

OPSDASH = Path(__file__).resolve().parents[2] / "opsdash"

#: Comparisons against an error's message text: ``"x" in exc.reason``, ``.error == "…"``,
#: ``.reason.startswith(…)``, ``in str(exc)``, and codes smuggled through ``finish_reason``.
TEXT_COMPARISON = re.compile(
    r"""
    \bin\s+[\w.\[\]"']*\.(reason|error|message|detail)\b(?![\w.(])
    | \.(reason|error|message|detail)\s*(==|!=)
    | (==|!=)\s*[\w.]+\.(reason|error|message|detail)\b
    | \.(reason|error|message|detail)\.(startswith|endswith|lower|find|index)\(
    | \bin\s+str\(\w+\)
    | str\(\w+\)\s*(==|!=|\.startswith)
    | finish_reason\s*(==|!=)\s*["'](busy|context_full|load_failed)
    """,
    re.VERBOSE,
)


def test_no_module_compares_an_errors_message_text():
    offenders = [
        f"{path.relative_to(OPSDASH.parent)}:{number}: {line.strip()}"
        for path in sorted(OPSDASH.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TEXT_COMPARISON.search(line.split("#", 1)[0])
    ]
    assert offenders == []


def test_the_comparison_finder_knows_the_shapes_it_forbids():
    for line in [
        'status = 413 if "larger" in handler.error else 400',
        'if "already installed" in exc.reason:',
        "if exc.reason.startswith(param):",
        'if run.finish_reason == "busy":',
        'if "busy" in str(exc):',
    ]:
        assert TEXT_COMPARISON.search(line), line
    assert not TEXT_COMPARISON.search('return "length" if reason == "length" else "stop"')
    assert not TEXT_COMPARISON.search("if exc.code == Code.BUSY:")


def test_every_code_has_a_status_and_a_refusal_answers_its_codes_status():
    assert set(HTTP_STATUS) == set(Code)
    assert Refusal("Nope.", code=Code.BUSY).status == 429
    assert Refusal("Nope.").code == Code.INVALID and Refusal("Nope.").status == 400
    assert http_status("no_such_code") == 400


def test_a_refusal_keeps_its_sentence_code_and_param():
    refused = Refusal("Give a positive number.", code="invalid_param", param="top_k")

    assert (refused.reason, str(refused)) == ("Give a positive number.",) * 2
    assert (refused.code, refused.param) == (Code.INVALID_PARAM, "top_k")
    with pytest.raises(ValueError):
        Refusal("Unknown.", code="not a code")


def test_v1_answers_a_busy_model_with_openais_429_and_retry_after():
    answer = v1_error(Code.BUSY, "The model is busy.")

    assert answer.status_code == 429 and answer["Retry-After"]
    assert b"rate_limit_exceeded" in answer.content
    assert v1_error(Code.WRONG_STATUS, "Refused.").status_code == 400
    assert V1_ERRORS[Code.CONTEXT_FULL].code == "context_length_exceeded"


@pytest.mark.django_db
def test_the_api_answers_a_lifecycle_refusal_with_its_codes_status(admin) -> None:  # type: ignore[no-untyped-def]
    from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
    from tests.fixtures.personas import client_for

    model = LocalModel.objects.create(
        name="m", slug="m", status=ModelStatus.INSTALLING, source_kind=SourceKind.PATH
    )

    answer = client_for(admin).post(f"/api/models/{model.pk}/retire")

    assert answer.status_code == 409 and answer.json()["detail"]
