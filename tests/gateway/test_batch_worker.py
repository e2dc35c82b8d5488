"""The batch worker with real runners and the tiny GGUF model: a batch's requests become
batch runs of the key's workflow and its output file answers each once; it resumes after a
crash; a cancel ends it; a model that goes away fails what is left with a sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from opsdash.core.processes import current_process, process_start_time
from opsdash.gateway import batch_worker
from opsdash.gateway.batches import cancel_batch, create_batch, create_file
from opsdash.gateway.models import Batch, BatchItem, BatchStatus, ItemStatus
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.runtime import stop_supervisor

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 180


@pytest.fixture
def worker() -> Iterator[None]:
    batch_worker.start_worker()
    yield
    batch_worker.stop_worker()


def requests_file(model: str, count: int, *, max_tokens: int = 4) -> bytes:
    lines = [
        {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"item {i}: hello"}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "seed": 7,
            },
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def new_batch(api_key, model, count: int, **kwargs: Any) -> Batch:  # type: ignore[no-untyped-def]
    file = create_file(
        key=api_key.key,
        filename="jobs.jsonl",
        data=requests_file(model.slug, count, **kwargs),
        purpose="batch",
    )
    return create_batch(
        key=api_key.key,
        input_file_id=file.public_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )


def wait_for(predicate, what: str, timeout: float = WAIT_SECONDS) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def ended(batch: Batch) -> Batch:
    wait_for(
        lambda: (
            Batch.objects.get(pk=batch.pk).status in {BatchStatus.COMPLETED, BatchStatus.CANCELLED}
        ),
        "the batch to end",
    )
    return Batch.objects.select_related("output_file", "error_file").get(pk=batch.pk)


def lines_of(file) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    if file is None:
        return []
    return [json.loads(line) for line in bytes(file.content).splitlines()]


def test_each_request_becomes_a_batch_run_and_is_answered_once(worker, api_key, tiny_model):
    batch = ended(new_batch(api_key, tiny_model, 6))
    assert batch.status == BatchStatus.COMPLETED and batch.completed_at is not None
    assert (batch.completed, batch.failed, batch.total) == (6, 0, 6)
    assert batch.error_file is None
    output = lines_of(batch.output_file)
    assert sorted(line["custom_id"] for line in output) == [f"task-{i}" for i in range(6)]
    runs = {run.pk: run for run in Run.objects.all()}
    assert len(runs) == 6
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == tiny_model.slug
        assert body["usage"]["completion_tokens"] == 4
        run = runs[int(body["id"].rsplit("-", 1)[1])]
        assert response["request_id"] == f"req_opsdash_{run.pk}"
        assert body["choices"][0]["message"]["content"] == run.output
        assert run.source == RunSource.BATCH and run.status == RunStatus.OK
        assert run.workflow == api_key.key.workflow and run.user is None
    assert batch.completion_tokens == 24
    assert batch.prompt_tokens == sum(run.prompt_tokens or 0 for run in runs.values())
    assert batch.claimed_by == "" and batch.lease_until is None


def _dead_pid() -> tuple[int, float]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(child.pid)
    child.wait()
    return child.pid, started or time.time()


def test_a_batch_left_by_a_crashed_process_resumes_and_answers_every_request_once(
    api_key, tiny_model
):
    # Enough requests that some are still waiting when the worker is stopped, however fast
    # this machine decodes (the runner takes several at once).
    count = 60
    batch = new_batch(api_key, tiny_model, count, max_tokens=6)
    batch_worker.start_worker()
    try:
        wait_for(
            lambda: BatchItem.objects.filter(batch=batch, status=ItemStatus.DONE).count() >= 2,
            "some requests to be answered",
        )
    finally:
        batch_worker.stop_worker()
        stop_supervisor()
    done_before = set(
        BatchItem.objects.filter(batch=batch, status=ItemStatus.DONE).values_list("pk", flat=True)
    )
    assert 2 <= len(done_before) <= count - 2, "stopped mid-batch"

    # What a crash leaves: the batch leased to a process that is gone, two requests `running`
    # with runs of that process still `running`.
    pid, started = _dead_pid()
    host = current_process().host
    Batch.objects.filter(pk=batch.pk).update(
        claimed_by=f"{host}:{pid}:{started}", lease_until=timezone.now() + timedelta(minutes=5)
    )
    crashed = list(
        BatchItem.objects.filter(batch=batch, status=ItemStatus.PENDING).order_by("line")[:2]
    )
    for item in crashed:
        run = Run.objects.create(
            model=tiny_model,
            workflow=api_key.key.workflow,
            source=RunSource.BATCH,
            prompt="left behind",
            host=host,
            pid=pid,
            pid_started_at=started,
        )
        BatchItem.objects.filter(pk=item.pk).update(status=ItemStatus.RUNNING, run=run)

    batch_worker.start_worker()  # the restarted server
    try:
        batch = ended(batch)
    finally:
        batch_worker.stop_worker()
    assert batch.status == BatchStatus.COMPLETED and (batch.completed, batch.failed) == (count, 0)
    output = lines_of(batch.output_file)
    assert sorted(line["custom_id"] for line in output) == sorted(f"task-{i}" for i in range(count))
    for item in crashed:
        item.refresh_from_db()
        assert item.status == ItemStatus.DONE and item.run.status == RunStatus.OK
    # What was answered before the stop kept its answer: not run again.
    assert done_before <= set(
        BatchItem.objects.filter(batch=batch, status=ItemStatus.DONE).values_list("pk", flat=True)
    )
    assert batch.completion_tokens == count * 6


def test_a_cancelled_batch_keeps_what_was_answered_and_lists_the_rest_as_cancelled(
    worker, api_key, tiny_model
):
    batch = new_batch(api_key, tiny_model, 60, max_tokens=16)
    wait_for(
        lambda: BatchItem.objects.filter(batch=batch, status=ItemStatus.DONE).exists(),
        "a first answer",
    )
    cancel_batch(batch=batch)
    batch = ended(batch)
    assert batch.status == BatchStatus.CANCELLED and batch.cancelled_at is not None
    output, errors = lines_of(batch.output_file), lines_of(batch.error_file)
    assert output and errors and len(output) + len(errors) == 60
    assert batch.completed == len(output)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(f"task-{i}" for i in range(60))
    assert Run.objects.count() == len(output)


def test_a_model_gone_before_its_batch_ran_fails_every_request_with_a_sentence(api_key, tiny_model):
    from opsdash.catalog.services import retire_model

    batch = new_batch(api_key, tiny_model, 3)
    retire_model(model=tiny_model, user=None)
    batch_worker.start_worker()
    try:
        batch = ended(batch)
    finally:
        batch_worker.stop_worker()
    assert batch.status == BatchStatus.COMPLETED and (batch.completed, batch.failed) == (0, 3)
    errors = lines_of(batch.error_file)
    assert [line["custom_id"] for line in errors] == ["task-0", "task-1", "task-2"]
    assert {line["error"]["code"] for line in errors} == {"model_not_found"}
    assert "is retired, not ready" in errors[0]["error"]["message"]
    assert not Run.objects.exists()
