"""The official ``openai`` package, sync and async, streaming and not, against a live server."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from asgiref.sync import sync_to_async

from inference.backends.llama_cpp import default_context_length
from opsdash.gateway.models import GatewayCall, WorkflowKey
from opsdash.runs.models import Run, RunStatus
from opsdash.runs.services import generation_params
from tests.inference.conftest import _run_python
from tests.inference.peers import llama_cpp_peer

pytestmark = pytest.mark.django_db(transaction=True)


def client(gateway) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=60)


def test_the_client_lists_the_ready_models_by_slug(gateway, tiny_model, smol_model):
    from opsdash.catalog.services import retire_model

    retire_model(model=smol_model, user=None)
    models = client(gateway).models.list()
    assert [m.id for m in models.data] == [tiny_model.slug]
    assert models.data[0].owned_by == "opsdash" and models.data[0].object == "model"
    assert client(gateway).models.retrieve(tiny_model.slug).id == tiny_model.slug


def test_a_chat_completion_is_a_run_of_the_keys_workflow(gateway, tiny_model, workflow):
    response = client(gateway).chat.completions.create(
        model=tiny_model.slug,
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=6,
        temperature=0,
        seed=3,
        user="customer-17",
    )
    (choice,) = response.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 6
    assert response.usage.total_tokens == response.usage.prompt_tokens + 6

    run = Run.objects.get()
    assert run.source == "gateway" and run.workflow == workflow and run.status == RunStatus.OK
    assert run.output == choice.message.content and run.messages[0]["content"] == "hello world"
    assert run.prompt_tokens == response.usage.prompt_tokens and run.user is None
    assert response.id.endswith(f"-{run.pk}")
    call = GatewayCall.objects.get()
    assert call.run == run and call.end_user == "customer-17" and call.endpoint == "chat"
    key = WorkflowKey.objects.get()
    assert key.request_count == 1 and key.last_used_at is not None


def test_a_streamed_chat_completion_ends_with_its_usage(gateway, tiny_model):
    stream = client(gateway).chat.completions.create(
        model=tiny_model.slug,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 12
    run = Run.objects.get()
    assert run.output == text and run.completion_tokens == 12
    assert GatewayCall.objects.get().stream is True


def test_the_same_seed_gives_the_same_text_through_the_gateway(gateway, tiny_model):
    def ask() -> str:
        return (
            client(gateway)
            .completions.create(
                model=tiny_model.slug, prompt="hello", max_tokens=8, seed=11, temperature=0.8
            )
            .choices[0]
            .text
        )

    assert ask() == ask()


async def test_the_async_client_streams_and_completes_text(gateway, tiny_model):
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=60
    ) as aclient:
        whole = await aclient.completions.create(
            model=tiny_model.slug, prompt="hello world", max_tokens=5, stop=["zzz"]
        )
        assert whole.object == "text_completion" and whole.choices[0].text
        assert whole.usage is not None and whole.usage.completion_tokens == 5

        pieces, usage = [], None
        stream = await aclient.completions.create(
            model=tiny_model.slug,
            prompt="hello world",
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].text)
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens == 7

        chat = await aclient.chat.completions.create(
            model=tiny_model.slug, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert chat.choices[0].message.content

    runs = await sync_to_async(list)(Run.objects.order_by("id"))
    assert [r.source for r in runs] == ["gateway"] * 3
    assert runs[1].output == "".join(pieces)
    assert (await WorkflowKey.objects.aget()).request_count == 3


@pytest.mark.slow
def test_a_real_chat_model_streams_its_answer_through_its_own_chat_template(gateway, smol_model):
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    stream = client(gateway).chat.completions.create(
        model=smol_model.slug,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    # SmolLM2's words depend on this CPU's kernels: compare with llama-cpp-python itself,
    # loaded as the runner loads it and asked with the parameters the run recorded.
    run = Run.objects.get(model=smol_model)
    peer = llama_cpp_peer(
        _run_python,
        Path(smol_model.file_path),
        n_ctx=default_context_length(Path(smol_model.file_path)),
        threads=None,
        messages=messages,
        params=generation_params(run.params),
    )
    assert "".join(pieces) == peer["text"] == run.output
    assert len(pieces) >= 3, "the answer arrives as it is generated, not all at the end"
    assert usage is not None and usage.prompt_tokens == peer["prompt_tokens"] > 20
