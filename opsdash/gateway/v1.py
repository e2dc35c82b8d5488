"""The OpenAI-compatible endpoints: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Plain async Django views rather than django-ninja, so that every answer, errors included, has
exactly OpenAI's shape. Each completion is a run (``opsdash.runs.services``) under the key's
workflow, with ``source=gateway``.

Status codes: 400 an invalid request (or one the model itself refuses before generating; a
prompt longer than its context has OpenAI's ``context_length_exceeded`` code), 401 a missing,
wrong or revoked key (``auth``), 404 an unknown model (``model_not_found``) or an unknown path
under ``/v1``, 413 a body over Django's size limit, 429 the model's queue is full (with
``Retry-After``) or a budget or rate limit refused the call (``opsdash.limits``: OpenAI's
``insufficient_quota``, or ``rate_limit_exceeded`` with ``Retry-After`` from the real window),
503 the model could not be loaded, 500 a generation that failed part-way (or anything else
that went wrong: always JSON, never a page). A stream is only begun once the first text
exists, so all of these reach streaming clients as HTTP statuses too; a failure
after that arrives as an ``{"error": ...}`` event. Every answer to a request that wrote a run,
refusals included, names it in ``X-OpsDash-Run``, and the node that generated it in
``X-OpsDash-Node`` (the local node in the embedded mode). In fleet mode, 503 ``model_not_loaded``
also answers when no node can serve the model (the message says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt

from opsdash.accounts.permissions import public
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.errors import Code
from opsdash.gateway import services
from opsdash.gateway.auth import KeyedRequest, gateway_endpoint, openai_errors
from opsdash.gateway.errors import limit_error, v1_error
from opsdash.gateway.generation import Generation
from opsdash.gateway.models import Endpoint
from opsdash.gateway.parsing import (
    CompletionCall,
    InvalidRequest,
    parse_chat,
    parse_completion,
    parse_json,
)
from opsdash.gateway.responses import Answer, Chunks, completion_body, error_response, model_object
from opsdash.runs.models import Run, RunStatus
from opsdash.runs.services import RunRefused

logger = logging.getLogger(__name__)

#: Seconds a client should wait before retrying a busy model (one short answer's time).
RETRY_AFTER_SECONDS = 2
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _created(model: LocalModel) -> int:
    return int((model.installed_at or model.created_at).timestamp())


@gateway_endpoint("GET")
async def models(request: KeyedRequest) -> HttpResponse:
    """The ready models; their ids are their slugs, stable across renames and restarts."""
    ready = LocalModel.objects.filter(status=ModelStatus.READY).order_by("slug")
    data = [model_object(m.slug, _created(m)) async for m in ready]
    return JsonResponse({"object": "list", "data": data})


@gateway_endpoint("GET")
async def model_detail(request: KeyedRequest, model: str) -> HttpResponse:
    try:
        found = await sync_to_async(services.ready_model)(slug=model)
    except services.UnknownModel as exc:
        return _model_not_found(exc)
    return JsonResponse(model_object(found.slug, _created(found)))


@gateway_endpoint("POST")
async def chat_completions(request: KeyedRequest) -> HttpResponseBase:
    return await _complete(request, parse_chat)


@gateway_endpoint("POST")
async def completions(request: KeyedRequest) -> HttpResponseBase:
    return await _complete(request, parse_completion)


@public
@csrf_exempt
@openai_errors
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under ``/v1``: OpenAI's 404, in its JSON shape, key or not (as OpenAI's)."""
    return error_response(404, f"Invalid URL ({request.method} {request.path}).")


def _model_not_found(exc: services.UnknownModel) -> HttpResponse:
    return v1_error(
        exc.code, f"{exc.reason} GET /v1/models lists the models you can use.", param="model"
    )


async def _begin(request: KeyedRequest, call: CompletionCall) -> tuple[Run, Generation]:
    run = await sync_to_async(services.start_gateway_run)(
        key=request.gateway_key,
        model_slug=call.model,
        endpoint=call.endpoint,
        prompt=call.prompt,
        messages=call.messages,
        params=call.params,
        stream=call.stream,
        end_user=call.user,
    )
    return run, await Generation.start(run)


async def _complete(
    request: KeyedRequest, parse: Callable[[Any], CompletionCall]
) -> HttpResponseBase:
    try:
        call = parse(parse_json(request.body))
    except InvalidRequest as exc:
        return exc.response()
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(413, f"The request body is over the {limit:,}-byte limit.")
    # Budgets and rate limits (opsdash.limits) before any run is started; a refusal is
    # already a finalized run.
    try:
        admitted = await sync_to_async(services.admit_call)(
            key=request.gateway_key,
            model_slug=call.model,
            endpoint=call.endpoint,
            prompt=call.prompt,
            messages=call.messages,
            params=call.params,
            stream=call.stream,
            end_user=call.user,
        )
    except services.UnknownModel as exc:
        return _model_not_found(exc)
    if isinstance(admitted, services.Refused):
        refused = limit_error(admitted.refusal)
        refused["X-OpsDash-Run"] = str(admitted.run.pk)
        return refused
    # Shielded: a run row once written is always generated and finalized, even if the client
    # leaves while it is being written (it is then stopped at once and recorded cancelled).
    beginning = asyncio.ensure_future(_begin(request, call))
    try:
        run, generation = await asyncio.shield(beginning)
    except services.UnknownModel as exc:
        return _model_not_found(exc)
    except RunRefused as exc:
        # The model was found ready, so what is left is the request itself (a refused
        # generation parameter names itself; a refused prompt or messages names none).
        return v1_error(exc.code, exc.reason, param=exc.param)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            _, generation = await beginning
            await generation.abandon()
        raise

    response = await _respond(call, run, generation)
    response["X-OpsDash-Run"] = str(run.pk)
    if response.status_code == 200:  # OpenAI's x-ratelimit-*-requests, when a limit is set
        for name, value in admitted.headers().items():
            response[name] = value
    # Set by start_run (embedded) or by execute_run on this same instance once a node accepted
    # it (fleet), which is before its first text: so a stream's headers name it too.
    if run.node:
        response["X-OpsDash-Node"] = run.node
    return response


