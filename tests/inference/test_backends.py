"""The backend contract, checked against both real backends and real model files.

Pure-Python parts (parameters, registry, the shared streaming loop) run in this process; every
model load runs in a child process (see ``run_python``), one child per model and backend, and
the tests assert on what it reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inference.backends import get_backend
from inference.backends.base import (
    FALLBACK_CHAT_TEMPLATE,
    Finished,
    GenerationParams,
    LoadOptions,
    TokenEvent,
    render_chat_template,
    stream_tokens,
)
from inference.backends.llama_cpp import DEFAULT_CONTEXT_LENGTH, default_context_length
from inference.errors import BackendError
from inference.formats import read_metadata
from tests.fixtures.tinymodels import TINY_LLAMA_LONG_CONTEXT_LENGTH, write_tiny_gguf_llama
from tests.inference.conftest import RunPython
from tests.inference.peers import llama_cpp_peer

# --- parameters ------------------------------------------------------------------------------


def test_generation_params_have_the_documented_defaults() -> None:
    params = GenerationParams()
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (
        256,
        0.7,
        0.95,
        40,
    )
    assert (params.repeat_penalty, params.seed, params.stop, params.threads) == (
        1.1,
        None,
        (),
        None,
    )


def test_generation_params_take_stop_sequences_from_a_json_list() -> None:
    params = GenerationParams(stop=["\n\n", "User:"])  # type: ignore[arg-type]
    assert params.stop == ("\n\n", "User:")
    assert hash(params)  # still hashable, so it can key a cache


@pytest.mark.parametrize(
    ("field", "value", "words", "shown"),
    [
        ("max_tokens", 0, "max_tokens must be", "0"),
        ("max_tokens", True, "max_tokens must be", "True"),
        ("temperature", -0.1, "temperature must be", "-0.1"),
        ("temperature", 2.5, "temperature must be", "2.5"),
        ("top_p", 0.0, "top_p must be", "0.0"),
        ("top_k", -1, "top_k must be", "-1"),
        ("repeat_penalty", 0.0, "repeat_penalty must be", "0.0"),
        ("seed", -5, "seed must be", "-5"),
        ("stop", ("ok", ""), "Each stop sequence", "''"),
        ("stop", 42, "stop must be a list", "42"),
        ("threads", 0, "threads must be", "0"),
    ],
)
def test_it_refuses_out_of_range_generation_params_with_a_sentence(
    field: str, value: object, words: str, shown: str
) -> None:
    with pytest.raises(BackendError) as caught:
        GenerationParams(**{field: value})  # type: ignore[arg-type]
    assert caught.value.reason.startswith(words)
    assert caught.value.reason.endswith(f"got {shown}.")


@pytest.mark.parametrize(
    ("field", "value"),
    [("context_length", 4), ("gpu_layers", -2), ("model_type", ""), ("threads", -1)],
)
def test_it_refuses_bad_load_options_with_a_sentence(field: str, value: object) -> None:
    with pytest.raises(BackendError) as caught:
        LoadOptions(**{field: value})  # type: ignore[arg-type]
    assert caught.value.reason.startswith(field)


# --- registry and supports() -----------------------------------------------------------------


def test_the_registry_gives_each_backend_by_name() -> None:
    assert get_backend("llama_cpp").name == "llama_cpp"
    assert get_backend("ctransformers").name == "ctransformers"


def test_the_registry_names_the_known_backends_for_an_unknown_one() -> None:
    with pytest.raises(BackendError, match="choose one of ctransformers, llama_cpp"):
        get_backend("vllm")


def test_llama_cpp_supports_gguf_and_sends_legacy_ggml_to_ctransformers() -> None:
    backend = get_backend("llama_cpp")
    assert backend.supports({"format": "gguf", "architecture": "qwen2"}) is None
    reason = backend.supports({"format": "ggjt", "architecture": None})
    assert reason is not None and "ctransformers" in reason


def test_llama_cpp_refuses_gguf_v1_which_it_no_longer_reads() -> None:
    reason = get_backend("llama_cpp").supports({"format": "gguf", "format_version": 1})
    assert reason is not None and reason.startswith("llama.cpp no longer reads GGUF v1 files")


def test_ctransformers_supports_legacy_ggml_and_gguf_llama_but_not_other_gguf() -> None:
    backend = get_backend("ctransformers")
    assert backend.supports({"format": "ggml", "architecture": "gpt2"}) is None
    assert backend.supports({"format": "gguf", "architecture": "llama"}) is None
    reason = backend.supports({"format": "ggml", "architecture": None})
    assert reason is not None and "Name the model type" in reason
    reason = backend.supports({"format": "gguf", "architecture": "qwen2"})
    assert reason is not None and "qwen2" in reason and "llama_cpp" in reason


def test_supports_reads_the_metadata_that_formats_reads(tiny_gguf_path: Path) -> None:
    metadata = read_metadata(tiny_gguf_path)
    assert get_backend("llama_cpp").supports(metadata) is None
    assert get_backend("ctransformers").supports(metadata) is None  # a GGUF llama
    reason = get_backend("ctransformers").supports(replace(metadata, architecture="gemma3"))
    assert reason is not None and "gemma3" in reason


# --- the shared streaming loop ---------------------------------------------------------------

# A toy vocabulary: "日" is split over two tokens, as byte-level tokenizers do.
PIECES = {1: b"Hello", 2: b",", 3: b" wor", 4: b"ld", 5: "日".encode()[:2], 6: "日".encode()[2:]}
PIECES |= {7: b"\n", 8: b"User", 9: b":", 10: b"\xff", 0: b""}
END = 0


def _stream(tokens: list[int], **params: Any) -> tuple[list[TokenEvent], Finished, list[int]]:
    pulled: list[int] = []

    def lazily() -> Iterator[int]:
        for token in tokens:
            pulled.append(token)
            yield token

    should_stop = params.pop("should_stop", None)
    events = list(
        stream_tokens(
            lazily(),
            piece=PIECES.__getitem__,
            is_end=lambda token: token == END,
            params=GenerationParams(**params),
            prompt_tokens=5,
            should_stop=should_stop,
        )
    )
    finished = events.pop()
    assert isinstance(finished, Finished)
    assert all(isinstance(event, TokenEvent) and event.text for event in events)
    return events, finished, pulled  # type: ignore[return-value]


def test_streaming_never_emits_half_a_character() -> None:
    events, finished, _ = _stream([1, 5, 6, 2])
    assert [e.text for e in events] == ["Hello", "日", ","]
    assert events[1].token_id == 6  # the token that completed the character
    assert finished == Finished("stop", 5, 4)


def test_streaming_stops_at_the_end_token_and_does_not_count_it() -> None:
    events, finished, _ = _stream([1, 2, END, 3])
    assert "".join(e.text for e in events) == "Hello,"
    assert finished == Finished("stop", 5, 2)


def test_streaming_honours_a_stop_sequence_split_across_tokens() -> None:
    events, finished, pulled = _stream([1, 7, 8, 9, 3, 4], stop=("\nUser:",))
    assert "".join(e.text for e in events) == "Hello"
    assert finished == Finished("stop", 5, 4)
    assert pulled == [1, 7, 8, 9]  # nothing is generated after the stop sequence


def test_streaming_releases_held_back_text_that_did_not_become_a_stop_sequence() -> None:
    events, finished, _ = _stream([1, 7, 8, 2], stop=("\nUser:",), max_tokens=4)
    assert [e.text for e in events] == ["Hello", "\nUser,"]
    assert finished.finish_reason == "length"


def test_streaming_respects_max_tokens() -> None:
    events, finished, pulled = _stream([1, 2, 3, 4, 7, 8], max_tokens=3)
    assert "".join(e.text for e in events) == "Hello, wor"
    assert finished == Finished("length", 5, 3)
    assert len(pulled) == 3


def test_streaming_cancels_within_one_token() -> None:
    seen: list[str] = []

    def should_stop() -> bool:
        return len(seen) >= 2

    def collect() -> tuple[list[str], Finished]:
        gen = stream_tokens(
            iter([1, 2, 3, 4, 7]),
            piece=PIECES.__getitem__,
            is_end=lambda token: False,
            params=GenerationParams(),
            prompt_tokens=1,
            should_stop=should_stop,
        )
        for event in gen:
            if isinstance(event, TokenEvent):
                seen.append(event.text)
            else:
                return seen, event
        raise AssertionError("no Finished event")

    texts, finished = collect()
    assert texts == ["Hello", ","]
    assert finished == Finished("cancelled", 1, 2)


def test_streaming_shows_bytes_that_never_form_a_character_as_a_replacement_mark() -> None:
    events, _, _ = _stream([1, 10])
    assert "".join(e.text for e in events) == "Hello\ufffd"


def test_streaming_stops_at_the_context_window() -> None:
    events = list(
        stream_tokens(
            iter([1, 2, 3, 4]),
            piece=PIECES.__getitem__,
            is_end=lambda token: False,
            params=GenerationParams(max_tokens=100),
            prompt_tokens=1,
            room=2,
        )
    )
    assert events == [TokenEvent("Hello", 1), TokenEvent(",", 2), Finished("length", 1, 2)]


# --- chat templates --------------------------------------------------------------------------


def test_the_fallback_chat_template_writes_roles_and_ends_with_assistant() -> None:
    prompt = render_chat_template(
        None,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert prompt == "System: Be brief.\nUser: Hi\nAssistant:"
    assert FALLBACK_CHAT_TEMPLATE  # exported for callers that show the template


def test_a_broken_chat_template_is_a_backend_error_with_a_sentence() -> None:
    with pytest.raises(BackendError, match="chat template could not be rendered"):
        render_chat_template(
            "{{ raise_exception('only user and assistant roles') }}", [{"role": "x"}]
        )


def test_chat_templates_render_exactly_as_llama_cpp_python_renders_them(
    run_python: RunPython, smollm2_path: Path
) -> None:
    code = r"""
