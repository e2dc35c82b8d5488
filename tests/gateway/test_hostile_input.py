"""Hostile and malformed bodies on ``/v1``: each is a 400 in OpenAI's JSON shape, never a 500
page, and none of them writes a run."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, RequestFactory

from opsdash.gateway.auth import gateway_endpoint
from opsdash.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 5000 + "]" * 5000


async def post(api_key, path: str, raw: str):  # type: ignore[no-untyped-def]
    return await AsyncClient().post(
        path,
        raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_key.secret}"},
    )


def openai_error(response) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = json.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def no_runs() -> bool:
    return not await sync_to_async(Run.objects.exists)()


@pytest.mark.parametrize(
    ("path", "field", "param"),
    [
        ("/v1/completions", '"prompt": "hi \\ud800 there"', "prompt"),
        (
            "/v1/chat/completions",
            '"messages": [{"role": "user", "content": "\\udfff"}]',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            '"messages": [{"role": "user", "content": "hi"}], "user": "\\ud800"',
            "user",
        ),
    ],
)
async def test_a_lone_surrogate_is_refused_with_400_naming_where_it_is(
    tiny_model, api_key, path, field, param
):
    response = await post(api_key, path, f'{{"model": "{tiny_model.slug}", {field}}}')
    assert response.status_code == 400
    error = openai_error(response)
    assert error["param"] == param and "surrogate" in error["message"]
    assert await no_runs()


async def test_an_escaped_surrogate_pair_is_one_character_and_is_accepted(tiny_model, api_key):
    body = json.dumps({"model": tiny_model.slug, "prompt": "smile \U0001f600", "max_tokens": 2})
    assert "\\ud83d\\ude00" in body
    response = await post(api_key, "/v1/completions", body)
    assert response.status_code == 200, response.content
    run = await Run.objects.aget()
    assert run.prompt == "smile \U0001f600"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(
    "raw", [DEEP, '{"model": "m", "prompt": "hi", "metadata": ' + DEEP + "}"], ids=["body", "field"]
)
async def test_json_nested_5000_deep_is_refused_with_400_in_openais_shape(
    tiny_model, api_key, path, raw
):
    response = await post(api_key, path, raw)
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error" and "nested too deeply" in error["message"]
    assert await no_runs()


@pytest.mark.parametrize("stop", [5, [1, 2], {"a": "b"}, ["ok", None]])
async def test_a_stop_that_is_not_text_is_refused_by_name(tiny_model, api_key, stop):
    body = json.dumps({"model": tiny_model.slug, "prompt": "hi", "stop": stop})
    response = await post(api_key, "/v1/completions", body)
    assert response.status_code == 400
    assert openai_error(response)["param"] == "stop"
    assert await no_runs()


async def test_an_error_escaping_a_v1_view_is_a_500_in_openais_shape_not_a_page(api_key):
    @gateway_endpoint("GET")
    async def broken(request: HttpRequest) -> HttpResponse:
        raise LookupError("a bug in a /v1 view")

    request = RequestFactory().get(
        "/v1/broken", headers={"Authorization": f"Bearer {api_key.secret}"}
    )
    response = await broken(request)
    assert response.status_code == 500
    error = openai_error(response)
    assert error["type"] == "server_error" and "bug" not in error["message"], (
        "the answer says the server failed without showing its internals"
    )
