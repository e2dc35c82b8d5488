"""What ``test_backends`` asks of a real model, run in a child process (a native crash must
not take pytest down): load it with one backend, generate greedily, with a stop sequence, a
token limit and a cancel, tokenize after close and overflow a small context; print the JSON.

Run as ``python -c "from tests.inference.backend_scenarios import main; main()" CONFIG``, where
CONFIG is ``{"backend", "path", "model_type", "messages", "unicode_prompt"?}`` as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.backends import get_backend
from inference.backends.base import GenerationParams, LoadOptions, TokenEvent
from inference.errors import BackendError


def scenarios(config: dict[str, Any]) -> dict[str, Any]:
    backend = get_backend(config["backend"])
    path = Path(config["path"])

    def load(**extra: Any) -> Any:
        options = {"threads": 1, "model_type": config["model_type"], "seed": 0, **extra}
        return backend.load(path, LoadOptions(**options))

    def run(
        model: Any, prompt: str, should_stop: Callable[[], bool] | None = None, **params: Any
    ) -> dict[str, Any]:
        params = {"temperature": 0.0, "seed": 0, **params}
        pieces: list[list[Any]] = []
        finished = None
        for event in model.generate(prompt, GenerationParams(**params), should_stop):
            if isinstance(event, TokenEvent):
                pieces.append([event.text, event.token_id])
            else:
                assert finished is None
                finished = {
                    "reason": event.finish_reason,
                    "prompt_tokens": event.prompt_tokens,
                    "completion_tokens": event.completion_tokens,
                }
        return {"text": "".join(p[0] for p in pieces), "pieces": pieces, "finished": finished}

    out: dict[str, Any] = {}
    model = load(gpu_layers=1)
    out["notices"] = list(model.notices)
    if config["backend"] == "llama_cpp":
        import llama_cpp

        out["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    prompt = model.apply_chat_template(config["messages"])
    out["chat_prompt"] = prompt
    out["prompt_token_count"] = len(model.tokenize(prompt))
    out["greedy"] = run(model, prompt, max_tokens=8)
    model.close()

    # Fresh loads for runs compared with the greedy one, so a reused KV cache cannot make them
    # differ.
    model = load()
    texts = [piece[0] for piece in out["greedy"]["pieces"]]
    out["stop"] = next(
        (t for t in texts[2:] if t.strip() and t not in "".join(texts[:2])), texts[-1]
    )
    out["stopped"] = run(model, prompt, max_tokens=8, stop=[out["stop"]])
    model.close()

    model = load()
    out["short"] = run(model, prompt, max_tokens=3)
    flag: list[bool] = []
    after_flag: list[str] = []
    pieces: list[str] = []
    finished = None
    stream = model.generate(
        prompt, GenerationParams(temperature=0.0, max_tokens=8), lambda: bool(flag)
    )
    for event in stream:
        if isinstance(event, TokenEvent):
            (after_flag if flag else pieces).append(event.text)
            flag.append(True)
        else:
            finished = event
    assert finished is not None
    out["cancelled"] = {
        "pieces": pieces,
        "after_flag": after_flag,
        "reason": finished.finish_reason,
        "completion_tokens": finished.completion_tokens,
    }
    if config.get("unicode_prompt"):
        out["unicode"] = run(
            model,
            model.apply_chat_template([{"role": "user", "content": config["unicode_prompt"]}]),
            max_tokens=12,
        )
    model.close()
    model.close()
    try:
        model.tokenize("hello")
    except BackendError as exc:
        out["after_close"] = exc.reason

    model = load(context_length=32)
    out["small_context_notices"] = list(model.notices)
    try:
        list(model.generate("hello " * 300, GenerationParams(max_tokens=4)))
    except BackendError as exc:
        out["too_long"] = exc.reason
    model.close()
    return out


def main() -> None:
    print(json.dumps(scenarios(json.loads(sys.argv[1]))))
