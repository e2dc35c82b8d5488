"""OpenAI request bodies: what is passed to the model, what is accepted and ignored, what is
refused with a 400 that names the parameter."""

from __future__ import annotations

import json

import pytest

from opsdash.gateway.models import Endpoint
from opsdash.gateway.parsing import InvalidRequest, parse_chat, parse_completion
from opsdash.gateway.responses import Answer, Chunks, completion_body

HELLO = [{"role": "user", "content": "hello"}]


def chat(**body):  # type: ignore[no-untyped-def]
    return parse_chat({"model": "m", "messages": HELLO} | body)


def refusal(parse, body) -> InvalidRequest:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    return caught.value


def test_the_generation_parameters_reach_the_run_and_max_completion_tokens_wins():
    call = chat(
        temperature=0.2, top_p=0.9, seed=7, stop="\n", max_tokens=5, max_completion_tokens=9
    )
    assert call.params == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": "\n",
        "max_tokens": 9,
    }
    assert call.endpoint == Endpoint.CHAT and call.messages == HELLO and call.prompt is None


def test_without_a_limit_chat_leaves_max_tokens_to_the_model_and_completions_use_16():
    assert "max_tokens" not in chat().params
    assert parse_completion({"model": "m", "prompt": "hi"}).params == {"max_tokens": 16}


def test_the_neutral_values_openai_clients_send_are_accepted():
    call = chat(
        n=1,
        frequency_penalty=0,
        presence_penalty=0.0,
        logit_bias={},
        logprobs=False,
        response_format={"type": "text"},
        tools=[],
        tool_choice="none",
        parallel_tool_calls=True,
        stream=False,
        user="user-42",
        metadata={"team": "finance"},
        store=False,
        service_tier="auto",
        top_k=20,
        repeat_penalty=1.0,
    )
    assert call.user == "user-42" and call.params["top_k"] == 20
    assert not call.stream


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"n": 2}, "n", "n must be 1"),
        ({"n": True}, "n", "n must be 1"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported"),
        ({"logit_bias": {"50256": -100}}, "logit_bias", "not supported"),
        ({"logprobs": True}, "logprobs", "log probabilities"),
        ({"response_format": {"type": "json_object"}}, "response_format", "json mode"),
        ({"tools": [{"type": "function"}]}, "tools", "tool"),
        ({"tool_choice": "required"}, "tool_choice", "tool"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "not supported"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"temprature": 0.5}, "temprature", "unrecognized request argument"),
        ({"model": None}, "model", "provide a model"),
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": None}, "messages", "missing required parameter"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0]", "tool"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "robot"),
    ],
)
def test_what_the_gateway_cannot_do_is_refused_by_name(body, param, words):
    error = refusal(parse_chat, {"model": "m", "messages": HELLO} | body)
    assert error.param == param
    assert words in error.message.lower()


def test_text_parts_are_joined_and_the_developer_role_is_a_system_message():
    call = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            },
            {"role": "assistant", "content": None},
        ]
    )
    assert call.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one\ntwo"},
        {"role": "assistant", "content": ""},
    ]


def test_an_image_part_is_refused_because_the_models_read_text_only():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    error = refusal(parse_chat, {"model": "m", "messages": [{"role": "user", "content": [image]}]})
    assert error.param == "messages[0].content" and "text only" in error.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"best_of": 2}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"logprobs": 1}, "logprobs"),
        ({"messages": HELLO}, "messages"),
    ],
)
def test_a_completion_takes_one_text_prompt_and_no_batch_or_insertion(body, param):
    error = refusal(parse_completion, {"model": "m", "prompt": "hi"} | body)
    assert error.param == param


def test_a_batch_of_one_prompt_is_one_prompt():
    assert parse_completion({"model": "m", "prompt": ["hi"], "echo": False}).prompt == "hi"


def test_responses_and_chunks_have_openais_shape():
    answer = Answer("chatcmpl-1", 1700000000, "m", "Bonjour", "length", 12, 3, "opsdash-x")
    body = completion_body(Endpoint.CHAT, answer)
    assert body["object"] == "chat.completion" and body["system_fingerprint"] == "opsdash-x"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Bonjour",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}

    chunks = Chunks(
        Endpoint.CHAT, "chatcmpl-1", 1700000000, "m", include_usage=True, system_fingerprint="fp"
    )
    assert chunks.opening().startswith(b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk"')
    assert b'"delta":{"content":"Bon"}' in chunks.text("Bon")
    assert b'"finish_reason":"stop"' in chunks.finish("stop")
    assert b'"choices":[],"usage":{"prompt_tokens":12' in chunks.usage(12, 3)
    assert chunks.text("x").endswith(b"\n\n") and Chunks.DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    "stop", [5, {"a": "b"}, [1], ["ok", None], [["nested"]]], ids=lambda s: repr(s)
)
def test_a_stop_that_is_not_a_string_or_strings_is_refused_by_name(stop):
    assert refusal(parse_completion, {"model": "m", "prompt": "hi", "stop": stop}).param == "stop"
    assert chat(stop=["\n", "User:"]).params["stop"] == ["\n", "User:"]


def test_every_chunk_of_a_stream_names_the_same_string_fingerprint():
    for endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        chunks = Chunks(endpoint, "id-1", 1, "m", include_usage=True, system_fingerprint="fp_1")
        events = [chunks.opening(), chunks.text("a"), chunks.finish("stop"), chunks.usage(1, 1)]
        decoded = [json.loads(e.removeprefix(b"data: ")) for e in events if e]
        assert {d["system_fingerprint"] for d in decoded} == {"fp_1"}
