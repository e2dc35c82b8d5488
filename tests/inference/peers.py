"""Peers: the same native libraries called directly, in this test run, with the same settings.

A real model's exact text depends on the CPU's kernels and the llama.cpp build, so tests never
assert it; they compare what OpsDash produced with what the library itself produces here and
now. Each peer loads the model afresh in a child process (``run_python``) and reports the
prompt it rendered, its token counts and the text of a greedy completion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.backends.base import GenerationParams
from tests.inference.conftest import RunPython

_LLAMA_CPP_PEER = r"""
import contextlib, json, sys
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
# The AMX workaround is a load option like the others: without it llama.cpp crashes on AMX
# CPUs (ggml-org/llama.cpp#20824), so the peer loads the way OpsDash does.
from inference.backends.llama_cpp import _cpu_has_amx, _without_extra_buffer_types

job = json.loads(sys.argv[1])
avoid_amx = _cpu_has_amx(llama_cpp)
with _without_extra_buffer_types(llama_cpp) if avoid_amx else contextlib.nullcontext():
    llm = llama_cpp.Llama(
        model_path=job["path"], n_ctx=job["n_ctx"], n_threads=job["threads"],
        n_threads_batch=job["threads"], seed=job["seed"], verbose=False,
    )
p = job["params"]
sampling = {"max_tokens": p["max_tokens"], "temperature": p["temperature"], "top_p": p["top_p"],
            "top_k": p["top_k"], "repeat_penalty": p["repeat_penalty"], "seed": job["seed"]}
out = {"amx": avoid_amx}
if job["messages"] is not None:
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    def text(token):
        return b"" if token < 0 else llama_cpp.llama_vocab_get_text(vocab, token)
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()).decode(), bos_token=text(llm.token_bos()).decode(),
    )
    out["prompt"] = formatter(messages=job["messages"]).prompt
    answer = llm.create_chat_completion(messages=job["messages"], **sampling)
    out["text"] = answer["choices"][0]["message"]["content"]
else:
    out["prompt"] = job["prompt"]
    answer = llm.create_completion(job["prompt"], **sampling)
    out["text"] = answer["choices"][0]["text"]
out["finish_reason"] = answer["choices"][0]["finish_reason"]
out["prompt_tokens"] = answer["usage"]["prompt_tokens"]
out["completion_tokens"] = answer["usage"]["completion_tokens"]
print(json.dumps(out))
"""


def llama_cpp_peer(
    run_python: RunPython,
    path: Path,
    *,
    n_ctx: int,
    params: GenerationParams,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    threads: int | None = 1,
    seed: int = 0xFFFFFFFF,  # llama_cpp.LLAMA_DEFAULT_SEED, what a runner loads with by default
) -> dict[str, Any]:
    """llama_cpp.Llama, loaded with these options, answering ``messages`` (through its own chat
    formatter and the GGUF's template) or a raw ``prompt``: prompt, text, counts, finish.
    ``threads`` None is llama-cpp-python's default, as for a runner loaded without a count."""
    job = {
        "path": str(path),
        "n_ctx": n_ctx,
        "threads": threads,
        "seed": seed,
        "messages": messages,
        "prompt": prompt,
        "params": {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "repeat_penalty": params.repeat_penalty,
        },
    }
    result: dict[str, Any] = run_python(_LLAMA_CPP_PEER, json.dumps(job))
    return result


_CTRANSFORMERS_PEER = r"""
import json, sys
from ctransformers import LLM, Config
from inference.backends.ctransformers import _cpu_library

job = json.loads(sys.argv[1])
config = Config(context_length=-1, threads=job["threads"], seed=-1, gpu_layers=0)
llm = LLM(job["path"], job["model_type"], config=config, lib=_cpu_library())
p = job["params"]
tokens = llm.tokenize(job["prompt"])
out, pieces = {"prompt_tokens": len(tokens)}, []
for token in llm.generate(tokens, top_k=1, top_p=p["top_p"], temperature=1.0,
                          repetition_penalty=p["repeat_penalty"], threads=job["threads"]):
    pieces.append(llm.detokenize([token], decode=False))
    if len(pieces) == p["max_tokens"]:
        break
out["text"] = b"".join(pieces).decode("utf-8", errors="replace")
out["completion_tokens"] = len(pieces)
print(json.dumps(out))
"""


def ctransformers_peer(
    run_python: RunPython,
    path: Path,
    *,
    model_type: str,
    prompt: str,
    params: GenerationParams,
    threads: int = 1,
) -> dict[str, Any]:
    """ctransformers.LLM, loaded afresh, continuing ``prompt`` greedily (top-k 1, as OpsDash
    asks it for temperature 0): text and counts."""
    assert params.temperature == 0, "the peer decodes greedily"
    job = {
        "path": str(path),
        "model_type": model_type,
        "threads": threads,
        "prompt": prompt,
        "params": {
            "max_tokens": params.max_tokens,
            "top_p": params.top_p,
            "repeat_penalty": params.repeat_penalty,
        },
    }
    result: dict[str, Any] = run_python(_CTRANSFORMERS_PEER, json.dumps(job))
    return result
