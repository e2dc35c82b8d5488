"""One definition of the generation parameters (opsdash.runs.params), read by every surface."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.urls import reverse

from inference.backends.base import GenerationParams
from inference.errors import InferenceError
from opsdash.gateway.parsing import parse_chat, parse_completion
from opsdash.runs.params import INVALID_PARAM, PARAM_NAMES, PARAMS, UNKNOWN_PARAM, Param
from opsdash.runs.services import RunRefused, generation_params
from tests.factories import local_model

NUMERIC = [p for p in PARAMS if p.type != "stops"]


def _valid(param: Param) -> Any:
    """A value inside the range that no surface would mistake for its default."""
    if param.type == "stops":
        return ["###"]
    return param.maximum


def _too_big(param: Param) -> Any:
    if param.type == "stops":
        return ["x" * int(param.maximum + 1)]
    return param.maximum + (1 if param.type == "int" else 0.5)


class _Inputs(HTMLParser):
    """The named inputs of a page, and its JSON data blocks by id."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.blocks: dict[str, str] = {}
        self._block: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name"):
            self.inputs[str(found["name"])] = found
        if tag == "script" and found.get("type") == "application/json":
            self._block = str(found["id"])

    def handle_data(self, data: str) -> None:
        if self._block:
            self.blocks[self._block] = self.blocks.get(self._block, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._block = None


def _page(client: Any, url: str) -> _Inputs:
    response = client.get(url)
    assert response.status_code == 200
    parser = _Inputs()
    parser.feed(response.content.decode())
    return parser


def _assert_inputs_follow_the_definition(page: _Inputs) -> None:
    for param in PARAMS:
        field = page.inputs[param.name]
        if param.type == "stops":
            assert field.get("type") is None  # free text, split on commas
            continue
        assert field["type"] == "number"
        assert float(field["min"] or "nan") == param.minimum, param.name
        assert float(field["max"] or "nan") == param.maximum, param.name
    definition = json.loads(page.blocks["param-definition"])
    assert [p["name"] for p in definition] == list(PARAM_NAMES)
    for shown, param in zip(definition, PARAMS, strict=True):
        assert (shown["type"], shown["minimum"], shown["maximum"]) == (
            param.type,
            param.minimum,
            param.maximum,
        )
        assert shown["exclusive_minimum"] == param.exclusive_minimum


def test_the_api_gateway_suites_and_playground_expose_exactly_the_definitions_params(
    as_operator,
):
    local_model()  # the playground shows its form once a model is ready

    # POST /api/runs: the schema's body has the definition's params with its ranges.
    schema = as_operator.get("/api/openapi.json").json()
    body = schema["components"]["schemas"]["RunIn"]["properties"]
    assert set(body) - {"model", "prompt", "messages", "workflow"} == set(PARAM_NAMES)
    for param in NUMERIC:
        bound = "exclusiveMinimum" if param.exclusive_minimum else "minimum"
        assert body[param.name][bound] == param.minimum, param.name
        assert body[param.name]["maximum"] == param.maximum, param.name
    assert body["stop"]["maxItems"] == next(p for p in PARAMS if p.name == "stop").max_items

    # The gateway carries every one of them, at the edge of its range, to the run.
    every = {param.name: _valid(param) for param in PARAMS}
    for parse, request in (
        (parse_chat, {"messages": [{"role": "user", "content": "hi"}]}),
        (parse_completion, {"prompt": "hi"}),
    ):
        call = parse({"model": "tiny", **request, **every})
        assert call.params == every
        generation_params(call.params)

    # The playground and the suite form: one input per param, ranged as defined, and the
    # definition itself in the page for playground.js.
    _assert_inputs_follow_the_definition(_page(as_operator, reverse("playground:index")))
    _assert_inputs_follow_the_definition(_page(as_operator, reverse("playground:compare")))
    _assert_inputs_follow_the_definition(_page(as_operator, reverse("suites:create")))


@pytest.mark.parametrize("param", PARAMS, ids=lambda p: p.name)
def test_a_value_past_a_params_range_is_refused_naming_the_param(param: Param):
    with pytest.raises(RunRefused) as refused:
        generation_params({param.name: _too_big(param)})
    assert refused.value.param == param.name
    assert refused.value.code == INVALID_PARAM
    assert refused.value.status == 400
    assert param.name in refused.value.reason or "stop sequence" in refused.value.reason


def test_an_unknown_param_is_refused_with_its_own_code():
    with pytest.raises(RunRefused) as refused:
        generation_params({"temprature": 0.5})
    assert (refused.value.param, refused.value.code) == ("temprature", UNKNOWN_PARAM)
    assert "temprature" in refused.value.reason


@pytest.mark.parametrize("param", NUMERIC, ids=lambda p: p.name)
def test_the_definition_and_the_backends_guard_agree_on_every_range(param: Param):
    defaults = GenerationParams()
    assert getattr(defaults, param.name) == param.default
    for edge in (param.minimum, param.maximum):
        value = int(edge) if param.type == "int" else edge
        inside = not (param.exclusive_minimum and edge == param.minimum)
        assert (param.problem(value) is None) == inside, (param.name, value)
        if inside:
            GenerationParams(**{param.name: value})
        else:
            with pytest.raises(InferenceError):
                GenerationParams(**{param.name: value})
    with pytest.raises(InferenceError):
        GenerationParams(**{param.name: _too_big(param)})
    assert param.problem(_too_big(param)) is not None


def test_a_suite_with_a_param_out_of_range_is_not_saved_and_names_it(as_operator):
    response = as_operator.post(
        reverse("suites:create"),
        {
            "name": "Edges",
            "case_count": "1",
            "case-0-prompt": "hi",
            "top_p": "0",
        },
    )
    assert response.status_code == 400
    assert "top_p must be a number above 0 and at most 1" in response.content.decode()
