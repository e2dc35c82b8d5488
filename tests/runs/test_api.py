"""POST /api/runs and GET /api/runs, /api/runtime in the shapes DESIGN.md promises."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from opsdash.accounts.services import create_token
from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Run, RunStatus
from opsdash.runs.runtime import get_supervisor
from tests.fixtures import tinymodels
from tests.fixtures.models import install_ready

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bearer(operator) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=operator, name='t').secret}"}


def post_run(client, bearer, **body):  # type: ignore[no-untyped-def]
    return client.post("/api/runs", body, content_type="application/json", **bearer)


def test_a_script_runs_a_prompt_and_gets_text_usage_and_timings(client, bearer, tiny_model):
    response = post_run(
        client,
        bearer,
        model=tiny_model.pk,
        prompt="hello world",
        max_tokens=6,
        temperature=0,
        seed=7,
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["text"]
    assert body["usage"] == {
        "prompt_tokens": body["usage"]["prompt_tokens"],
        "completion_tokens": 6,
    }
    assert body["usage"]["prompt_tokens"] > 0
    assert {"ttft_ms", "tokens_per_second", "total_ms"} <= body["timings"].keys()
    run = Run.objects.get(pk=body["id"])
    assert run.source == "api" and run.workflow.slug == "playground" and run.output == body["text"]


def test_the_same_seed_gives_the_same_answer(client, bearer, tiny_model):
    first = post_run(
        client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=8, seed=3
    ).json()
    second = post_run(
        client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=8, seed=3
    ).json()
    assert first["status"] == second["status"] == "ok", (first["error"], second["error"])
    assert first["usage"]["completion_tokens"] == 8 and first["text"]
    assert first["text"] == second["text"]


def test_chat_messages_go_through_the_models_chat_template(client, bearer, smol_model):
    question = "What is the capital of France?"
    chat = post_run(
        client,
        bearer,
        model=smol_model.pk,
        max_tokens=24,
        temperature=0,
        messages=[{"role": "user", "content": question}],
    ).json()
    raw = post_run(client, bearer, model=smol_model.pk, max_tokens=1, prompt=question).json()
    assert chat["status"] == "ok" and chat["text"].strip()
    # The template wraps the question in <|im_start|>user … <|im_end|> and a system turn.
    assert chat["usage"]["prompt_tokens"] >= raw["usage"]["prompt_tokens"] + 6


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prompt": ""}, 400, "empty"),
        ({"prompt": "hi", "temperature": 5}, 400, "temperature"),
        ({"prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
        ({"prompt": "hi", "workflow": "nope"}, 404, "workflow"),
        ({}, 400, "prompt or chat messages"),
    ],
)
def test_bad_requests_get_a_clear_error_and_no_run(client, bearer, tiny_model, body, status, words):
    response = post_run(client, bearer, model=tiny_model.pk, **body)
    assert response.status_code == status
    assert words in response.json()["detail"].lower()
    assert not Run.objects.exists()


def test_a_lone_surrogate_in_a_prompt_gets_400_with_a_sentence_and_no_run(
    client, bearer, tiny_model
):
    body = f'{{"model": {tiny_model.pk}, "prompt": "hi \\ud800 there"}}'
    response = client.post("/api/runs", body, content_type="application/json", **bearer)
    assert response.status_code == 400, response.content
    assert "not valid unicode" in response.json()["detail"].lower()
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("offset=-1", "offset"),
        ("offset=12345678901234567890", "offset"),
        ("model=9223372036854775808", "model"),
    ],
)
def test_run_filters_out_of_range_get_a_4xx_with_a_sentence(client, bearer, query, field):
    response = client.get(f"/api/runs?{query}", **bearer)
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith(f"{field}: ")


def test_an_unknown_or_retired_model_is_refused(client, bearer, tiny_model):
    from opsdash.catalog.services import retire_model

    assert post_run(client, bearer, model=999999, prompt="hi").status_code == 404
    retire_model(model=tiny_model, user=None)
    response = post_run(client, bearer, model=tiny_model.pk, prompt="hi")
    assert response.status_code == 409 and "retired" in response.json()["detail"]


def test_runs_are_listed_newest_first_and_filtered(client, bearer, tiny_model, operator, admin):
    for _ in range(2):
        post_run(client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=2)
    listing = client.get("/api/runs?status=ok", **bearer).json()
    assert listing["count"] == 2 and listing["items"][0]["id"] > listing["items"][1]["id"]
    assert client.get("/api/runs?status=error", **bearer).json()["count"] == 0
    assert client.get(f"/api/runs?model={tiny_model.pk + 1}", **bearer).json()["count"] == 0

    other = {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=admin, name='a').secret}"}
    admin_view = client.get("/api/runs?user=otto", **other).json()
    assert admin_view["count"] == 2, "admins see everyone's runs"


def test_operators_see_only_their_own_runs(client, bearer, tiny_model, admin):
    post_run(client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=2)
    mine = {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=admin, name='a').secret}"}
    from django.contrib.auth.models import Group, User

    other = User.objects.create_user("olga")
    other.groups.add(Group.objects.get_or_create(name="operator")[0])
    theirs = {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=other, name='o').secret}"}
    assert client.get("/api/runs", **theirs).json()["count"] == 0
    assert client.get("/api/runs", **mine).json()["count"] == 1


def test_runtime_lists_the_loaded_model_with_its_process(client, bearer, tiny_model):
    post_run(client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=2)
    runtime = client.get("/api/runtime", **bearer).json()
    assert runtime["memory_budget_bytes"] > 0
    (loaded,) = runtime["loaded"]
    assert loaded["model"] == tiny_model.pk and loaded["pid"] > 0 and loaded["rss_bytes"] > 0
    assert {"loaded_at", "last_used_at", "queue_length"} <= loaded.keys()


def test_a_run_left_running_by_a_dead_process_becomes_interrupted(tiny_model, operator):
    import os

    from opsdash.runs.services import RunRequest, RunSource, mark_interrupted_runs, start_run

    run = start_run(
        request=RunRequest(model_id=tiny_model.pk, prompt="hi"), user=operator, source=RunSource.API
    )
    Run.objects.filter(pk=run.pk).update(pid=2**22 + 4321, host=os.uname().nodename)
    assert mark_interrupted_runs() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.INTERRUPTED and "stopped" in run.error


def test_a_chosen_plain_chat_format_renders_messages_for_a_model_without_a_template(
    client, bearer, tiny_gpt2_model
):
    from opsdash.catalog.services import set_prompt_format

    gpt2 = tiny_gpt2_model
    set_prompt_format(model=gpt2, prompt_format="alpaca", user=None)
    messages = [{"role": "user", "content": "hello world"}]
    chat = post_run(client, bearer, model=gpt2.pk, messages=messages, max_tokens=1).json()
    rendered = "### Instruction:\nhello world\n\n### Response:\n"
    raw = post_run(client, bearer, model=gpt2.pk, prompt=rendered, max_tokens=1).json()
    assert chat["status"] == raw["status"] == "ok"
    assert chat["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"]


def test_a_finished_run_records_the_runner_and_its_cpu_time(client, bearer, tiny_model):
    body = post_run(client, bearer, model=tiny_model.pk, prompt="hello", max_tokens=8).json()
    run = Run.objects.get(pk=body["id"])
    assert run.runner_pid and run.cpu_seconds is not None and run.cpu_seconds > 0


@pytest.fixture
def long_model(db, settings, model_root, tmp_path, supervisor_cleanup) -> LocalModel:  # type: ignore[no-untyped-def]
    """The tiny llama widened to ~80 MB of f32 weights, and one place per model (running or
    waiting).

    A long generation by construction: the tiny llama never ends by itself, so a large
    ``max_tokens`` runs to its context, and every token reads all the weights: seconds of work
    on any CPU, against the milliseconds the refused request needs.
    """
    settings.QUEUE_DEPTH = 1
    settings.PARALLEL_SEQUENCES = 1
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "TINY_LLAMA_EMBEDDING_LENGTH": 512,
            "TINY_LLAMA_FEED_FORWARD_LENGTH": 1536,
            "TINY_LLAMA_BLOCK_COUNT": 6,
            "TINY_LLAMA_HEAD_COUNT": 8,
            "TINY_LLAMA_HEAD_COUNT_KV": 8,
        }.items():
            patch.setattr(tinymodels, name, value)
        path = tinymodels.write_tiny_gguf_llama(tmp_path / "long-llama.gguf")
    return install_ready(path, model_root)


def test_a_full_queue_answers_429_with_retry_after_a_sentence_and_the_run(bearer, long_model):
    # Each request in its own thread, as a server serves them (one thread per request).
    # One decoded and one waiting fill the model (queue depth 1 beyond one sequence).
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(
            post_run, Client(), bearer, model=long_model.pk, prompt="hello", max_tokens=300
        )
        deadline = time.monotonic() + 60
        while not any(s.queue_length and s.loaded_at for s in get_supervisor().status()):
            assert time.monotonic() < deadline, "the first run never started"
            assert not first.done(), first.result().content
            time.sleep(0.02)
        second = pool.submit(
            post_run, Client(), bearer, model=long_model.pk, prompt="hello", max_tokens=2
        )
        while not any(s.queue_length >= 2 for s in get_supervisor().status()):
            assert time.monotonic() < deadline, "the second run never reached the model"
            assert not first.done(), first.result().content
            time.sleep(0.02)
        busy = post_run(Client(), bearer, model=long_model.pk, prompt="hi", max_tokens=1)
        assert first.result().status_code == 200
        assert second.result().status_code == 200
    assert busy.status_code == 429, busy.content
    assert busy["Retry-After"] == "2"
    body = busy.json()
    assert "busy" in body["detail"].lower()
    assert body["run"]["status"] == "error" and body["run"]["error_code"] == "busy"
    assert Run.objects.filter(pk=body["run"]["id"], error_code="busy").exists()


def test_a_run_a_server_shutdown_ends_answers_503_with_retry_after_and_the_run(
    bearer, endless_model
):
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(
            post_run, Client(), bearer, model=endless_model.pk, prompt="hello", max_tokens=200_000
        )
        deadline = time.monotonic() + 60
        while not any(s.state == "busy" for s in get_supervisor().status()):
            assert time.monotonic() < deadline, "the run never started"
            assert not answer.done(), answer.result().content
            time.sleep(0.02)
        get_supervisor().interrupt()  # what the server's stop signal does
        reply = answer.result(timeout=30)
    assert reply.status_code == 503, reply.content
    assert reply["Retry-After"] == "2"
    body = reply.json()
    assert "shut down" in body["detail"]
    assert body["run"]["status"] == "interrupted"
    assert Run.objects.get(pk=body["run"]["id"]).status == RunStatus.INTERRUPTED