import json, sys
from gguf import GGUFReader
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from inference.backends.base import render_chat_template
template = GGUFReader(sys.argv[1]).fields["tokenizer.chat_template"].contents()
messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke"}]
ours = render_chat_template(template, messages, bos_token="<s>", eos_token="</s>")
theirs = Jinja2ChatFormatter(template, eos_token="</s>", bos_token="<s>")(messages=messages)
print(json.dumps({"ours": ours, "theirs": theirs.prompt}))
"""
    result = run_python(code, str(smollm2_path))
    assert result["ours"] == result["theirs"]
    assert result["ours"].endswith("<|im_start|>assistant\n")


# --- real models, each in a child process ----------------------------------------------------

# The scenarios are a real module (tests/inference/backend_scenarios.py), run in a child.
SCENARIOS = "from tests.inference.backend_scenarios import main; main()"

UNICODE_PROMPT = "Repeat exactly: Ünïcødé 日本語"
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello world"},
]


def _scenarios(
    run_python: RunPython, backend: str, path: Path, model_type: str | None = None, **extra: Any
) -> dict[str, Any]:
    config = {"backend": backend, "path": str(path), "model_type": model_type, "messages": CHAT}
    result: dict[str, Any] = run_python(SCENARIOS, json.dumps(config | extra))
    return result


@pytest.fixture(scope="module")
def llama_cpp_tiny(run_python: RunPython, tiny_gguf_path: Path) -> dict[str, Any]:
    return _scenarios(run_python, "llama_cpp", tiny_gguf_path)


@pytest.fixture(scope="module")
def llama_cpp_smollm2(run_python: RunPython, smollm2_path: Path) -> dict[str, Any]:
    return _scenarios(
        run_python,
        "llama_cpp",
        smollm2_path,
        unicode_prompt=UNICODE_PROMPT,
    )


@pytest.fixture(scope="module")
def ctransformers_tiny_gguf(run_python: RunPython, tiny_gguf_path: Path) -> dict[str, Any]:
    return _scenarios(run_python, "ctransformers", tiny_gguf_path)


@pytest.fixture(scope="module")
def ctransformers_tiny_ggml(run_python: RunPython, tiny_ggml_path: Path) -> dict[str, Any]:
    return _scenarios(run_python, "ctransformers", tiny_ggml_path, model_type="gpt2")


ALL_RUNS = [
    "llama_cpp_tiny",
    "llama_cpp_smollm2",
    "ctransformers_tiny_gguf",
    "ctransformers_tiny_ggml",
]


@pytest.fixture(params=ALL_RUNS)
def scenario(request: pytest.FixtureRequest) -> dict[str, Any]:
    result: dict[str, Any] = request.getfixturevalue(request.param)
    return result


def test_it_streams_tokens_and_counts_them_with_the_models_tokenizer(
    scenario: dict[str, Any],
) -> None:
    greedy = scenario["greedy"]
    assert greedy["text"].strip(), "the model wrote no visible text"
    assert all(text for text, _ in greedy["pieces"])
    assert all(isinstance(token_id, int) for _, token_id in greedy["pieces"])
    finished = greedy["finished"]
    assert finished["prompt_tokens"] == scenario["prompt_token_count"] > 0
    assert 0 < finished["completion_tokens"] <= 8
    assert finished["reason"] in ("stop", "length")


def test_it_honours_a_stop_sequence(scenario: dict[str, Any]) -> None:
    greedy, stopped, stop = scenario["greedy"]["text"], scenario["stopped"], scenario["stop"]
    assert stopped["text"] == greedy[: greedy.index(stop)]
    assert stop not in stopped["text"]
    assert stopped["finished"]["reason"] == "stop"


def test_it_respects_max_tokens(scenario: dict[str, Any]) -> None:
    short = scenario["short"]
    assert short["finished"]["reason"] == "length"
    assert short["finished"]["completion_tokens"] == 3
    assert scenario["greedy"]["text"].startswith(short["text"])


def test_should_stop_cancels_within_one_token(scenario: dict[str, Any]) -> None:
    cancelled = scenario["cancelled"]
    assert cancelled["reason"] == "cancelled"
    assert len(cancelled["pieces"]) == 1
    assert cancelled["after_flag"] == []
    assert cancelled["completion_tokens"] == 1


def test_a_closed_model_says_it_was_unloaded(scenario: dict[str, Any]) -> None:
    assert scenario["after_close"] == "The model has been unloaded; load it again to use it."


def test_a_prompt_longer_than_the_context_is_refused_with_a_sentence(
    scenario: dict[str, Any],
) -> None:
    assert "tokens long but" in scenario["too_long"]
    assert "shorten the prompt" in scenario["too_long"]


def test_llama_cpp_ignores_gpu_layers_with_a_notice_when_the_build_has_no_gpu(
    llama_cpp_tiny: dict[str, Any],
) -> None:
    notices = llama_cpp_tiny["notices"]
    if llama_cpp_tiny["gpu_offload"]:
        assert notices == []
    else:
        assert notices == [
            "GPU layers were ignored because this llama-cpp-python build has no GPU support; "
            "the model runs on the CPU."
        ]


def test_llama_cpp_applies_the_models_own_chat_template(
    llama_cpp_smollm2: dict[str, Any], llama_cpp_tiny: dict[str, Any]
) -> None:
    assert llama_cpp_smollm2["chat_prompt"] == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nhello world<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert llama_cpp_tiny["chat_prompt"] == (
        "<|system|>\nYou are terse.</s>\n<|user|>\nhello world</s>\n<|assistant|>\n"
    )


def test_llama_cpp_reads_chat_markers_as_single_control_tokens(
    llama_cpp_smollm2: dict[str, Any],
) -> None:
    # <|im_start|>system\nYou are terse.<|im_end|>... is about 20 tokens with the markers as
    # control tokens, and well over 30 if they were spelled out character by character.
    assert llama_cpp_smollm2["prompt_token_count"] < 30


def test_llama_cpp_streams_multi_byte_characters_whole(
    llama_cpp_smollm2: dict[str, Any], run_python: RunPython, smollm2_path: Path
) -> None:
    unicode = llama_cpp_smollm2["unicode"]
    # What SmolLM2 writes depends on this CPU's kernels; llama-cpp-python decodes the whole
    # completion at once, so equal text means no character was cut between two pieces.
    peer = llama_cpp_peer(
        run_python,
        smollm2_path,
        n_ctx=DEFAULT_CONTEXT_LENGTH,
        messages=[{"role": "user", "content": UNICODE_PROMPT}],
        params=GenerationParams(max_tokens=12, temperature=0.0, seed=0),
        seed=0,
    )
    assert unicode["text"] == peer["text"]
    assert unicode["finished"]["completion_tokens"] == peer["completion_tokens"]


def test_ctransformers_renders_the_gguf_chat_template_like_llama_cpp(
    ctransformers_tiny_gguf: dict[str, Any], llama_cpp_tiny: dict[str, Any]
) -> None:
    assert ctransformers_tiny_gguf["chat_prompt"] == llama_cpp_tiny["chat_prompt"]


def test_ctransformers_uses_the_fallback_chat_template_for_legacy_ggml(
    ctransformers_tiny_ggml: dict[str, Any],
) -> None:
    assert ctransformers_tiny_ggml["chat_prompt"] == (
        "System: You are terse.\nUser: hello world\nAssistant:"
    )


def test_ctransformers_keeps_a_legacy_files_own_context_length_and_says_so(
    ctransformers_tiny_ggml: dict[str, Any],
) -> None:
    assert any(
        "context length setting was ignored" in n
        for n in ctransformers_tiny_ggml["small_context_notices"]
    )


def test_ctransformers_refuses_smollm2_with_a_readable_error(
    run_python: RunPython, smollm2_path: Path
) -> None:
    code = r"""
