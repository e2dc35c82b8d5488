"""The runner process, driven directly over its pipes the way the supervisor drives it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import GenerationParams
from tests.inference.conftest import ROOT, RunPython
from tests.inference.peers import ctransformers_peer, llama_cpp_peer

GREEDY_20 = {"max_tokens": 20, "temperature": 0}
COUNTING_PROMPT = "Count from 1 to 500, separated by commas: 1, 2, 3,"
SMOLLM2_HI_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
)


class Runner:
    """A runner child with its two pipes; ``receive`` reads one message with a deadline."""

    def __init__(self, path: Path, backend: str, **options: Any) -> None:
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()
        spec = {"path": str(path), "backend": backend, "options": {"threads": 1, **options}}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inference.runtime.runner",
                "--commands-fd",
                str(commands_read),
                "--events-fd",
                str(events_write),
                json.dumps(spec),
            ],
            pass_fds=(commands_read, events_write),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        os.close(commands_read)
        os.close(events_write)
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        os.write(self._commands, (json.dumps(message) + "\n").encode())

    def receive(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """The next message, or None at the end of the pipe."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "the runner sent nothing in time"
            if select.select([self._events], [], [], left)[0]:
                chunk = os.read(self._events, 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def generate(self, request_id: str, **fields: Any) -> None:
        params = fields.pop("params", {})
        self.send(
            {"type": "generate", "id": request_id, "prompt": None, "messages": None}
            | fields
            | {"params": {"temperature": 0, **params}}
        )

    def until_done(self, request_id: str) -> tuple[list[str], dict[str, Any]]:
        texts = []
        while (message := self.receive()) is not None:
            if message.get("id") != request_id:
                continue
            if message["type"] == "token":
                texts.append(message["text"])
            else:
                return texts, message
        raise AssertionError("the runner closed its pipe before finishing")

    def close(self) -> None:
        os.close(self._commands)
        try:
            self.process.wait(timeout=10)
        finally:
            self.process.kill()
            os.close(self._events)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def start_runner() -> Iterator[Any]:
    runners: list[Runner] = []

    def start(path: Path, backend: str, **options: Any) -> Runner:
        runner = Runner(path, backend, **options)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.close()


def test_it_says_loaded_with_its_pid_and_context_length(
    start_runner: Any, tiny_gguf_path: Path
) -> None:
    runner = start_runner(tiny_gguf_path, "llama_cpp", context_length=128)
    loaded = runner.receive()
    assert loaded is not None
    assert loaded["type"] == "loaded"
    assert loaded["pid"] == runner.process.pid
    assert loaded["context_length"] == 128
    assert loaded["notices"] == []
    assert loaded["load_ms"] > 0


def test_it_streams_tokens_then_one_done_with_the_counts(
    start_runner: Any, tiny_gguf_path: Path
) -> None:
    runner = start_runner(tiny_gguf_path, "llama_cpp")
    runner.receive()
    runner.generate("7", prompt="hello world", params={"max_tokens": 6})
    texts, done = runner.until_done("7")
    assert texts and all(texts)
    assert done == {
        "type": "done",
        "id": "7",
        "finish_reason": "length",
        "prompt_tokens": done["prompt_tokens"],
        "completion_tokens": 6,
        "cpu_seconds": done["cpu_seconds"],
        "wait_ms": done["wait_ms"],
    }
    assert 0 <= done["wait_ms"] < 1000, "it waited only for the command to be read"
    assert done["prompt_tokens"] >= 2
    assert 0 < done["cpu_seconds"] < 30, "the runner reports the CPU time it spent"


def test_it_runs_a_legacy_ggml_model_in_ctransformers(
    start_runner: Any, tiny_ggml_path: Path
) -> None:
    runner = start_runner(tiny_ggml_path, "ctransformers", model_type="gpt2")
    assert runner.receive()["type"] == "loaded"
    runner.generate("1", prompt="hello", params={"max_tokens": 5})
    texts, done = runner.until_done("1")
    assert "".join(texts)
    assert (done["type"], done["finish_reason"], done["completion_tokens"]) == ("done", "length", 5)


def test_it_renders_chat_messages_with_the_models_template(
    start_runner: Any, smollm2_path: Path, run_python: RunPython
) -> None:
    hi = [{"role": "user", "content": "hi"}]
    peer = llama_cpp_peer(
        run_python, smollm2_path, n_ctx=512, messages=hi, params=GenerationParams(**GREEDY_20)
    )
    # What llama-cpp-python's own chat formatter renders from SmolLM2's template.
    assert peer["prompt"] == SMOLLM2_HI_PROMPT

    runner = start_runner(smollm2_path, "llama_cpp", context_length=512)
    runner.receive()
    runner.send({"type": "count", "id": "c1", "prompt": SMOLLM2_HI_PROMPT, "messages": None})
    runner.send({"type": "count", "id": "c2", "prompt": None, "messages": hi})
    rendered, chat = runner.receive(), runner.receive()
    assert rendered == {"type": "count", "id": "c1", "count": peer["prompt_tokens"]}
    assert chat == {"type": "count", "id": "c2", "count": peer["prompt_tokens"]}

    runner.generate("g", messages=hi, params=GREEDY_20)
    texts, done = runner.until_done("g")
    # The text is whatever this CPU's kernels make of it; it must be the library's own.
    assert "".join(texts) == peer["text"]
    assert (done["finish_reason"], done["prompt_tokens"], done["completion_tokens"]) == (
        peer["finish_reason"],
        peer["prompt_tokens"],
        peer["completion_tokens"],
    )


def test_a_cancel_stops_the_generation_within_a_token_and_the_runner_serves_on(
    start_runner: Any, smollm2_path: Path
) -> None:
    runner = start_runner(smollm2_path, "llama_cpp", context_length=512)
    runner.receive()
    runner.generate("long", prompt=COUNTING_PROMPT, params={"max_tokens": 400})
    seen = 0
    while (message := runner.receive()) is not None and message["type"] == "token":
        seen += 1
        if seen == 3:
            runner.send({"type": "cancel", "id": "long"})
    assert message is not None
    assert (message["type"], message["finish_reason"]) == ("done", "cancelled")
    assert 3 <= message["completion_tokens"] <= 5  # the tokens seen, plus at most one in flight

    runner.generate("next", prompt="1, 2, 3,", params={"max_tokens": 3})
    texts, done = runner.until_done("next")
    assert (done["finish_reason"], done["completion_tokens"]) == ("length", 3)


def test_a_request_cancelled_while_queued_ends_cancelled_without_running(
    start_runner: Any, smollm2_path: Path
) -> None:
    runner = start_runner(smollm2_path, "llama_cpp", context_length=512)
    runner.receive()
    runner.generate("first", prompt=COUNTING_PROMPT, params={"max_tokens": 400})
    runner.generate("second", prompt=COUNTING_PROMPT, params={"max_tokens": 400})
    runner.send({"type": "cancel", "id": "second"})
    runner.send({"type": "cancel", "id": "first"})
    _, first = runner.until_done("first")
    texts, second = runner.until_done("second")
    assert first["finish_reason"] == second["finish_reason"] == "cancelled"
    assert (texts, second["completion_tokens"]) == ([], 0)


def test_it_answers_a_ping_while_it_generates(start_runner: Any, smollm2_path: Path) -> None:
    runner = start_runner(smollm2_path, "llama_cpp", context_length=512)
    runner.receive()
    runner.generate("long", prompt=COUNTING_PROMPT, params={"max_tokens": 20})
    assert runner.receive()["type"] == "token"
    runner.send({"type": "ping", "id": "p"})
    while (message := runner.receive()) is not None and message["type"] == "token":
        pass
    assert message == {"type": "pong", "id": "p", "pid": runner.process.pid, "busy": True}
    _, done = runner.until_done("long")
    assert done["finish_reason"] == "length"


def test_a_request_it_refuses_gets_an_error_and_the_runner_serves_on(
    start_runner: Any, tiny_gguf_path: Path
) -> None:
    runner = start_runner(tiny_gguf_path, "llama_cpp")
    runner.receive()
    runner.generate("bad", prompt="hello", params={"max_tokens": 0})
    assert runner.receive() == {
        "type": "error",
        "id": "bad",
        "reason": "max_tokens must be a whole number from 1 to 1000000; got 0.",
    }
    runner.generate("good", prompt="hello", params={"max_tokens": 2})
    _, done = runner.until_done("good")
    assert done["completion_tokens"] == 2


def test_a_model_that_fails_to_load_is_an_error_then_exit_status_1(
    start_runner: Any, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"NOPE, this is not a model. " * 100)
    runner = start_runner(garbage, "llama_cpp")
    message = runner.receive()
    assert message is not None
    assert (message["type"], message["id"]) == ("error", None)
    assert message["reason"].startswith("llama.cpp could not load garbage.gguf (invalid magic")
    assert runner.receive() is None
    assert runner.process.wait(timeout=10) == 1


def test_it_exits_cleanly_on_shutdown_even_while_generating(
    start_runner: Any, smollm2_path: Path
) -> None:
    runner = start_runner(smollm2_path, "llama_cpp", context_length=512)
    runner.receive()
    runner.generate("long", prompt=COUNTING_PROMPT, params={"max_tokens": 400})
    assert runner.receive()["type"] == "token"
    runner.send({"type": "shutdown"})
    _, done = runner.until_done("long")
    assert done["finish_reason"] == "cancelled"
    assert runner.receive() is None
    assert runner.process.wait(timeout=10) == 0


def test_it_exits_when_its_supervisor_goes_away(start_runner: Any, tiny_gguf_path: Path) -> None:
    runner = start_runner(tiny_gguf_path, "llama_cpp")
    runner.receive()
    os.close(runner._commands)  # what the kernel does when the supervisor's process dies
    runner._commands = os.open(os.devnull, os.O_WRONLY)  # so close() has something to close
    assert runner.process.wait(timeout=10) == 0


# --- the same request, whatever ran before it --------------------------------------------------

# B shares A's beginning, so a backend that kept B's tokens would reuse them for A.
ORDER_CASES = {
    "smollm2": ("llama_cpp", None, "The capital of France is", "The capital of Spain is a"),
    "tiny_gguf": ("llama_cpp", None, "hello world the tiny", "hello world the model says ok"),
    "tiny_gguf_ctransformers": ("ctransformers", None, "hello world the", "hello world ok"),
    "tiny_ggml": ("ctransformers", "gpt2", "hello world the", "hello world ok"),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_the_same_request_gives_the_same_text_whatever_ran_before_it(
    case: str, start_runner: Any, request: pytest.FixtureRequest, run_python: RunPython
) -> None:
    backend, model_type, a, b = ORDER_CASES[case]
    fixture = {"smollm2": "smollm2_path", "tiny_ggml": "tiny_ggml_path"}.get(case, "tiny_gguf_path")
    path: Path = request.getfixturevalue(fixture)
    options = {"model_type": model_type} if model_type else {"context_length": 256}
    params = {"max_tokens": 24, "temperature": 0}
    runner = start_runner(path, backend, **options)
    assert runner.receive()["type"] == "loaded"

    answers = []
    for request_id, prompt in (("a1", a), ("b", b), ("a2", a), ("b2", b)):
        runner.generate(request_id, prompt=prompt, params=params)
        texts, done = runner.until_done(request_id)
        answers.append(("".join(texts), done["prompt_tokens"], done["completion_tokens"]))
    first_a, first_b, second_a, second_b = answers
    assert second_a == first_a, "A after B differs from A on a fresh runner"
    assert second_b == first_b
    assert first_a[0], "the model wrote nothing"

    # And A is what the library itself writes for it, freshly loaded.
    if backend == "llama_cpp":
        peer = llama_cpp_peer(
            run_python, path, n_ctx=256, prompt=a, params=GenerationParams(**params)
        )
    else:
        peer = ctransformers_peer(
            run_python, path, model_type=model_type, prompt=a, params=GenerationParams(**params)
        )
    assert first_a == (peer["text"], peer["prompt_tokens"], peer["completion_tokens"])
