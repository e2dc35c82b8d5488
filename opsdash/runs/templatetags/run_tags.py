"""How a run's prompt and parameters read on the pages: text and a table, never the Python
``repr`` of the JSON they are stored as (``{'role': 'user', ...}``, ``None``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

from opsdash.runs.params import PARAMS

register = template.Library()


def _message_line(message: object) -> str:
    if isinstance(message, Mapping):
        role = str(message.get("role") or "message")
        content = message.get("content")
        return f"{role}: {'' if content is None else content}"
    return str(message)


@register.filter
def message_blocks(messages: object) -> list[dict[str, str]]:
    """A chat's messages as ``{"role", "content"}`` strings, for one block each."""
    if not isinstance(messages, list):
        return []
    blocks = []
    for message in messages:
        if isinstance(message, Mapping):
            content = message.get("content")
            role = str(message.get("role") or "message")
            blocks.append({"role": role, "content": "" if content is None else str(content)})
        else:
            blocks.append({"role": "message", "content": str(message)})
    return blocks


@register.filter
def prompt_text(run: Any) -> str:
    """A run's prompt as one line of text for a table cell: its prompt, or for a chat its last
    message as "role: content" (the turn that asked for this run)."""
    messages = getattr(run, "messages", None)
    if isinstance(messages, list) and messages:
        return _message_line(messages[-1])
    return str(getattr(run, "prompt", "") or "")


def _value_text(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(f"“{item}”" if isinstance(item, str) else str(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@register.filter
def param_rows(params: object) -> list[tuple[str, str]]:
    """``(label, value)`` for each parameter a run was given, in the form's order; a value of
    None (the default) or an empty list is left out; a name we do not know keeps its name."""
    if not isinstance(params, Mapping):
        return []
    given = {name: value for name, value in params.items() if value not in (None, [], ())}
    rows = [(p.label, _value_text(given.pop(p.name))) for p in PARAMS if p.name in given]
    rows += [(str(name), _value_text(value)) for name, value in sorted(given.items())]
    return rows
