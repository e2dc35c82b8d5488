"""Plain chat formats for models whose file carries no chat template (legacy GGML above all).

An admin picks one per model on its page; chat messages are then rendered here into a prompt.
Each is the format the model family was fine-tuned on, spelled the way its model cards do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Messages = Sequence[dict[str, Any]]


def _plain(messages: Messages) -> str:
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def _alpaca(messages: Messages) -> str:
    system = "".join(f"{m['content']}\n\n" for m in messages if m["role"] == "system")
    turns = []
    for m in messages:
        if m["role"] == "user":
            turns.append(f"### Instruction:\n{m['content']}\n\n")
        elif m["role"] == "assistant":
            turns.append(f"### Response:\n{m['content']}\n\n")
    return system + "".join(turns) + "### Response:\n"


def _chatml(messages: Messages) -> str:
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def _vicuna(messages: Messages) -> str:
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(f"USER: {m['content']}\n")
        else:
            parts.append(f"ASSISTANT: {m['content']}</s>\n")
    return "".join(parts) + "ASSISTANT:"


def _llama2(messages: Messages) -> str:
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    out, pending_system = [], f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    for m in messages:
        if m["role"] == "user":
            out.append(f"<s>[INST] {pending_system}{m['content']} [/INST]")
            pending_system = ""
        elif m["role"] == "assistant":
            out.append(f" {m['content']} </s>")
    return "".join(out)


FORMATS: dict[str, tuple[str, Callable[[Messages], str]]] = {
    "plain": ("Plain (System:/User:/Assistant:)", _plain),
    "alpaca": ("Alpaca (### Instruction / ### Response)", _alpaca),
    "chatml": ("ChatML (<|im_start|>role …)", _chatml),
    "vicuna": ("Vicuna (USER: / ASSISTANT:)", _vicuna),
    "llama2": ("Llama 2 ([INST] … [/INST])", _llama2),
}


def render(name: str, messages: Messages) -> str:
    """``messages`` rendered in format ``name`` (one of ``FORMATS``), ready to generate from."""
    return FORMATS[name][1](messages)
