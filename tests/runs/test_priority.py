"""Batch API runs go after interactive ones on the same model (issue 14).

The priority comes from the run's source. Two tests check only the argument plumbing (what
``_generate`` hands the supervisor and a fleet node); the rest run real runner processes
(the tiny llama that never ends) through the run path, and a real agent's refusals.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from inference.runtime.protocol import GenerateRequest
from inference.runtime.supervisor import Supervisor
from opsdash.catalog.models import LocalModel
from opsdash.fleet import protocol
from opsdash.fleet.agent_generation import Generations, NodeState, parse_priority
from opsdash.fleet.agent_store import HeldModel, ModelStore
from opsdash.runs import services
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.runtime import get_supervisor
from opsdash.runs.services import RunRequest, execute_run, run_priority, start_run
from tests.factories import local_model, started_run, workflow

# --- plumbing -------------------------------------------------------------------------------


class RecordingSupervisor:
    """Stands in for the supervisor only to see the arguments ``_generate`` passes."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate(self, spec: Any, request: Any, **kwargs: Any) -> Any:
        self.calls.append({"spec": spec, **kwargs})
        return iter(())


@pytest.mark.django_db
def test_a_batch_run_is_generated_at_batch_priority_and_every_other_run_interactive(
    settings,
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 3
    flow = workflow("enrich")
    model = local_model(backend="llama_cpp", file_path="/models/tiny.gguf", size_bytes=10)
    request = GenerateRequest(params=services.generation_params({}), prompt="hi")
    seen = {}
    for source in RunSource:
        run = started_run(flow, model)
        run.source = source
        recorder = RecordingSupervisor()
        services._generate(run, model, request, None, recorder)  # type: ignore[arg-type]
        (call,) = recorder.calls
        seen[source] = call["priority"]
        assert call["spec"].parallel_sequences == 3
        assert run_priority(run) == call["priority"]
    assert seen.pop(RunSource.BATCH) == "batch"
    assert set(seen.values()) == {"interactive"} and seen  # playground, api, suite, gateway…


@pytest.mark.django_db
def test_a_fleet_run_tells_the_node_its_priority_and_parallel_sequences(
    settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    settings.PARALLEL_SEQUENCES = 2
    sent: list[dict[str, Any]] = []

    def fake_remote_generate(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return iter(())

    monkeypatch.setattr(services.remote, "generate", fake_remote_generate)
    flow = workflow("enrich")
    model = local_model(backend="llama_cpp", file_path="/models/tiny.gguf", size_bytes=10)
    request = GenerateRequest(params=services.generation_params({}), prompt="hi")
    for source in (RunSource.BATCH, RunSource.GATEWAY):
        run = started_run(flow, model)
        run.source = source
        services._generate(run, model, request, None, None)
    assert [s["request"]["priority"] for s in sent] == ["batch", "interactive"]
    assert {s["spec"]["parallel_sequences"] for s in sent} == {2}


# --- the agent ------------------------------------------------------------------------------


def agent(tmp_path: Path, held: HeldModel | None = None, queue_depth: int = 1) -> Generations:
    store = ModelStore(models_dir=tmp_path / "models", data_dir=tmp_path / "data")
    if held is not None:
        store.add(held)
    state = NodeState()
    state.apply({"status": "healthy", "approved": True})
    return Generations(
        name="gpu01",
        store=store,
        supervisor=Supervisor(memory_budget_bytes=1 << 30, idle_unload_seconds=60, queue_depth=1),
        state=state,
        emit=lambda *args, **kwargs: None,
        queue_depth=queue_depth,
        sampler=lambda: None,
    )


def held_copy(model: LocalModel) -> HeldModel:
    return HeldModel(
        model_id=model.pk,
        sha256=model.sha256,
        path=model.file_path,
        name=model.name,
        slug=model.slug,
        backend=model.backend,
        size_bytes=model.size_bytes or 0,
    )


def generate_message(model: LocalModel, priority: object = None) -> dict[str, Any]:
    request: dict[str, Any] = {"prompt": "hi", "params": {"max_tokens": 4}}
    if priority is not None:
        request["priority"] = priority
    return {
        "request_id": "r1",
        "reply_to": "hub",
        "model": {"model_id": model.pk, "sha256": model.sha256, "parallel_sequences": 2},
        "request": request,
    }


def test_the_agent_reads_the_priority_the_hub_sent() -> None:
    assert parse_priority({"prompt": "x"}) == "interactive"  # an older hub sends none
    assert parse_priority({"priority": "batch"}) == "batch"
    assert parse_priority({"priority": "interactive"}) == "interactive"
    assert parse_priority({"priority": "urgent"}) is None


@pytest.mark.django_db
def test_the_agent_refuses_an_unknown_priority_and_leaves_batch_work_out_of_the_queue_limit(
    tiny_model: LocalModel, tmp_path: Path
) -> None:
    node = agent(tmp_path, held_copy(tiny_model), queue_depth=1)
    refusal = node.refusal(generate_message(tiny_model, "urgent"))
    assert refusal is not None and refusal[0] == "invalid_param" and "batch" in refusal[1]
    # The runner decodes two at once (the hub said) and one more may wait: three interactive.
    node.interactive.update({"a": tiny_model.pk, "b": tiny_model.pk})
    assert node.refusal(generate_message(tiny_model)) is None
    node.interactive["c"] = tiny_model.pk
    busy = node.refusal(generate_message(tiny_model))
    assert busy is not None and busy[0] == protocol.NODE_BUSY and "3 requests" in busy[1]
    # Batch work is not refused for the interactive queue: it waits for idle capacity.
    assert node.refusal(generate_message(tiny_model, "batch")) is None


@pytest.mark.django_db(transaction=True)
async def test_the_agent_generates_a_batch_request_on_its_supervisor(
    tiny_model: LocalModel, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    node = agent(tmp_path, held_copy(tiny_model))
    node.emit = lambda kind, **fields: events.append(fields["event"])
    try:
        await asyncio.wait_for(node.generate(generate_message(tiny_model, "batch")), 60)
    finally:
        await node.supervisor.close(final=True)
    assert events[0]["type"] == "accepted"
    done = events[-1]
    assert done["type"] == "done" and done["completion_tokens"] == 4, events
    assert "".join(e["text"] for e in events if e["type"] == "token")


# --- real runners ---------------------------------------------------------------------------


async def until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


ANSWER_TOKENS = 400


def sent(model: LocalModel) -> int:
    """The model's requests sent to its runner (admitted is not enough: a request still on its
    way could arrive after the runner has moved on)."""
    return sum(s.active_sequences for s in get_supervisor().status() if s.model_id == model.pk)


@pytest.mark.django_db(transaction=True)
async def test_an_interactive_run_goes_before_a_batch_run_that_was_waiting_first(
    endless_model: LocalModel, operator, settings
) -> None:  # type: ignore[no-untyped-def]
    # One sequence at a time, so the two must wait behind the first and take turns.
    settings.PARALLEL_SEQUENCES = 1

    async def start(source: RunSource, max_tokens: int) -> Run:
        return await sync_to_async(start_run)(
            request=RunRequest(
                model_id=endless_model.pk, prompt="hello", params={"max_tokens": max_tokens}
            ),
            user=operator,
            source=source,
        )

    first_token = asyncio.Event()

    async def on_token(text: str) -> None:
        first_token.set()

    blocker, stop_blocker = await start(RunSource.API, 100_000), asyncio.Event()
    blocking = asyncio.create_task(execute_run(blocker, on_token=on_token, cancel=stop_blocker))
    await asyncio.wait_for(first_token.wait(), 60)

    finished: list[str] = []

    async def run_and_note(run: Run, label: str) -> Run:
        done = await execute_run(run)
        finished.append(label)
        return done

    # Long enough that the batch run's decode, after the interactive one, outlasts the
    # interactive run's own finishing (its ledger writes): ``finished`` is in runner order.
    batch_run = await start(RunSource.BATCH, ANSWER_TOKENS)
    batch = asyncio.create_task(run_and_note(batch_run, "batch"))
    await until(lambda: sent(endless_model) == 2, "the batch run to wait")
    interactive_run = await start(RunSource.API, ANSWER_TOKENS)
    interactive = asyncio.create_task(run_and_note(interactive_run, "interactive"))
    await until(lambda: sent(endless_model) == 3, "the interactive run to wait")

    stop_blocker.set()
    results = await asyncio.wait_for(asyncio.gather(blocking, batch, interactive), 120)
    assert [r.status for r in results] == [RunStatus.CANCELLED, RunStatus.OK, RunStatus.OK]
    assert finished == ["interactive", "batch"]
    # Both were generated whole: the batch one waited, it was not cut short.
    assert results[1].completion_tokens == results[2].completion_tokens == ANSWER_TOKENS
