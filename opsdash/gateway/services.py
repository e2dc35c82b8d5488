"""Workflow API keys, and the run a gateway call becomes.

Keys mirror personal API tokens (``opsdash.accounts.services``): 256 random bits, only the
SHA-256 stored, a short prefix kept to recognise a key, revocable. A key belongs to a workflow,
not to a person: every call it authenticates is a run of that workflow, so its avoided spend
is counted there.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inference.backends.base import MAX_TOKENS_LIMIT
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.core.processes import current_process
from opsdash.gateway.models import Endpoint, GatewayCall, WorkflowKey
from opsdash.limits.services import Admission, LimitExceeded, admit
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.runs.services import RunRequest, finish_run, start_run

KEY_PREFIX = "odw_"
PREFIX_LENGTH = 12


def _digest(secret: str) -> str:
    # 256 random bits: a plain SHA-256 is enough, there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    key: WorkflowKey
    secret: str


def create_api_key(*, workflow: Workflow, name: str, user: User | None) -> IssuedKey:
    """Issue a key for ``workflow``; the returned secret is the only copy there will ever be."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = WorkflowKey.objects.create(
        workflow=workflow,
        name=name.strip()[:100] or "key",
        prefix=secret[:PREFIX_LENGTH],
        digest=_digest(secret),
        created_by=user,
    )
    record(
        actor=user,
        action="key.create",
        target=_key_target(key),
        detail={"workflow": workflow.slug, "prefix": key.prefix},
    )
    return IssuedKey(key=key, secret=secret)


def revoke_api_key(*, key: WorkflowKey, user: User | None = None) -> None:
    """From now on the key answers 401; its calls and runs stay in the ledger."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        record(actor=user, action="key.revoke", target=_key_target(key))


def _key_target(key: WorkflowKey) -> Target:
    return Target.of(key, type="key", label=f"{key.workflow.slug}: {key.name} ({key.prefix}…)")


def use_api_key(*, secret: str) -> WorkflowKey | None:
    """The key ``secret`` names, revoked ones included (``is_active`` says), or None.

    An active key counts this request: one ``UPDATE`` sets ``last_used_at`` and adds one to
    ``request_count``. Every request counts, refused ones included: the count is what the key
    was used for, not what succeeded.
    """
    if not secret.startswith(KEY_PREFIX):
        return None
    key = WorkflowKey.objects.select_related("workflow").filter(digest=_digest(secret)).first()
    if key is None or not key.is_active:
        return key
    now = timezone.now()
    WorkflowKey.objects.filter(pk=key.pk).update(
        request_count=F("request_count") + 1, last_used_at=now
    )
    key.request_count += 1
    key.last_used_at = now
    return key


#: The package each backend runs on: its version is part of the ``system_fingerprint``.
_ENGINES = {"llama_cpp": "llama-cpp-python", "ctransformers": "ctransformers"}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def system_fingerprint(*, backend: str) -> str:
    """OpenAI's ``system_fingerprint`` for an answer from ``backend``: OpsDash's version, the
    backend and its engine's version, e.g. ``opsdash-0.1.0-llama_cpp-0.3.36``.

    A string, as OpenAI's schema types it (some clients refuse ``null``). It changes when
    any of the three does, which is what the field tells a client: the same request may
    now be answered differently. Read from package metadata, so no native library is
    imported on the request path.
    """
    engine = _ENGINES.get(backend)
    build = f"{backend}-{_version(engine)}" if engine else backend or "unknown"
    return f"opsdash-{_version('opsdash')}-{build}"


class UnknownModel(Refusal):
    """No ready model has this id (``reason`` says which case); ``/v1`` answers 404."""

    default_code = Code.NOT_FOUND


def ready_model(*, slug: str) -> LocalModel:
    """The ready model whose ``/v1`` id is ``slug``; ``UnknownModel`` otherwise."""
    model = LocalModel.objects.filter(slug=slug).exclude(status=ModelStatus.DELETED).first()
    if model is None:
        raise UnknownModel(f"The model `{slug}` does not exist.")
    if model.status != ModelStatus.READY:
        raise UnknownModel(f"The model `{slug}` is {model.status}, not ready.")
    return model


@transaction.atomic
def start_gateway_run(
    *,
    key: WorkflowKey,
    model_slug: str,
    endpoint: Endpoint,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    params: dict[str, Any],
    stream: bool,
    end_user: str,
) -> Run:
    """``start_run`` under the key's workflow, plus the call's record.

    Raises ``UnknownModel`` for a model that is not ready, ``RunRefused`` as ``start_run`` does.
    Without ``max_tokens`` the answer may run until it ends or the context is full, as
    OpenAI's chat completions do.
    """
    model = ready_model(slug=model_slug)
    params = {"max_tokens": model.context_length or MAX_TOKENS_LIMIT} | params
    run = start_run(
        request=RunRequest(
            model_id=model.pk,
            prompt=prompt,
            messages=messages,
            workflow=key.workflow.slug,
            params=params,
        ),
        user=None,  # a workflow key acts for an automation, not a person
        source=RunSource.GATEWAY,
    )
    GatewayCall.objects.create(
        run=run, key=key, endpoint=endpoint, stream=stream, end_user=end_user[:256]
    )
    return run


@dataclass(frozen=True)
class Refused:
    """A call a budget or rate limit refused, already in the ledger as the finalized ``run``."""

    run: Run
    refusal: LimitExceeded


def admit_call(
    *,
    key: WorkflowKey,
    model_slug: str,
    endpoint: Endpoint,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    params: dict[str, Any],
    stream: bool,
    end_user: str,
) -> Admission | Refused:
    """The limits check before a gateway run (``opsdash.limits.services.admit``).

    ``UnknownModel`` first (a run row needs its model, and a 404 is the more useful answer).
    A refused call is still a run: written and finalized at once with status ``error``, the
    refusal's code (``insufficient_quota`` / ``rate_limit_exceeded``) and its sentence, so the
    ledger and the key's page show what was turned away.
    """
    model = ready_model(slug=model_slug)
    try:
        return admit(key=key)
    except LimitExceeded as exc:
        run = record_refused_call(
            key=key,
            model=model,
            endpoint=endpoint,
            prompt=prompt,
            messages=messages,
            params=params,
            stream=stream,
            end_user=end_user,
            refusal=exc,
        )
        return Refused(run=run, refusal=exc)


def record_refused_call(
    *,
    key: WorkflowKey,
    model: LocalModel,
    endpoint: Endpoint,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    params: dict[str, Any],
    stream: bool,
    end_user: str,
    refusal: Refusal,
) -> Run:
    """Write a gateway call that never ran as a run finalized ``error`` with ``refusal``'s code
    and sentence (no node generated it, so it names none)."""
    me = current_process()
    with transaction.atomic():
        run = Run.objects.create(
            model=model,
            workflow=key.workflow,
            user=None,
            source=RunSource.GATEWAY,
            prompt=prompt or "",
            messages=messages,
            params=params,
            host=me.host,
            pid=me.pid,
            pid_started_at=me.started_at,
        )
        GatewayCall.objects.create(
            run=run, key=key, endpoint=endpoint, stream=stream, end_user=end_user[:256]
        )
        return finish_run(
            run_id=run.pk, status=RunStatus.ERROR, error=refusal.reason, error_code=refusal.code
        )
