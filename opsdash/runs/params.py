"""The one definition of the generation parameters a run accepts.

``start_run``'s validation, ``POST /api/runs`` (each body field documented from ``BY_NAME``;
tests/runs/test_params.py holds the schema to ``PARAMS``), the gateway's OpenAI parsing, the
suite form and the playground pages (inputs rendered from it, and ``json_script`` →
``playground.js``) all read this tuple, so a parameter, range or default is written once. The
ranges are the backends' (``inference.backends.base.GenerationParams`` keeps its own guard,
since ``inference/`` imports nothing from Django; a test checks the two agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from inference.backends.base import (
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    SEED_LIMIT,
    GenerationParams,
)

ParamType = Literal["int", "float", "stops"]

#: The code every parameter refusal carries (callers branch on it, never on the sentence).
INVALID_PARAM = "invalid_param"
UNKNOWN_PARAM = "unknown_param"


@dataclass(frozen=True)
class Param:
    """One generation parameter: its JSON type, inclusive range and default.

    ``exclusive_minimum`` makes ``minimum`` itself invalid (``top_p`` 0 would keep no token).
    ``default`` None means "none" (a random seed, no stop sequences). For ``stops``,
    ``minimum``/``maximum`` bound each sequence's length and ``max_items`` their number.
    ``step`` and ``placeholder`` are only for the pages' inputs.
    """

    name: str
    type: ParamType
    label: str
    minimum: float
    maximum: float
    default: Any
    help: str
    exclusive_minimum: bool = False
    max_items: int | None = None
    step: float | None = None
    placeholder: str = ""

    def problem(self, value: Any) -> str | None:
        """The sentence that says what is wrong with ``value``, or None when it is valid."""
        if self.type == "stops":
            return self._stops_problem(value)
        whole = self.type == "int"
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if (
            not is_number
            or (whole and not isinstance(value, int))
            or value < self.minimum
            or (self.exclusive_minimum and value == self.minimum)
            or value > self.maximum
        ):
            return f"{self.name} must be {self.help}; got {value!r}."
        return None

    def _stops_problem(self, value: Any) -> str | None:
        stops = (value,) if isinstance(value, str) else value
        if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
            return f"{self.name} must be a string or a list of strings; got {value!r}."
        if self.max_items is not None and len(stops) > self.max_items:
            return f"At most {self.max_items} stop sequences are allowed; got {len(stops)}."
        for sequence in stops:
            if not self.minimum <= len(sequence) <= self.maximum:
                return (
                    f"Each stop sequence must be {self.minimum:g} to {self.maximum:g} "
                    f"characters long; got {sequence!r}."
                )
        return None

    def as_json(self) -> dict[str, Any]:
        """What the playground page renders with ``json_script``."""
        data = asdict(self)
        if isinstance(self.default, tuple):
            data["default"] = list(self.default)
        return data


_DEFAULTS = GenerationParams()

PARAMS: tuple[Param, ...] = (
    Param(
        "max_tokens",
        "int",
        "Max tokens",
        1,
        MAX_TOKENS_LIMIT,
        _DEFAULTS.max_tokens,
        f"a whole number from 1 to {MAX_TOKENS_LIMIT}",
    ),
    Param(
        "temperature",
        "float",
        "Temperature",
        0.0,
        2.0,
        _DEFAULTS.temperature,
        "a number from 0 to 2 (0 picks the likeliest token)",
        step=0.05,
    ),
    Param(
        "top_p",
        "float",
        "Top p",
        0.0,
        1.0,
        _DEFAULTS.top_p,
        "a number above 0 and at most 1",
        exclusive_minimum=True,
        step=0.01,
    ),
    Param(
        "top_k",
        "int",
        "Top k",
        0,
        1_000_000,
        _DEFAULTS.top_k,
        "a whole number from 0 (no limit) to 1000000",
    ),
    Param(
        "repeat_penalty",
        "float",
        "Repeat penalty",
        0.0,
        10.0,
        _DEFAULTS.repeat_penalty,
        "a number above 0 and at most 10 (1 means no penalty)",
        exclusive_minimum=True,
        step=0.05,
    ),
    Param(
        "seed",
        "int",
        "Seed",
        0,
        SEED_LIMIT,
        _DEFAULTS.seed,
        f"a whole number from 0 to {SEED_LIMIT}, or left unset for a random seed",
        placeholder="random",
    ),
    Param(
        "stop",
        "stops",
        "Stop sequences",
        1,
        MAX_STOP_LENGTH,
        _DEFAULTS.stop,
        "sequences that end the completion (not part of the text)",
        max_items=MAX_STOP_SEQUENCES,
        placeholder="comma-separated, e.g. \\n\\n, ###",
    ),
)

BY_NAME: dict[str, Param] = {param.name: param for param in PARAMS}
PARAM_NAMES: tuple[str, ...] = tuple(BY_NAME)


@dataclass(frozen=True)
class Violation:
    """One refused parameter: which, why (a sentence) and the code callers branch on."""

    param: str
    reason: str
    code: str


def violations(params: Mapping[str, Any]) -> list[Violation]:
    """Every problem with ``params`` (None values mean "the default" and are fine)."""
    found = [
        Violation(name, f"Unknown parameter: {name}.", UNKNOWN_PARAM)
        for name in sorted(set(params) - set(BY_NAME))
    ]
    for param in PARAMS:
        value = params.get(param.name)
        if value is None:
            continue
        reason = param.problem(value)
        if reason is not None:
            found.append(Violation(param.name, reason, INVALID_PARAM))
    return found


def page_inputs(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The definition as the playground and suite pages render it (inputs and the JSON data
    block ``playground.js`` reads), each with the input's current ``value``."""
    return [param.as_json() | {"value": values.get(param.name, "")} for param in PARAMS]
