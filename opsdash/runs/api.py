"""/api/runs, /api/runtime and /api/workflows.

No ``from __future__ import annotations``: django-ninja reads these annotations at import time.
"""

from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.utils.text import slugify
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from opsdash.accounts.api_auth import api_auth
from opsdash.accounts.roles import Cap
from opsdash.api_errors import BODY_STATUSES, MAX_DB_INT, DbId, ErrorOut, responses
from opsdash.core.errors import Code, Refusal
from opsdash.runs import workflows
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.params import BY_NAME, PARAM_NAMES
from opsdash.runs.runtime import get_supervisor
from opsdash.runs.serializers import run_json, workflow_json
from opsdash.runs.services import RunRefused, RunRequest, execute_run, start_run
from opsdash.typing import AuthedRequest

router = Router(tags=["runs"])


class Usage(Schema):
    prompt_tokens: int | None
    completion_tokens: int | None


class Timings(Schema):
    ttft_ms: float | None
    tokens_per_second: float | None
    total_ms: float | None


class RunOut(Schema):
    id: int
    text: str
    status: str
    error: str
    error_code: str = Field(
        "", description="why it failed, for programs: busy, context_full, load_failed, …"
    )
    finish_reason: str
    model: int | None
    workflow: str | None
    source: str
    node: str = Field("", description="the node that generated it (X-OpsDash-Node)")
    usage: Usage
    timings: Timings
    started_at: str | None
    finished_at: str | None


class RunList(Schema):
    items: list[RunOut]
    count: int


class BusyOut(ErrorOut):
    """A 429: the model's queue was full; the refused call is still a run in the ledger."""

    run: RunOut


class InterruptedOut(ErrorOut):
    """A 503: the server shut down during the run, or (fleet mode) no node could take it or
    its node was lost; the run keeps its text so far."""

    run: RunOut


RETRY_AFTER_SECONDS = 2
_RETRY_AFTER_HEADER = {
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer"},
        }
    }
}


class Message(Schema):
    role: str
    content: str


def param_field(name: str) -> Any:
    """An optional body field documented with the definition's range and default."""
    param = BY_NAME[name]
    bound = "exclusiveMinimum" if param.exclusive_minimum else "minimum"
    extra: dict[str, Any] = (
        {"maxItems": param.max_items}
        if param.type == "stops"
        else {bound: param.minimum, "maximum": param.maximum}
    )
    if param.default not in (None, ()):
        extra["default"] = param.default
    return Field(None, description=param.help, json_schema_extra=extra)


class RunIn(Schema):
    model: DbId
    prompt: str | None = None
    messages: list[Message] | None = None
    workflow: str | None = None
    # The names, types and ranges are opsdash.runs.params' (a test holds them to it); the
    # ranges are documented here and enforced by start_run, which answers 400 with a sentence.
    max_tokens: int | None = param_field("max_tokens")
    temperature: float | None = param_field("temperature")
    top_p: float | None = param_field("top_p")
    top_k: int | None = param_field("top_k")
    repeat_penalty: float | None = param_field("repeat_penalty")
    seed: int | None = param_field("seed")
    stop: list[str] | str | None = param_field("stop")


class RunFilters(Schema):
    model: DbId | None = None
    workflow: str | None = None
    user: str | None = None
    status: str | None = None
    node: str | None = Field(None, description="only the runs this node generated")
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(50, description="at most 500")
    offset: int = Field(0, ge=0, le=MAX_DB_INT)