async def _respond(call: CompletionCall, run: Run, generation: Generation) -> HttpResponseBase:
    """The answer for a run that has begun: its body or stream, or its failure's error."""
    chunks = Chunks(
        endpoint=call.endpoint,
        id=_completion_id(call.endpoint, run),
        created=int(run.started_at.timestamp()),
        model=call.model,
        include_usage=call.include_usage,
        # run.model is the instance start_gateway_run created the run with: no query here.
        system_fingerprint=services.system_fingerprint(backend=run.model.backend),
    )
    try:
        # Wait for the first text (or the end) so a refusal still gets its own status code.
        first = await generation.next_text() if call.stream else None
        if not call.stream or first is None:
            run = await generation.result()
            failure = failure_response(run, call)
            if failure is not None:
                return failure
    except asyncio.CancelledError:
        await generation.abandon()  # the client went away: record the run as cancelled
        raise
    except Exception:
        await generation.abandon()
        logger.exception("gateway run %s failed", run.pk)
        return error_response(500, "The server failed to run this request.", type="server_error")
    if not call.stream:
        body = completion_answer(
            endpoint=call.endpoint,
            model=call.model,
            run=run,
            system_fingerprint=chunks.system_fingerprint,
        )
        return JsonResponse(body)
    return StreamingHttpResponse(
        _SSE(generation, chunks, first), content_type="text/event-stream", headers=SSE_HEADERS
    )


def _completion_id(endpoint: Endpoint, run: Run) -> str:
    return f"{'chatcmpl' if endpoint == Endpoint.CHAT else 'cmpl'}-opsdash-{run.pk}"


def completion_answer(
    *, endpoint: Endpoint, model: str, run: Run, system_fingerprint: str
) -> dict[str, Any]:
    """The body ``/v1`` answers for the finished ``run`` (not streamed); the Batch API writes
    the same body in its output file (``opsdash.gateway.batches``)."""
    return completion_body(
        endpoint,
        Answer(
            id=_completion_id(endpoint, run),
            created=int(run.started_at.timestamp()),
            model=model,
            text=run.output,
            finish_reason=run.finish_reason,
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            system_fingerprint=system_fingerprint,
        ),
    )


def failure_response(run: Run, call: CompletionCall) -> HttpResponse | None:
    """The error answer for a run that did not succeed, before any of it was sent (the Batch
    API's error file carries the same status and body)."""
    if run.status == RunStatus.OK:
        return None
    slug = call.model
    if run.error_code == Code.BUSY:
        return v1_error(Code.BUSY, f"The model `{slug}` is busy: {run.error}")
    if run.status == RunStatus.INTERRUPTED:  # a server shutdown ended it (see execute_run)
        return v1_error(
            Code.SHUTTING_DOWN,
            "The server is shutting down and stopped this generation; try again in a moment.",
        )
    if run.status == RunStatus.CANCELLED:
        return error_response(
            503,
            "The generation was stopped on the server (the model was unloaded); try again.",
            type="server_error",
            code="model_unloaded",
        )
    if run.error_code == Code.CONTEXT_FULL:
        # OpenAI's code, param and wording ("maximum context length"): the ones clients'
        # context-overflow fallbacks (trim the history, pick a bigger model) look for.
        return v1_error(
            Code.CONTEXT_FULL,
            f"This model's maximum context length was exceeded: {run.error}",
            param="messages" if call.endpoint == Endpoint.CHAT else "prompt",
        )
    if run.error_code in {Code.NO_NODE, Code.NODE_LOST}:
        return v1_error(run.error_code, f"The model `{slug}` could not be served: {run.error}")
    if run.error_code in {Code.LOAD_FAILED, Code.CRASHED}:
        return v1_error(run.error_code, f"The model `{slug}` could not be loaded: {run.error}")
    if not run.output:
        return error_response(400, f"The model refused this request: {run.error}")
    return error_response(500, run.error, type="server_error")


class _SSE:
    """The body of a streamed completion: server-sent events, then ``[DONE]``.

    Django drives ``__aiter__``. When the client disconnects, Django cancels the request task,
    which raises inside the iterator and its ``finally`` stops the generation; ``close()``
    (Django closes every response it sent, from a worker thread) is the second guard.
    """

    def __init__(self, generation: Generation, chunks: Chunks, first: str | None) -> None:
        self._generation = generation
        self._chunks = chunks
        self._first = first

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        generation, chunks = self._generation, self._chunks
        try:
            if opening := chunks.opening():
                yield opening
            text = self._first
            while text is not None:
                yield chunks.text(text)
                text = await generation.next_text()
            run = await generation.result()
            if run.status != RunStatus.OK:
                yield chunks.error(run.error or "The generation failed.")
                return
            yield chunks.finish(run.finish_reason)
            if chunks.include_usage:
                yield chunks.usage(run.prompt_tokens, run.completion_tokens)
            yield Chunks.DONE
        except Exception:
            # The 200 is sent: the failure can only be an event, which OpenAI clients raise.
            logger.exception("gateway stream for run %s failed", generation.run_id)
            yield chunks.error("The server failed while streaming this answer.")
        finally:
            await generation.abandon()

    def close(self) -> None:
        self._generation.abandon_from_any_thread()
