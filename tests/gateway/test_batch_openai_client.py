"""The official ``openai`` package's Batch API calls, unchanged, against a live server (whose
batch worker starts with it): files.create, batches.create, batches.retrieve until the batch
completes, files.content of its output, each line answering what ``/v1`` answers for the same
request."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import openai
import pytest

from opsdash.gateway.models import BatchFile
from opsdash.runs.models import Run, RunSource

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 180


def client(gateway) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=60)


def request(model: str, i: int) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"question {i}: hello world"}],
        "max_tokens": 6,
        "temperature": 0,
        "seed": 5,
    }


def test_the_official_client_runs_a_batch_end_to_end(gateway, tiny_model, workflow):
    api = client(gateway)
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": request(tiny_model.slug, i),
        }
        for i in range(5)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = api.files.create(file=("rows.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(data)
    assert uploaded.purpose == "batch" and uploaded.filename == "rows.jsonl"

    batch = api.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "rows"},
    )
    assert batch.status == "in_progress" and batch.request_counts is not None
    assert batch.request_counts.total == 5

    deadline = time.monotonic() + WAIT_SECONDS
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.monotonic() < deadline, f"the batch is still {batch.status}"
        time.sleep(0.5)
        batch = api.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.completed_at is not None
    assert batch.request_counts is not None and batch.request_counts.completed == 5
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    assert batch.output_file_id is not None
    assert [b.id for b in api.batches.list().data] == [batch.id]

    output = [
        json.loads(line) for line in api.files.content(batch.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == [f"row-{i}" for i in range(5)]
    by_id = {line["custom_id"]: line for line in output}
    assert all(line["error"] is None for line in output)

    # The same requests sent one by one: the same OpsDash, greedy with the same seed, so the
    # same text; and the same shape and counts as the batch's bodies.
    for i in range(5):
        raw = api.chat.completions.with_raw_response.create(**request(tiny_model.slug, i))  # type: ignore[call-overload]
        live = json.loads(raw.http_response.text)
        response = by_id[f"row-{i}"]["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert set(body) == set(live) and body["object"] == live["object"]
        assert body["usage"] == live["usage"] and body["model"] == live["model"]
        assert body["system_fingerprint"] == live["system_fingerprint"]
        choice, live_choice = body["choices"][0], live["choices"][0]
        assert choice["finish_reason"] == live_choice["finish_reason"] == "length"
        assert choice["message"]["content"] == live_choice["message"]["content"]

    batch_runs = Run.objects.filter(source=RunSource.BATCH)
    assert batch_runs.count() == 5 and {r.workflow_id for r in batch_runs} == {workflow.pk}
    assert Run.objects.filter(source=RunSource.GATEWAY).count() == 5


def test_the_client_sees_a_bad_line_refused_and_nothing_stored(gateway, tiny_model):
    first = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
    lines = [first | {"body": request(tiny_model.slug, 0)}] * 2
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).files.create(file=("dup.jsonl", data), purpose="batch")
    assert "Line 2: custom_id 'a' is used again (first on line 1)." in str(refused.value)
    assert not BatchFile.objects.exists()


def _declare_upload(gateway, length: int, *, key: str | None) -> tuple[int, dict[str, object]]:  # type: ignore[no-untyped-def]
    """Send only the headers of an upload of ``length`` bytes: the guard answers before any
    of the body exists."""
    parts = urlsplit(gateway.base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", f"{parts.path}/files")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(length))
    if key is not None:
        connection.putheader("Authorization", f"Bearer {key}")
    connection.endheaders()
    reply = connection.getresponse()
    try:
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_an_upload_over_the_limit_or_without_a_key_is_refused_before_its_body_is_read(
    gateway, tiny_model
):
    from django.conf import settings

    status, body = _declare_upload(gateway, settings.BATCH_FILE_MAX_BYTES + 10**6, key=gateway.key)
    assert status == 413 and "OPSDASH_BATCH_FILE_MAX_BYTES" in body["error"]["message"]
    status, body = _declare_upload(gateway, 10_000, key=None)
    assert status == 401 and "workflow API key" in body["error"]["message"]
    assert not BatchFile.objects.exists()