import json, sys
from pathlib import Path
from inference.backends import get_backend
from inference.backends.base import LoadOptions
from inference.errors import BackendError
try:
    get_backend("ctransformers").load(Path(sys.argv[1]), LoadOptions(threads=1))
except BackendError as exc:
    print(json.dumps({"reason": exc.reason}))
else:
    print(json.dumps({"reason": None}))
"""
    reason = run_python(code, str(smollm2_path))["reason"]
    assert reason is not None, "ctransformers loaded SmolLM2, which it is known not to support"
    assert reason.startswith("ctransformers could not load SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "llama_cpp backend" in reason


def test_ctransformers_asks_for_the_model_type_of_a_legacy_file(
    run_python: RunPython, tiny_ggml_path: Path
) -> None:
    code = r"""
import json, sys
from pathlib import Path
from inference.backends import get_backend
from inference.backends.base import LoadOptions
from inference.errors import BackendError
try:
    get_backend("ctransformers").load(Path(sys.argv[1]), LoadOptions())
except BackendError as exc:
    print(json.dumps(exc.reason))
"""
    reason = run_python(code, str(tiny_ggml_path))
    assert "legacy GGML file" in reason and "gpt2" in reason


# --- import hygiene --------------------------------------------------------------------------


def test_importing_the_backends_and_trial_does_not_load_native_libraries(
    run_python: RunPython,
) -> None:
    code = r"""
