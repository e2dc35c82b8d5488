"""The tiny fixture models really load and generate text in the backends the suite runs them in.

Every other test that runs a model relies on these files, so this proves them against the native
libraries directly (not through OpsDash's backends). Each load happens in a child process
(``run_python`` from tests/inference/conftest.py): a native crash fails one test, not pytest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf

from tests.fixtures.tinymodels import (
    TINY_GPT2_CONTEXT_LENGTH,
    tiny_gpt2_vocab,
    tiny_llama_vocab,
    write_tiny_ggml_gpt2,
    write_tiny_gguf_llama,
)
from tests.inference.conftest import RunPython

MAX_TOKENS = 8

LLAMA_CPP = """
import json, sys
import llama_cpp

llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, verbose=False)
sampled = llm.create_completion("hello", max_tokens=8, seed=1)
greedy = llm.create_completion("hello world", max_tokens=8, temperature=0)
print(json.dumps({
    "sampled": sampled["choices"][0]["text"],
    "sampled_tokens": sampled["usage"]["completion_tokens"],
    "greedy": greedy["choices"][0]["text"],
    "n_vocab": llm.n_vocab(),
    "prompt_tokens": llm.tokenize(b"hello world"),
}))
"""

CTRANSFORMERS = """
import itertools, json, sys
from ctransformers import AutoModelForCausalLM

llm = AutoModelForCausalLM.from_pretrained(sys.argv[1], model_type=sys.argv[2])
# generate() stops at end of sequence and otherwise never: take at most 8.
tokens = list(itertools.islice(llm.generate(llm.tokenize("hello world"), seed=1), 8))
print(json.dumps({
    "sampled": llm("hello", max_new_tokens=8, seed=1),
    "generated_tokens": len(tokens),
    "vocab_size": llm.vocab_size,
    "context_length": llm.context_length,
}))
"""


def test_the_tiny_gguf_generates_text_in_llama_cpp(
    run_python: RunPython, tiny_gguf_path: Path
) -> None:
    result = run_python(LLAMA_CPP, str(tiny_gguf_path))
    assert result["sampled"].strip()
    assert result["greedy"].strip()
    # The fixture keeps </s> out of reach, so a completion always runs to max_tokens.
    assert result["sampled_tokens"] == MAX_TOKENS
    assert result["n_vocab"] == len(tiny_llama_vocab())
    assert result["prompt_tokens"][0] == 1  # <s>, as the GGUF's add_bos_token says


def test_the_tiny_gguf_generates_text_in_ctransformers(
    run_python: RunPython, tiny_gguf_path: Path
) -> None:
    result = run_python(CTRANSFORMERS, str(tiny_gguf_path), "llama")
    assert result["sampled"].strip()
    assert result["generated_tokens"] == MAX_TOKENS  # end of sequence never came first
    assert result["vocab_size"] == len(tiny_llama_vocab())


def test_the_tiny_ggml_gpt2_generates_text_in_ctransformers(
    run_python: RunPython, tiny_ggml_path: Path
) -> None:
    result = run_python(CTRANSFORMERS, str(tiny_ggml_path), "gpt2")
    assert result["sampled"].strip()
    assert result["generated_tokens"] == MAX_TOKENS  # end of sequence never came first
    assert result["vocab_size"] == len(tiny_gpt2_vocab())
    assert result["context_length"] == TINY_GPT2_CONTEXT_LENGTH


def test_the_fixtures_are_small_and_byte_for_byte_repeatable(tmp_path: Path) -> None:
    for write in (write_tiny_gguf_llama, write_tiny_ggml_gpt2):
        first, second = write(tmp_path / "a"), write(tmp_path / "b")
        assert first.stat().st_size < 1024 * 1024
        digest = hashlib.sha256(first.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(second.read_bytes()).hexdigest()


def test_the_tiny_gguf_has_a_sentencepiece_vocabulary(tiny_gguf_path: Path) -> None:
    reader = gguf.GGUFReader(tiny_gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert {"▁hello", "▁world", "a", "z"} <= set(tokens)
    assert types[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert set(types[3:259]) == {gguf.TokenType.BYTE}
    assert len(reader.fields["tokenizer.ggml.scores"].contents()) == len(tokens)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
