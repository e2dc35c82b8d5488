"""The run path: validate → ``Run(running)`` → stream from the model's runner → finalize.

Every caller (playground websocket, ``POST /api/runs``, suites, the gateway) goes through
``start_run`` and ``execute_run``, so a run row exists before generation starts and is always
finalized: ``ok``, ``error`` (with the reason), ``cancelled`` (with the text so far), or
``interrupted`` when the server died under it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from inference import chat_formats
from inference.backends.base import GenerationParams
from inference.errors import (
    CONTEXT_FULL,
    LOAD_FAILED,
    InferenceError,
    MemoryBudgetExceeded,
    RunnerCrashed,
)
from inference.runtime.protocol import Priority
from inference.runtime.supervisor import (
    SHUT_DOWN,
    GenerateRequest,
    ModelSpec,
    Supervisor,
    SupervisorBusy,
)
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.errors import Code, Refusal
from opsdash.core.processes import current_process, is_alive
from opsdash.fleet import remote
from opsdash.fleet.placements import placement_spec
from opsdash.fleet.scheduler import routable_nodes, why_unroutable
from opsdash.runs import capacity, finalizers
from opsdash.runs.capacity import parallel_sequences
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.params import INVALID_PARAM, PARAM_NAMES, violations
from opsdash.runs.runtime import close_supervisor, get_supervisor

logger = logging.getLogger(__name__)

PLAYGROUND_SLUG = "playground"
MAX_PROMPT_CHARS = 200_000
SHUTDOWN_REASON = "The server was shut down while this run was generating; the text so far is kept."


class RunRefused(Refusal):
    """The request cannot start a run; ``reason`` says why, ``code`` which case (``status`` is
    its HTTP answer). A refused generation parameter names itself in ``param``."""


@dataclass(frozen=True)
class RunRequest:
    """What a caller asks for; ``params`` holds any of ``PARAM_NAMES``."""

    model_id: int
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    workflow: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def generation_params(params: dict[str, Any]) -> GenerationParams:
    """Validated generation parameters (``opsdash.runs.params``), or ``RunRefused`` naming the
    first refused parameter with its sentence and code."""
    problems = violations(params)
    if problems:
        first = problems[0]
        raise RunRefused(first.reason, code=first.code, param=first.param)
    values = {k: v for k, v in params.items() if v is not None}
    # The backend's own guard should agree with the definition (a test checks it); if it
    # ever refuses what the definition let through, say so rather than fail with a 500.
    try:
        return GenerationParams(**values)
    except InferenceError as exc:
        raise RunRefused(exc.reason, code=INVALID_PARAM) from exc


def _validate_messages(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise RunRefused("Give at least one chat message.")
    for message in messages:
        if message.get("role") not in {"system", "user", "assistant"}:
            raise RunRefused("Each message needs a role of system, user or assistant.")
        if not isinstance(message.get("content"), str):
            raise RunRefused("Each message needs text content.")
    if not any(m["content"].strip() for m in messages):
        raise RunRefused("The messages are empty: write something for the model to answer.")


def default_workflow() -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(
        slug=PLAYGROUND_SLUG,
        defaults={"name": "Playground", "description": "Test prompts from the playground."},
    )
    return workflow


def start_run(
    *, request: RunRequest, user: User | None, source: RunSource, group: uuid.UUID | None = None
) -> Run:
    """Validate the request and write the ``running`` row; refusals write nothing."""
    if (request.prompt is None) == (request.messages is None):
        raise RunRefused("Give either a prompt or chat messages.")
    if request.prompt is not None and not request.prompt.strip():
        raise RunRefused("The prompt is empty: write something for the model to answer.")
    if request.messages is not None:
        _validate_messages(request.messages)
    size = len(request.prompt or "") + sum(len(m["content"]) for m in request.messages or [])
    if size > MAX_PROMPT_CHARS:
        raise RunRefused(f"The prompt is {size:,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    params = generation_params(request.params)
    model = LocalModel.objects.filter(pk=request.model_id).first()
    if model is None:
        raise RunRefused(f"There is no model {request.model_id}.", code=Code.NOT_FOUND)
    if model.status != ModelStatus.READY:
        raise RunRefused(
            f"“{model.name}” is {model.status}; only ready models can run.",
            code=Code.WRONG_STATUS,
        )
    if request.workflow:
        workflow = Workflow.objects.filter(slug=request.workflow).first()
        if workflow is None:
            raise RunRefused(f"There is no workflow “{request.workflow}”.", code=Code.NOT_FOUND)
    else:
        workflow = default_workflow()
    if workflow.is_archived:
        raise RunRefused(
            f"The workflow {workflow.slug} is archived; restore it on its page to use it again.",
            code=Code.WRONG_STATUS,
        )
    if settings.FLEET and not routable_nodes(model_id=model.pk):
        # Refused before any row: no node could take it (503 model_not_loaded, naming why).
        raise RunRefused(why_unroutable(model_id=model.pk), code=Code.NO_NODE)
    me = current_process()
    return Run.objects.create(
        model=model,
        workflow=workflow,
        user=user,
        source=source,
        prompt=request.prompt or "",
        messages=request.messages,
        params={name: getattr(params, name) for name in PARAM_NAMES} | {"stop": list(params.stop)},
        group=group,
        # Embedded: the local host is the one node. Fleet: set once a node accepts the run.
        node="" if settings.FLEET else settings.NODE_NAME,
        host=me.host,
        pid=me.pid,
        pid_started_at=me.started_at,
    )


def finish_run(
    *,
    run_id: int,
    status: RunStatus,
    output: str = "",
    error: str = "",
    error_code: str = "",
    usage: dict[str, Any] | None = None,
) -> Run:
    """Finalize the run in one transaction (the savings feature prices it here too).

    ``error_code`` is a ``Code`` (``busy``, ``context_full``, ``load_failed`` …) that callers
    branch on to answer the right status; ``error`` is the sentence shown with it.
    """
    usage = usage or {}
    with transaction.atomic():
        run = Run.objects.select_for_update().select_related("workflow").get(pk=run_id)
        run.status = status
        run.output = output
        run.error = error
        run.error_code = error_code
        run.finish_reason = usage.get("finish_reason", "")
        run.prompt_tokens = usage.get("prompt_tokens")
        run.completion_tokens = usage.get("completion_tokens")
        run.ttft_ms = usage.get("ttft_ms")
        run.tokens_per_second = usage.get("tokens_per_second")
        run.total_ms = usage.get("total_ms")
        run.cpu_seconds = usage.get("cpu_seconds")
        run.runner_pid = usage.get("pid") or None
        run.finished_at = timezone.now()
        run.save()
        run.node_energy = node_energy(usage)
        # Other apps act on the finalized run in this same transaction (savings prices it and
        # updates its daily rollup) without runs importing them; none of them can stop the run
        # being finalized (finalizers.py).
        finalizers.run_finalizers(run=run)
    return run


def node_energy(usage: dict[str, Any]) -> dict[str, Any] | None:
    """The energy a fleet node reported in its done event (``energy_joules``, and
    ``energy_source`` "measured" or "estimated", ``energy_basis``, ``energy_devices``), or None
    when it reported none (the hub then estimates it from the run's CPU time)."""
    joules = usage.get("energy_joules")
    if isinstance(joules, bool) or not isinstance(joules, int | float) or not joules >= 0:
        return None
    source = usage.get("energy_source")
    devices = usage.get("energy_devices")
    return {
        "joules": float(joules),
        "source": source if source in {"measured", "estimated"} else "estimated",
        "basis": str(usage.get("energy_basis") or ""),
        "devices": [str(d) for d in devices] if isinstance(devices, list) else [],
    }


def model_spec(model: LocalModel) -> ModelSpec:
    """How the run path loads ``model``: with ``parallel_sequences(model)`` sequences decoded
    together, and the memory estimate for that many (``opsdash.runs.capacity``)."""
    n = parallel_sequences(model)
    return ModelSpec(
        model_id=model.pk,
        path=model.file_path,
        backend=model.backend,
        model_type=model.model_type or None,
        estimated_bytes=capacity.estimated_bytes(model, parallel_sequences=n),
        parallel_sequences=n,
    )


def run_priority(run: Run) -> Priority:
    """A Batch API run fills the model's idle capacity; every other run goes before it."""
    return "batch" if run.source == RunSource.BATCH else "interactive"


OnToken = Callable[[str], Awaitable[None]]


async def execute_run(
    run: Run, *, on_token: OnToken | None = None, cancel: asyncio.Event | None = None
) -> Run:
    """Generate through the model's runner and finalize ``run`` whatever happens.

    ``on_token`` receives each piece of text as it arrives. Setting ``cancel`` stops the
    generation within one token and records ``cancelled`` with the text so far; cancelling the
    task (a client went away) finalizes the run the same way. A server shutdown ends it
    ``interrupted``, with the text so far and ``SHUTDOWN_REASON``: the same status a crash
    leaves, because in both the server, not the person, stopped it.
    """
    recorded = asyncio.get_running_loop().create_future()
    _in_flight.add(recorded)
    try:
        return await _execute_run(run, on_token=on_token, cancel=cancel)
    finally:
        _in_flight.discard(recorded)
        recorded.set_result(None)


#: One future per ``execute_run`` under way, done once its run is recorded: what a shutdown
#: waits for, so the process does not exit with a run still ``running``.
_in_flight: set[asyncio.Future[None]] = set()


#: How long shutdown waits, after the runners are gone, for the runs they ended to be recorded.
RECORD_TIMEOUT_SECONDS = 2.0


async def shut_down_runs() -> None:
    """The run path's part of the server's shutdown (a background service's stop): end every
    generation still running and every runner process, then wait for those runs to be recorded.

    Whatever is still generating is recorded ``interrupted`` by its request; a runner that does
    not exit within ``SHUTDOWN_GRACE_SECONDS`` is killed, so the server exits within 10 s.
    """
    if settings.FLEET:
        remote.interrupt()  # the nodes' generations this hub process is waiting on
    await close_supervisor(final=True)
    late = await wait_for_runs_in_flight(timeout=RECORD_TIMEOUT_SECONDS)
    if late:
        logger.warning("%s run(s) were still being recorded at shutdown.", late)


async def wait_for_runs_in_flight(*, timeout: float) -> int:
    """Wait until every run this event loop is executing has been recorded, or ``timeout``
    seconds pass; how many were still unrecorded then."""
    loop = asyncio.get_running_loop()
    pending = [future for future in _in_flight if future.get_loop() is loop]
    if not pending:
        return 0
    _, late = await asyncio.wait(pending, timeout=timeout)
    return len(late)


async def _execute_run(run: Run, *, on_token: OnToken | None, cancel: asyncio.Event | None) -> Run:
    model = await LocalModel.objects.aget(pk=run.model_id)
    prompt, messages = (run.prompt, None) if run.messages is None else (None, run.messages)
    if messages is not None and model.prompt_format in chat_formats.FORMATS:
        # The admin chose a plain format for this model (it has no template of its own).
        prompt, messages = chat_formats.render(model.prompt_format, messages), None
    request = GenerateRequest(
        params=generation_params(run.params), prompt=prompt, messages=messages
    )
    parts: list[str] = []
    final: dict[str, Any] | None = None
    # Fleet mode: the hub generates nothing itself; a node does (opsdash.fleet.remote).
    supervisor = None if settings.FLEET else get_supervisor()
    try:
        async for event in _generate(run, model, request, cancel, supervisor):
            if event["type"] == "token":
                parts.append(event["text"])
                if on_token is not None:
                    await on_token(event["text"])
            else:
                final = dict(event)
    except InferenceError as exc:
        if exc.code == SHUT_DOWN:  # its runner was stopped under it by the shutdown
            return await _finish(run, RunStatus.INTERRUPTED, "".join(parts), SHUTDOWN_REASON)
        # The API and /v1 answer by this code (busy: 429 with Retry-After, and so on).
        code = error_code(exc)
        # A lost node's own count went down with it: the hub's count of its tokens stands in.
        lost = None
        if isinstance(exc, remote.NodeLost):
            lost = {"completion_tokens": exc.completion_tokens}
        return await _finish(run, RunStatus.ERROR, "".join(parts), exc.reason, lost, code=code)
    except asyncio.CancelledError:
        # The server cancels the requests it could not finish in its shutdown grace period.
        status, error = RunStatus.CANCELLED, ""
        if _shutting_down(supervisor):
            status, error = RunStatus.INTERRUPTED, SHUTDOWN_REASON
        await asyncio.shield(_finish(run, status, "".join(parts), error, final))
        raise
    except Exception as exc:
        logger.exception("run %s failed unexpectedly", run.pk)
        return await _finish(run, RunStatus.ERROR, "".join(parts), f"Unexpected error: {exc}.")
    if final is None:
        return await _finish(
            run, RunStatus.ERROR, "".join(parts), "The model stopped without a result."
        )
    if final.get("finish_reason") != "cancelled":
        return await _finish(run, RunStatus.OK, "".join(parts), "", final)
    # Cancelled by the supervisor's shutdown, or by the caller. A shutdown wins: the caller's
    # cancel may be its consequence (the server closing the playground's websocket).
    if _shutting_down(supervisor) or cancel is None or not cancel.is_set():
        return await _finish(run, RunStatus.INTERRUPTED, "".join(parts), SHUTDOWN_REASON, final)
    return await _finish(run, RunStatus.CANCELLED, "".join(parts), "", final)


def _generate(
    run: Run,
    model: LocalModel,
    request: GenerateRequest,
    cancel: asyncio.Event | None,
    supervisor: Supervisor | None,
) -> AsyncIterator[Any]:
    """The run's events: from the local runner (embedded), or from a node (fleet)."""
    priority = run_priority(run)
    if supervisor is not None:
        return supervisor.generate(
            model_spec(model), request, cancel_event=cancel, priority=priority
        )

    async def chosen(node: str) -> None:
        # On the row at once, so a run a crash leaves behind still names its node; on the
        # caller's instance too (it is the one /v1 names in its X-OpsDash-Node header).
        run.node = node
        await Run.objects.filter(pk=run.pk).aupdate(node=node)

    params = dataclasses.asdict(request.params) | {"stop": list(request.params.stop)}
    return remote.generate(
        model_id=model.pk,
        spec=dict(placement_spec(model)),
        request={
            "prompt": request.prompt,
            "messages": request.messages,
            "params": params,
            "priority": priority,
        },
        cancel_event=cancel,
        on_node=chosen,
    )


def _shutting_down(supervisor: Supervisor | None) -> bool:
    return remote.shutting_down() if supervisor is None else supervisor.shutting_down


#: inference's codes in opsdash's terms; an error without one (a loaded model refusing a
#: request) is recorded without a code.
_INFERENCE_CODES = {CONTEXT_FULL: Code.CONTEXT_FULL, LOAD_FAILED: Code.LOAD_FAILED}


def error_code(exc: InferenceError) -> str:
    """The ``Code`` a run that ended with ``exc`` records ("" for none)."""
    if isinstance(exc, SupervisorBusy):
        return Code.BUSY
    if isinstance(exc, MemoryBudgetExceeded):
        return Code.LOAD_FAILED  # it could not be loaded, even after unloading idle models
    if isinstance(exc, RunnerCrashed):
        return Code.CRASHED
    if exc.code in _NODE_CODES:  # a node's own error, or the hub losing the node
        return Code(exc.code)
    return _INFERENCE_CODES.get(exc.code or "", "")


#: The codes a fleet node's error event carries as they are (the agent reports its runs'
#: ``error_code``), and the hub's own for a node it could not use.
_NODE_CODES = {
    Code.BUSY,
    Code.CRASHED,
    Code.LOAD_FAILED,
    Code.CONTEXT_FULL,
    Code.NO_NODE,
    Code.NODE_LOST,
}


async def _finish(
    run: Run,
    status: RunStatus,
    output: str,
    error: str,
    usage: dict[str, Any] | None = None,
    *,
    code: str = "",
) -> Run:
    return await sync_to_async(finish_run)(
        run_id=run.pk, status=status, output=output, error=error, error_code=code, usage=usage
    )


def mark_interrupted_runs() -> int:
    """Runs left ``running`` by a process of this host that is gone become ``interrupted``.

    "Gone" includes a pid now held by another process (see ``opsdash.core.processes``); runs
    of this very process, and of other live processes sharing the database, are left alone.
    """
    host, count = current_process().host, 0
    for run in Run.objects.filter(status=RunStatus.RUNNING, host=host):
        if is_alive(host=run.host, pid=run.pid, started_at=run.pid_started_at):
            continue
        finish_run(
            run_id=run.pk,
            status=RunStatus.INTERRUPTED,
            output=run.output,
            error="The server stopped while this run was generating.",
        )
        count += 1
    return count
