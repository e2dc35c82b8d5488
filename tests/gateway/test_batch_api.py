"""The Batch API's files and batches through Django's test client: uploads validated whole
(refusals name the line and store nothing), batches created with their items, listed,
retrieved and cancelled, a workflow's key seeing its workflow's only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from opsdash.gateway.batches import batch_progress, finish_batch
from opsdash.gateway.models import Batch, BatchFile, BatchItem, BatchStatus, ItemStatus
from opsdash.gateway.services import create_api_key
from opsdash.runs.models import Run
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(db):  # type: ignore[no-untyped-def]
    return factories.local_model("tiny-llama")


def chat_line(custom_id: str, model: str = "tiny-llama", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]} | body,
    }


def jsonl(*lines: Any) -> bytes:
    return b"".join(
        (json.dumps(x) if not isinstance(x, str) else x).encode() + b"\n" for x in lines
    )


def upload(client: Client, key: str, data: bytes, *, purpose: str = "batch"):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/files",
        {"file": SimpleUploadedFile("requests.jsonl", data), "purpose": purpose},
        headers={"Authorization": f"Bearer {key}"},
    )


def post_json(client: Client, key: str, path: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    return client.post(
        path, body, content_type="application/json", headers={"Authorization": f"Bearer {key}"}
    )


def get(client: Client, key: str, path: str):  # type: ignore[no-untyped-def]
    return client.get(path, headers={"Authorization": f"Bearer {key}"})


def test_an_uploaded_file_is_an_openai_file_object_and_its_content_comes_back(
    client, api_key, model
):
    data = jsonl(chat_line("a"), chat_line("b", max_tokens=4))
    response = upload(client, api_key.secret, data)
    assert response.status_code == 200, response.content
    obj = response.json()
    assert obj["object"] == "file" and obj["id"].startswith("file-")
    assert obj["bytes"] == len(data) and obj["purpose"] == "batch"
    assert obj["filename"] == "requests.jsonl" and obj["status"] == "processed"
    stored = BatchFile.objects.get()
    assert stored.line_count == 2 and stored.workflow == api_key.key.workflow

    assert get(client, api_key.secret, f"/v1/files/{obj['id']}").json() == obj
    content = get(client, api_key.secret, f"/v1/files/{obj['id']}/content")
    assert content.status_code == 200 and content.content == data
    listed = get(client, api_key.secret, "/v1/files").json()
    assert [f["id"] for f in listed["data"]] == [obj["id"]]


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (
            [chat_line("a"), chat_line("b"), chat_line("a")],
            "Line 3: custom_id 'a' is used again (first on line 1).",
        ),
        ([chat_line("a"), "{not json"], "Line 2 is not valid JSON"),
        (
            [chat_line("a"), chat_line("b") | {"url": "/v1/embeddings"}],
            "Line 2: url must be /v1/chat/completions or /v1/completions",
        ),
        (
            [
                chat_line("a"),
                {
                    "custom_id": "b",
                    "method": "POST",
                    "url": "/v1/completions",
                    "body": {"model": "tiny-llama", "prompt": "hi"},
                },
            ],
            "Line 2 is for /v1/completions but line 1 is for /v1/chat/completions",
        ),
        ([chat_line("a", n=2)], "Line 1: n must be 1"),
        ([chat_line("a", stream=True)], "Line 1: stream must not be true"),
        ([chat_line("a"), chat_line("b", model="gpt-4o")], "Line 2 asks for the model `gpt-4o`"),
        ([chat_line("a", model="gpt-4o")], "Line 1: The model `gpt-4o` does not exist."),
        ([chat_line("a") | {"method": "GET"}], 'Line 1: method must be "POST".'),
        ([chat_line("a"), [1, 2]], "Line 2 must be a JSON object"),
        ([], "The file holds no requests"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_and_nothing_is_stored(
    client, api_key, model, lines, words
):
    response = upload(client, api_key.secret, jsonl(*lines))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert words in error["message"]
    assert not BatchFile.objects.exists()


def test_a_line_is_refused_for_what_the_live_endpoint_refuses(client, api_key, model):
    # The same body sent to /v1/chat/completions gets this 400 with this sentence.
    bad = {"model": "tiny-llama", "messages": [{"role": "tool", "content": "x"}]}
    live = post_json(client, api_key.secret, "/v1/chat/completions", bad)
    assert live.status_code == 400
    response = upload(client, api_key.secret, jsonl(chat_line("a") | {"body": bad}))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"Line 1: {live.json()['error']['message']}"
    assert response.json()["error"]["param"] == "body.messages[0]"
    assert not BatchFile.objects.exists() and not Run.objects.exists()


def test_a_file_over_the_limit_is_refused_with_413(client, api_key, model, settings):
    settings.BATCH_FILE_MAX_BYTES = 200
    response = upload(client, api_key.secret, jsonl(*(chat_line(str(i)) for i in range(5))))
    assert response.status_code == 413
    assert "OPSDASH_BATCH_FILE_MAX_BYTES" in response.json()["error"]["message"]
    assert not BatchFile.objects.exists()


def test_a_file_with_more_requests_than_a_batch_takes_is_refused(client, api_key, model, settings):
    settings.BATCH_MAX_REQUESTS = 2
    response = upload(client, api_key.secret, jsonl(*(chat_line(str(i)) for i in range(3))))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Line 3: the file holds more than 2")
    assert not BatchFile.objects.exists()


def test_another_purpose_and_a_missing_key_are_refused(client, api_key, model):
    other = upload(client, api_key.secret, jsonl(chat_line("a")), purpose="fine-tune")
    assert other.status_code == 400 and other.json()["error"]["param"] == "purpose"
    anonymous = client.post("/v1/files", {"purpose": "batch"})
    assert anonymous.status_code == 401
    assert not BatchFile.objects.exists()


def _uploaded(client: Client, key: str, count: int = 3) -> str:
    data = jsonl(*(chat_line(f"req-{i}", max_tokens=3) for i in range(count)))
    response = upload(client, key, data)
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


def test_a_batch_is_created_in_progress_with_one_item_per_line(client, api_key, model):
    file_id = _uploaded(client, api_key.secret)
    response = post_json(
        client,
        api_key.secret,
        "/v1/batches",
        {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"job": "nightly"},
        },
    )
    assert response.status_code == 200, response.content
    obj = response.json()
    assert obj["object"] == "batch" and obj["id"].startswith("batch_")
    assert obj["status"] == "in_progress" and obj["input_file_id"] == file_id
    assert obj["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert obj["expires_at"] - obj["created_at"] == 24 * 3600
    assert obj["metadata"] == {"job": "nightly"} and obj["output_file_id"] is None
    batch = Batch.objects.get()
    assert batch.model == model and batch.workflow == api_key.key.workflow
    items = list(BatchItem.objects.filter(batch=batch).values_list("line", "custom_id", "status"))
    assert items == [(1, "req-0", "pending"), (2, "req-1", "pending"), (3, "req-2", "pending")]
    assert get(client, api_key.secret, f"/v1/batches/{obj['id']}").json() == obj


def test_a_batch_for_another_endpoint_or_window_or_a_gone_model_is_refused(client, api_key, model):
    from opsdash.catalog.services import retire_model

    file_id = _uploaded(client, api_key.secret)

    def create(**body: Any):  # type: ignore[no-untyped-def]
        base = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        return post_json(
            client, api_key.secret, "/v1/batches", base | {"completion_window": "24h"} | body
        )

    wrong = create(endpoint="/v1/completions")
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"] == (
        "Line 1 is for /v1/chat/completions but the batch is for /v1/completions."
    )
    assert create(completion_window="1h").json()["error"]["param"] == "completion_window"
    assert create(input_file_id="file-nope").status_code == 400
    retire_model(model=model, user=None)
    gone = create()
    assert (
        gone.status_code == 400
        and "Line 1: The model `tiny-llama` is retired" in (gone.json()["error"]["message"])
    )
    assert not Batch.objects.exists() and not BatchItem.objects.exists()


def test_a_key_sees_its_own_workflows_files_and_batches_only(client, api_key, model):
    file_id = _uploaded(client, api_key.secret)
    other = create_api_key(workflow=factories.workflow("other"), name="x", user=None).secret
    assert get(client, other, f"/v1/files/{file_id}").status_code == 404
    assert get(client, other, f"/v1/files/{file_id}/content").status_code == 404
    refused = post_json(
        client,
        other,
        "/v1/batches",
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert refused.status_code == 400 and not Batch.objects.exists()
    assert get(client, other, "/v1/files").json()["data"] == []


def _batch(client: Client, key: str, count: int = 3) -> str:
    response = post_json(
        client,
        key,
        "/v1/batches",
        {
            "input_file_id": _uploaded(client, key, count),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    return str(response.json()["id"])


def test_batches_are_listed_newest_first_in_pages(client, api_key, model):
    ids = [_batch(client, api_key.secret, 1) for _ in range(3)]
    first = get(client, api_key.secret, "/v1/batches?limit=2").json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["first_id"] == ids[2] and first["last_id"] == ids[1]
    rest = get(client, api_key.secret, f"/v1/batches?limit=2&after={first['last_id']}").json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert get(client, api_key.secret, "/v1/batches?limit=0").status_code == 400


def test_cancelling_a_batch_that_has_not_started_ends_it_with_an_error_file(client, api_key, model):
    batch_id = _batch(client, api_key.secret)
    response = post_json(client, api_key.secret, f"/v1/batches/{batch_id}/cancel", {})
    assert response.status_code == 200, response.content
    obj = response.json()
    assert obj["status"] == "cancelled" and obj["cancelled_at"] and obj["cancelling_at"]
    assert obj["output_file_id"] is None and obj["error_file_id"]
    errors = get(client, api_key.secret, f"/v1/files/{obj['error_file_id']}/content").content
    lines = [json.loads(line) for line in errors.splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    assert {line["error"]["code"] for line in lines} == {"batch_cancelled"}
    assert all(line["response"] is None for line in lines)
    again = post_json(client, api_key.secret, f"/v1/batches/{batch_id}/cancel", {})
    assert again.status_code == 400 and "already cancelled" in again.json()["error"]["message"]


def test_cancelling_a_batch_with_a_running_item_waits_for_it(client, api_key, model):
    batch_id = _batch(client, api_key.secret)
    batch = Batch.objects.get(public_id=batch_id)
    BatchItem.objects.filter(batch=batch, line=1).update(status=ItemStatus.RUNNING)
    obj = post_json(client, api_key.secret, f"/v1/batches/{batch_id}/cancel", {}).json()
    assert obj["status"] == "cancelling" and obj["cancelled_at"] is None
    statuses = dict(BatchItem.objects.filter(batch=batch).values_list("line", "status"))
    assert statuses == {1: "running", 2: "cancelled", 3: "cancelled"}
    BatchItem.objects.filter(batch=batch, line=1).update(status=ItemStatus.FAILED)
    assert finish_batch(batch=batch).status == BatchStatus.CANCELLED


def test_progress_counts_settled_requests(model, api_key):
    from django.utils import timezone

    batch = Batch(
        total=4,
        completed=1,
        failed=1,
        completion_tokens=50,
        status=BatchStatus.IN_PROGRESS,
        in_progress_at=timezone.now() - timezone.timedelta(seconds=10),
    )
    progress = batch_progress(batch)
    assert progress.done == 1 and progress.failed == 1 and progress.percent == 50.0
    assert progress.tokens_per_second is not None and 4.5 < progress.tokens_per_second < 5.5
    assert progress.eta_seconds is not None and 9 < progress.eta_seconds < 12