@router.post(
    "/runs",
    response=responses({200: RunOut, 429: BusyOut, 503: InterruptedOut}, *BODY_STATUSES, 404, 409),
    auth=api_auth(Cap.RUN_PROMPTS),
    openapi_extra={"responses": {429: _RETRY_AFTER_HEADER, 503: _RETRY_AFTER_HEADER}},
)
async def create_run(request: AuthedRequest, payload: RunIn, response: HttpResponse) -> Any:
    """Run a prompt to the end and answer with the text, token counts and timings."""
    params = payload.dict(include=set(PARAM_NAMES), exclude_none=True)
    run_request = RunRequest(
        model_id=payload.model,
        prompt=payload.prompt,
        messages=[m.dict() for m in payload.messages] if payload.messages is not None else None,
        workflow=payload.workflow,
        params=params,
    )
    try:
        run = await sync_to_async(start_run)(
            request=run_request,
            user=request.user,  # set by api_auth once the token or session is checked
            source=RunSource.API,
        )
    except RunRefused as exc:
        raise HttpError(exc.status, exc.reason) from exc
    # If the client goes away, this await is cancelled, which cancels the generation: the run
    # is recorded as `cancelled` with the text so far.
    run = await execute_run(run)
    run = await Run.objects.select_related("workflow").aget(pk=run.pk)
    if run.node:
        response["X-OpsDash-Node"] = run.node
    if run.error_code == Code.BUSY:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return Status(429, {"detail": run.error, "run": run_json(run)})
    # The server is shutting down, or (fleet mode) no node took the run or its node was lost:
    # worth trying again in a moment, on another node if need be.
    if run.status == RunStatus.INTERRUPTED or run.error_code in {Code.NO_NODE, Code.NODE_LOST}:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return Status(503, {"detail": run.error, "run": run_json(run)})
    return run_json(run)


@router.get("/runs", response=responses({200: RunList}, 422), auth=api_auth(Cap.RUN_PROMPTS))
def list_runs(request: HttpRequest, filters: Query[RunFilters]) -> dict[str, Any]:
    """Runs, newest first. Operators see their own; admins see everyone's."""
    runs = Run.objects.select_related("workflow")
    user = request.auth  # type: ignore[attr-defined]
    if not (user.is_superuser or user.groups.filter(name="admin").exists()):
        runs = runs.filter(user=user)
    elif filters.user:
        runs = runs.filter(user__username=filters.user)
    if filters.model:
        runs = runs.filter(model_id=filters.model)
    if filters.workflow:
        runs = runs.filter(workflow__slug=filters.workflow)
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.node:
        runs = runs.filter(node=filters.node)
    if filters.since:
        runs = runs.filter(started_at__gte=filters.since)
    if filters.until:
        runs = runs.filter(started_at__lt=filters.until)
    limit = max(1, min(filters.limit, 500))
    page = runs[filters.offset : filters.offset + limit]
    return {"items": [run_json(r) for r in page], "count": runs.count()}


def runtime_json() -> dict[str, Any]:
    """The loaded models (pid, RSS, load time, last use, queue, sequences decoded together)
    and the memory budget."""
    supervisor = get_supervisor()
    loaded = [
        {
            "model": s.model_id,
            "pid": s.pid,
            "rss_bytes": s.rss_bytes,
            "loaded_at": s.loaded_at.isoformat() if s.loaded_at else None,
            "last_used_at": s.last_used_at.isoformat() if s.last_used_at else None,
            "queue_length": s.queue_length,
            "state": str(s.state),
            "backend": s.backend,
            "context_length": s.context_length,
            "notices": list(s.notices),
            # How many requests the runner decodes together, and how many it is decoding now.
            "parallel_sequences": getattr(s, "parallel_sequences", 1),
            "active_sequences": getattr(s, "active_sequences", 0),
        }
        for s in supervisor.status()
    ]
    return {"loaded": loaded, "memory_budget_bytes": supervisor.memory_budget_bytes}


@router.get("/runtime", response=responses({200: dict[str, Any]}), auth=api_auth(Cap.RUN_PROMPTS))
def runtime_status(request: HttpRequest) -> dict[str, Any]:
    """Loaded models (pid, RSS, load time, last use, queue) and the memory budget."""
    return runtime_json()


class WorkflowIn(Schema):
    name: str
    slug: str | None = None
    description: str = ""
    baseline_provider: str = Field(
        "", description="as genai-prices names it (openai); blank with the model: no baseline"
    )
    baseline_model: str = Field(
        "", description="a model with a price in effect in the price book (gpt-4o-mini)"
    )


