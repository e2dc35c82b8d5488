"""Every refusal in OpenAI's error shape with the status an OpenAI client expects."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from opsdash.gateway.models import WorkflowKey
from opsdash.gateway.services import revoke_api_key
from opsdash.runs.models import Run, RunStatus
from tests.gateway.conftest import LONG_ANSWER
from tests.gateway.rawhttp import OpenStream, call

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hello"}]


def chat(gateway, body, *, key=None):  # type: ignore[no-untyped-def]
    return call("POST", f"{gateway.base_url}/chat/completions", body, key=key or gateway.key)


def test_a_missing_wrong_or_revoked_key_gets_401(gateway, tiny_model, api_key):
    body = {"model": tiny_model.slug, "messages": HELLO}
    missing = call("POST", f"{gateway.base_url}/chat/completions", body)
    assert missing.status == 401 and "didn't provide an API key" in missing.error["message"]

    wrong = chat(gateway, body, key="odw_" + "A" * 43)
    assert wrong.status == 401 and wrong.error["code"] == "invalid_api_key"
    assert "A" * 20 not in wrong.error["message"], "the key is masked in the answer"

    revoke_api_key(key=api_key.key)
    revoked = call("GET", f"{gateway.base_url}/models", key=gateway.key)
    assert revoked.status == 401 and "revoked" in revoked.error["message"]
    assert revoked.error["code"] == "invalid_api_key"
    assert not Run.objects.exists()
    assert WorkflowKey.objects.get().request_count == 0


def test_an_unknown_or_retired_model_gets_404_model_not_found(gateway, tiny_model):
    from opsdash.catalog.services import retire_model

    unknown = chat(gateway, {"model": "gpt-4o", "messages": HELLO})
    assert unknown.status == 404 and unknown.error["code"] == "model_not_found"
    assert unknown.error["param"] == "model" and "gpt-4o" in unknown.error["message"]

    retire_model(model=tiny_model, user=None)
    retired = chat(gateway, {"model": tiny_model.slug, "messages": HELLO})
    assert retired.status == 404 and "retired" in retired.error["message"]
    detail = call("GET", f"{gateway.base_url}/models/{tiny_model.slug}", key=gateway.key)
    assert detail.status == 404 and detail.error["code"] == "model_not_found"
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"n": 2}, "n", "n must be 1"),
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": [{"role": "user", "content": "   "}]}, None, "empty"),
        ({"temperature": 5}, "temperature", "temperature must be a number from 0 to 2"),
        ({"max_tokens": 0}, "max_tokens", "max_tokens"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool"),
        ({"temprature": 0}, "temprature", "unrecognized request argument"),
    ],
)
def test_an_invalid_request_gets_400_naming_the_parameter_and_writes_no_run(
    gateway, tiny_model, body, param, words
):
    reply = chat(gateway, {"model": tiny_model.slug, "messages": HELLO} | body)
    assert reply.status == 400, reply.body
    assert reply.error["type"] == "invalid_request_error" and reply.error["param"] == param
    assert words in reply.error["message"].lower()
    assert not Run.objects.exists()


def test_a_body_that_is_not_json_or_the_wrong_method_is_refused(gateway, tiny_model):
    broken = call("POST", f"{gateway.base_url}/completions", b"{not json", key=gateway.key)
    assert broken.status == 400 and "json" in broken.error["message"].lower()
    wrong = call("GET", f"{gateway.base_url}/chat/completions", key=gateway.key)
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"


def test_a_prompt_longer_than_the_context_is_refused_by_the_model_with_400(gateway, tiny_model):
    reply = chat(
        gateway, {"model": tiny_model.slug, "messages": [HELLO[0] | {"content": "hello " * 3000}]}
    )
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "context_length_exceeded" and reply.error["param"] == "messages"
    run = Run.objects.get()
    assert run.status == RunStatus.ERROR and "context" in run.error
    assert reply.headers["x-opsdash-run"] == str(run.pk), "a refusal that wrote a run names it"


@pytest.fixture
def queue_of_one(settings) -> None:  # type: ignore[no-untyped-def]
    """One request decoded per model at a time and one waiting (set before the server forks)."""
    settings.QUEUE_DEPTH = 1
    settings.PARALLEL_SEQUENCES = 1


@pytest.mark.slow
def test_a_busy_model_answers_429_with_retry_after(queue_of_one, gateway, endless_model):
    long = OpenStream(
        f"{gateway.base_url}/chat/completions",
        LONG_ANSWER | {"model": endless_model.slug},
        key=gateway.key,
    )
    named: list[int] = []
    try:
        assert long.status == 200
        next(long.events())  # the model is generating for it now
        # A second request takes the one place in the queue (it waits for the first).
        waiter = threading.Thread(
            target=call,
            args=("POST", f"{gateway.base_url}/chat/completions"),
            kwargs={
                "body": {"model": endless_model.slug, "messages": HELLO, "max_tokens": 2},
                "key": gateway.key,
            },
        )
        waiter.start()
        deadline = time.monotonic() + 30
        while Run.objects.count() < 2:
            assert time.monotonic() < deadline, "the second request never reached the model"
            time.sleep(0.05)
        for path, body in (
            ("chat/completions", {"model": endless_model.slug, "messages": HELLO}),
            ("completions", {"model": endless_model.slug, "prompt": "hi", "stream": True}),
        ):
            busy = call("POST", f"{gateway.base_url}/{path}", body, key=gateway.key)
            assert busy.status == 429, busy.body
            assert busy.headers["retry-after"] == "2"
            assert busy.error["type"] == "rate_limit_error" and "busy" in busy.error["message"]
            named.append(int(busy.headers["x-opsdash-run"]))
    finally:
        long.close()
    waiter.join(timeout=60)
    refused = Run.objects.filter(error_code="busy")
    assert refused.count() == 2 and {r.status for r in refused} == {RunStatus.ERROR}, (
        "a refused call is still a run in the ledger"
    )
    assert sorted(named) == sorted(r.pk for r in refused), "and its answer names that run"


def test_a_model_that_cannot_load_answers_503_and_its_run_says_why(gateway, tiny_model):
    path = Path(tiny_model.file_path)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:4096])  # a truncated download, say

    reply = chat(gateway, {"model": tiny_model.slug, "messages": HELLO, "max_tokens": 4})
    assert reply.status == 503, reply.body
    assert reply.error["type"] == "server_error" and reply.error["code"] == "model_not_loaded"
    assert "could not be loaded" in reply.error["message"]
    streamed = chat(gateway, {"model": tiny_model.slug, "messages": HELLO, "stream": True})
    assert streamed.status == 503, "a stream is not begun for a model that cannot load"

    runs = Run.objects.order_by("id")
    assert runs.count() == 2
    for run in runs:
        assert run.status == RunStatus.ERROR and "load" in run.error, run.error
    assert [reply.headers["x-opsdash-run"], streamed.headers["x-opsdash-run"]] == [
        str(run.pk) for run in runs
    ]