import json, sys
import inference.backends.llama_cpp
import inference.backends.ctransformers
import inference.runtime.trial
from inference.backends import get_backend
get_backend("llama_cpp"); get_backend("ctransformers")
native = ("llama_cpp", "ctransformers")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in native)))
"""
    assert run_python(code) == []


def test_the_amx_workaround_follows_the_build_and_turns_only_extra_buffers_off(
    run_python: RunPython, tiny_gguf_path: Path
) -> None:
    code = r"""
import json, sys
import llama_cpp
from inference.backends.llama_cpp import LlamaCppBackend, _cpu_has_amx, _without_extra_buffer_types
from inference.backends.base import GenerationParams, LoadOptions
defaults = llama_cpp.llama_model_default_params
out = {"info": llama_cpp.llama_print_system_info().decode(), "amx": _cpu_has_amx(llama_cpp)}
with _without_extra_buffer_types(llama_cpp):
    out["inside"] = llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts
out["after"] = llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts
out["restored"] = llama_cpp.llama_cpp.llama_model_default_params is defaults
model = LlamaCppBackend().load(sys.argv[1], LoadOptions(threads=1))  # whichever path this CPU takes
events = list(model.generate("hello world the tiny model says", GenerationParams(max_tokens=4)))
out["completion_tokens"] = events[-1].completion_tokens
print(json.dumps(out))
"""
    result = run_python(code, str(tiny_gguf_path))
    # AMX CPUs (AMX_INT8 = 1 in this build's features) load without the extra buffer types;
    # every other CPU (AVX2 only, AVX-512) keeps llama.cpp's defaults, repacked weights included.
    assert result["amx"] == ("AMX_INT8 = 1" in result["info"])
    assert (result["inside"], result["after"], result["restored"]) == (False, True, True)
    assert result["completion_tokens"] == 4  # a multi-token prompt, where AMX used to crash


def test_llama_cpp_gives_a_model_its_whole_context_only_when_that_costs_little_memory(
    tmp_path: Path, tiny_gguf_path: Path, smollm2_path: Path
) -> None:
    long_path = write_tiny_gguf_llama(tmp_path / "tiny-long.gguf", long_context=True)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"NOPE" * 100)
    # 32 MiB of KV cache for 262,144 tokens: the whole context. SmolLM2 would need 180 MiB for
    # its 8192, so it gets the usual 2048; so does a model trained on fewer.
    assert default_context_length(long_path) == TINY_LLAMA_LONG_CONTEXT_LENGTH
    assert default_context_length(smollm2_path) == DEFAULT_CONTEXT_LENGTH
    assert default_context_length(tiny_gguf_path) == DEFAULT_CONTEXT_LENGTH
    assert default_context_length(garbage) == DEFAULT_CONTEXT_LENGTH


ORDER_SCENARIO = r"""
import json, sys
from pathlib import Path
import llama_cpp
from inference.backends import get_backend
from inference.backends.base import GenerationParams, LoadOptions