class WorkflowPatch(Schema):
    """What to change; a field left out stays as it is."""

    name: str | None = None
    description: str | None = None
    baseline_provider: str | None = None
    baseline_model: str | None = None
    electricity_usd_per_kwh: str | None = Field(
        None, description='a decimal string such as "0.25"; "" means the global price'
    )
    note: str = Field("", max_length=300, description="why, kept with the costing change")


class WorkflowOut(Schema):
    name: str
    slug: str
    description: str
    baseline_provider: str
    baseline_model: str
    archived: bool
    archived_at: str | None


class WorkflowList(Schema):
    items: list[WorkflowOut]
    count: int


class WorkflowFilters(Schema):
    archived: bool = Field(False, description="true: the archived workflows instead")


def _refused_field(exc: Refusal) -> HttpError:
    """A refusal naming a body field answers 422 (like a schema failure); others their code's."""
    if exc.param is None:
        return HttpError(exc.status, exc.reason)
    return HttpError(422, exc.reason)


def _workflow(slug: str) -> Workflow:
    workflow = Workflow.objects.filter(slug=slug).first()
    if workflow is None:
        raise HttpError(404, f"There is no workflow “{slug}”.")
    return workflow


@router.get(
    "/workflows",
    response=responses({200: WorkflowList}, 422),
    auth=api_auth(Cap.VIEW_WORKFLOWS),
)
def list_workflows(request: HttpRequest, filters: Query[WorkflowFilters]) -> dict[str, Any]:
    """The active workflows, or with ``?archived=true`` the archived ones."""
    rows = Workflow.objects.filter(archived_at__isnull=not filters.archived)
    items = [workflow_json(w) for w in rows]
    return {"items": items, "count": len(items)}


# Every status needs its schema declared: without it django-ninja refuses the answer (a 500).
@router.post(
    "/workflows",
    response=responses({201: WorkflowOut}, *BODY_STATUSES, 409),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def create_workflow(request: HttpRequest, payload: WorkflowIn) -> Any:
    """A new workflow; a baseline the price book has no price for is refused (422)."""
    slug = slugify(payload.slug or payload.name)
    if not slug:
        raise HttpError(400, "Give the workflow a name.")
    if Workflow.objects.filter(slug=slug).exists():
        raise HttpError(409, f"A workflow “{slug}” already exists.")
    try:
        workflow = workflows.create_workflow(
            name=payload.name,
            slug=slug,
            description=payload.description,
            baseline_provider=payload.baseline_provider,
            baseline_model=payload.baseline_model,
            user=request.user,
        )
    except Refusal as exc:
        raise _refused_field(exc) from exc
    return Status(201, workflow_json(workflow))


@router.patch(
    "/workflows/{slug}",
    response=responses({200: WorkflowOut}, *BODY_STATUSES, 404),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def update_workflow(request: HttpRequest, slug: str, payload: WorkflowPatch) -> Any:
    """Change the name, description, baseline or electricity price; a costing change applies
    to runs started from now on (earlier runs keep their figures), audited."""
    workflow = _workflow(slug)
    try:
        workflows.edit_workflow(
            workflow=workflow,
            user=request.user,
            name=payload.name,
            description=payload.description,
            baseline_provider=payload.baseline_provider,
            baseline_model=payload.baseline_model,
            electricity_usd_per_kwh=payload.electricity_usd_per_kwh,
            note=payload.note,
        )
    except Refusal as exc:
        raise _refused_field(exc) from exc
    return workflow_json(Workflow.objects.get(pk=workflow.pk))


@router.post(
    "/workflows/{slug}/archive",
    response=responses({200: WorkflowOut}, 404, 409),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def archive_workflow(request: HttpRequest, slug: str) -> Any:
    """Archive: no new runs, its ``/v1`` keys refused (401), its history kept."""
    return workflow_json(workflows.archive_workflow(workflow=_workflow(slug), user=request.user))


@router.post(
    "/workflows/{slug}/restore",
    response=responses({200: WorkflowOut}, 404, 409),
    auth=api_auth(Cap.MANAGE_WORKFLOWS),
)
def restore_workflow(request: HttpRequest, slug: str) -> Any:
    """Take an archived workflow back into use."""
    return workflow_json(workflows.restore_workflow(workflow=_workflow(slug), user=request.user))
