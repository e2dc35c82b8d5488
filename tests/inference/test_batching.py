"""Several requests decoded together in one llama.cpp runner (``parallel_sequences``).

Driven over the runner's pipes like ``test_runner``. What OpsDash owns is asserted exactly:
that requests overlap, that each is repeatable inside a batch, that a cancel or a priority
touches only its own request. The text itself is compared only with the same runner or the
same library in this run, never with a fixed string.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import GenerationParams
from tests.inference.conftest import RunPython
from tests.inference.peers import llama_cpp_peer
from tests.inference.test_runner import COUNTING_PROMPT, Runner

STORY = "<|im_start|>user\nTell me a story about {}.<|im_end|>\n<|im_start|>assistant\n"
TOPICS = ["a river", "a lighthouse", "a fox", "the moon"]


@pytest.fixture
def runner_for() -> Iterator[Any]:
    runners: list[Runner] = []

    def start(path: Path, backend: str = "llama_cpp", **options: Any) -> Runner:
        runner = Runner(path, backend, **options)
        runners.append(runner)
        loaded = runner.receive(timeout=60)
        assert loaded is not None and loaded["type"] == "loaded", loaded
        runner.loaded = loaded  # type: ignore[attr-defined]
        return runner

    yield start
    for runner in runners:
        runner.close()


def collect(
    runner: Runner, ids: list[str]
) -> tuple[dict[str, str], dict[str, Any], list[tuple[str, str]]]:
    """Texts and done messages of ``ids``, and the order the messages came in (id, type)."""
    texts = dict.fromkeys(ids, "")
    done: dict[str, Any] = {}
    order: list[str] = []
    while len(done) < len(ids):
        message = runner.receive(timeout=120)
        assert message is not None, "the runner closed its pipe"
        request_id = message.get("id")
        if request_id not in texts:
            continue
        assert message["type"] in ("token", "done"), message
        order.append((request_id, message["type"]))
        if message["type"] == "token":
            texts[request_id] += message["text"]
        else:
            done[request_id] = message
    return texts, done, order


def send_stories(runner: Runner, prefix: str, **params: Any) -> list[str]:
    ids = []
    for n, topic in enumerate(TOPICS):
        request_id = f"{prefix}{n}"
        runner.generate(
            request_id,
            prompt=STORY.format(topic),
            params={"max_tokens": 24, "temperature": 0.8, "seed": 100 + n, **params},
        )
        ids.append(request_id)
    return ids


def test_it_says_how_many_sequences_it_decodes_together(
    runner_for: Any, tiny_gguf_path: Path, tiny_ggml_path: Path
) -> None:
    llama = runner_for(tiny_gguf_path, context_length=64, parallel_sequences=4)
    assert llama.loaded["parallel_sequences"] == 4
    assert llama.loaded["context_length"] == 64  # each sequence has the whole context
    # ctransformers decodes one request at a time, whatever it is asked.
    legacy = runner_for(tiny_ggml_path, "ctransformers", model_type="gpt2", parallel_sequences=4)
    assert legacy.loaded["parallel_sequences"] == 1


def test_four_requests_decode_together_and_each_is_repeatable(
    runner_for: Any, smollm2_path: Path
) -> None:
    runner = runner_for(smollm2_path, context_length=512, parallel_sequences=4, threads=2)
    first, first_done, order = collect(runner, send_stories(runner, "a"))
    # They overlapped: every request had said something before the first one ended.
    first_end = next(k for k, (_, kind) in enumerate(order) if kind == "done")
    assert {i for i, _ in order[:first_end]} == {"a0", "a1", "a2", "a3"}
    again, again_done, _ = collect(runner, send_stories(runner, "b"))
    for n in range(4):
        assert again[f"b{n}"] == first[f"a{n}"], f"request {n} was not repeatable in a batch"
        assert again_done[f"b{n}"]["completion_tokens"] == first_done[f"a{n}"]["completion_tokens"]
        assert first_done[f"a{n}"]["cpu_seconds"] > 0
    assert len(set(first.values())) > 1  # different seeds and prompts, different texts


def test_a_request_alone_in_a_parallel_runner_writes_what_llama_cpp_writes(
    runner_for: Any, run_python: RunPython, smollm2_path: Path
) -> None:
    prompt = STORY.format("a river")
    params = GenerationParams(max_tokens=24, temperature=0.0)
    peer = llama_cpp_peer(run_python, smollm2_path, n_ctx=512, params=params, prompt=prompt)
    runner = runner_for(smollm2_path, context_length=512, parallel_sequences=4, threads=1)
    runner.generate("1", prompt=prompt, params={"max_tokens": 24, "temperature": 0})
    texts, done = runner.until_done("1")
    assert "".join(texts) == peer["text"]
    assert done["completion_tokens"] == peer["completion_tokens"]


def test_cancelling_one_sequence_leaves_the_others_untouched(
    runner_for: Any, smollm2_path: Path
) -> None:
    runner = runner_for(smollm2_path, context_length=512, parallel_sequences=4, threads=2)
    alone, _, _ = collect(runner, send_stories(runner, "a", max_tokens=32))
    ids = send_stories(runner, "b", max_tokens=32)
    # Cancel b1 as soon as it has said something.
    texts = dict.fromkeys(ids, "")
    done: dict[str, Any] = {}
    cancelled = False
    while len(done) < len(ids):
        message = runner.receive(timeout=120)
        assert message is not None
        request_id = message["id"]
        if message["type"] == "token":
            texts[request_id] += message["text"]
            if request_id == "b1" and not cancelled:
                runner.send({"type": "cancel", "id": "b1"})
                cancelled = True
        elif message["type"] == "done":
            done[request_id] = message
    assert done["b1"]["finish_reason"] == "cancelled"
    assert done["b1"]["completion_tokens"] < 32
    for n in (0, 2, 3):
        assert texts[f"b{n}"] == alone[f"a{n}"]
        assert done[f"b{n}"]["finish_reason"] != "cancelled"


def test_interactive_work_goes_before_batch_work(runner_for: Any, smollm2_path: Path) -> None:
    runner = runner_for(smollm2_path, context_length=512, parallel_sequences=2, threads=2)
    batch_params = {"max_tokens": 48, "temperature": 0.7}

    def batch(prefix: str) -> None:
        for n in range(2):
            runner.generate(
                f"{prefix}{n}",
                prompt=COUNTING_PROMPT,
                params={**batch_params, "seed": 7 + n},
                priority="batch",
            )

    # The two batch requests alone, for reference.
    batch("r")
    reference, _, order = collect(runner, ["r0", "r1"])
    # A batch request's text arrives in one message, just before its done.
    assert [kind for i, kind in order if i == "r0"] == ["token", "done"]
    assert [kind for i, kind in order if i == "r1"] == ["token", "done"]

    # Now both sequences are busy with batch work when an interactive request arrives.
    batch("b")
    time.sleep(0.5)
    runner.generate("i", prompt=STORY.format("a fox"), params={"max_tokens": 4})
    texts, done, order = collect(runner, ["b0", "b1", "i"])
    ends = [i for i, kind in order if kind == "done"]
    assert ends[0] == "i", order
    assert done["i"]["finish_reason"] in ("length", "stop")
    # The batch request set back to make room was redone from its start, to the same text.
    assert texts["b0"] == reference["r0"] and texts["b1"] == reference["r1"]


def test_requests_beyond_the_sequences_wait_and_all_finish(
    runner_for: Any, tiny_gguf_path: Path
) -> None:
    runner = runner_for(tiny_gguf_path, context_length=64, parallel_sequences=2)
    ids = [str(n) for n in range(5)]
    for request_id in ids:
        runner.generate(request_id, prompt="hello world", params={"max_tokens": 6})
    _, done, order = collect(runner, ids)
    assert {d["finish_reason"] for d in done.values()} <= {"length", "stop"}
    # Never more than the two sequences at once: a request starts writing only after another
    # has ended (a request that ends without a token never held a sequence long).
    writing: set[str] = set()
    for request_id, kind in order:
        if kind == "token":
            writing.add(request_id)
            assert len(writing) <= 2, f"{sorted(writing)} decoded at once with 2 sequences"
        else:
            writing.discard(request_id)
    # The same greedy request gives the same counts wherever it sat in the queue.
    assert len({(d["prompt_tokens"], d["completion_tokens"]) for d in done.values()}) == 1


def test_a_prompt_too_long_for_one_sequence_is_refused_and_the_others_go_on(
    runner_for: Any, tiny_gguf_path: Path
) -> None:
    runner = runner_for(tiny_gguf_path, context_length=32, parallel_sequences=2)
    runner.generate("ok", prompt="hello world", params={"max_tokens": 4})
    runner.generate("long", prompt="hello world " * 40, params={"max_tokens": 4})
    refused = ok = None
    while refused is None or ok is None:
        message = runner.receive()
        assert message is not None
        if message["id"] == "long":
            refused = message
        elif message["id"] == "ok" and message["type"] == "done":
            ok = message
    assert refused["type"] == "error" and refused["code"] == "context_full"
    assert "context of 32 tokens" in refused["reason"]
    assert ok["finish_reason"] in ("length", "stop")