model = get_backend("llama_cpp").load(Path(sys.argv[1]), LoadOptions(threads=1, seed=0))
llm = model._llm
out = []
a, b = "hello world the tiny model", "hello world the tiny says ok"
list(model.generate("ok", GenerationParams(max_tokens=2)))  # llama.cpp's counters start here
for prompt in (a, b, a):
    before = llama_cpp.llama_perf_context(llm.ctx).n_p_eval
    events = list(model.generate(prompt, GenerationParams(max_tokens=8, temperature=0)))
    after = llama_cpp.llama_perf_context(llm.ctx).n_p_eval
    out.append({"prompt_tokens": events[-1].prompt_tokens, "evaluated": after - before,
                "text": "".join(e.text for e in events[:-1])})
print(json.dumps(out))
"""


def test_llama_cpp_computes_every_prompt_afresh_not_from_the_last_requests_cache(
    run_python: RunPython, tiny_gguf_path: Path
) -> None:
    # llama-cpp-python reuses the prefix a prompt shares with the previous request, computed in
    # another batch; with llama.cpp's batch-dependent kernels that can change the text (A, B, A
    # with two different A's). llama.cpp's own counters show each prompt evaluated in full.
    first_a, b, second_a = run_python(ORDER_SCENARIO, str(tiny_gguf_path))
    for answer in (first_a, b, second_a):
        assert answer["evaluated"] == answer["prompt_tokens"], answer
    assert second_a["text"] == first_a["text"]
