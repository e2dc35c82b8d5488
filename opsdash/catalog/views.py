"""Catalog pages: the models list, a model's detail, install, the audit trail."""

from __future__ import annotations

import copy
import shutil

import psutil
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import RequestAborted
from django.http import HttpResponse, JsonResponse, QueryDict
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRefresh

from inference import chat_formats, formats
from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.catalog import services
from opsdash.catalog.api import model_json
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.catalog.uploads import (
    PartialFileUploadHandler,
    StreamedModelFile,
    UploadTooLarge,
)
from opsdash.core import audit as audit_log
from opsdash.core.bearer import bearer_token
from opsdash.runs import capacity
from opsdash.typing import AuthedRequest


def _model_for_viewer(request: AuthedRequest, pk: int) -> LocalModel:
    return get_object_or_404(LocalModel.objects.select_related("installed_by"), pk=pk)


def _disk() -> dict[str, int]:
    settings.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(settings.MODELS_DIR)
    return {"free": usage.free, "total": usage.total, "used": usage.used}


#: How many failed installs the models list shows (newest first); older ones stay in the audit.
FAILED_SHOWN = 50


@requires(Cap.VIEW_MODELS)
@require_GET
def model_list(request: AuthedRequest) -> HttpResponse:
    """Models in use (or all of them, with deleted), and failed installs in a section of their
    own: a failed record has no metadata, so among the models it was a row of dashes."""
    show = request.GET.get("show", "active")
    records = LocalModel.objects.select_related("installed_by")
    models = records.exclude(status=ModelStatus.FAILED)
    if show == "active":
        models = models.exclude(status=ModelStatus.DELETED)
    context = {
        "models": models,
        "failed": records.filter(status=ModelStatus.FAILED)[:FAILED_SHOWN],
        "show": show,
        "disk": _disk(),
        "models_dir": settings.MODELS_DIR,
        "installing": models.filter(status=ModelStatus.INSTALLING).exists(),
    }
    if request.htmx:
        return render(request, "catalog/list.html#table", context)
    return render(request, "catalog/list.html", context)


def _memory_estimate(model: LocalModel) -> dict[str, object] | None:
    """The memory the run path would load ``model`` with (its parallel sequences included),
    against what this machine has free now."""
    if model.status == ModelStatus.INSTALLING:
        return None
    estimate = capacity.memory_estimate(model)
    if estimate is None:
        return None
    available = psutil.virtual_memory().available
    return {
        "estimate": estimate,
        "available": available,
        "verdict": formats.fit_verdict(estimate.total_bytes, available),
    }


@requires(Cap.VIEW_MODELS)
@require_GET
def model_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    model = _model_for_viewer(request, pk)
    context = {
        "model": model,
        "memory": _memory_estimate(model),
        "decoding": capacity.decoding_sentence(model) if model.backend else "",
        "audit": audit_log.entries(target_type="model", target_id=str(model.pk))[:50],
        "can_manage": can(request.user, Cap.MANAGE_MODELS),
        "hyperparameters": (model.metadata or {}).get("hyperparameters") or {},
        "chat_formats": [(key, label) for key, (label, _) in chat_formats.FORMATS.items()],
    }
    if request.htmx:
        if model.status != ModelStatus.INSTALLING:
            # The install just ended: reload the whole page so the metadata appears too.
            return HttpResponseClientRefresh()
        return render(request, "catalog/detail.html#status", context)
    return render(request, "catalog/detail.html", context)


@requires(Cap.MANAGE_MODELS)
@require_http_methods(["GET", "POST"])
def install(request: AuthedRequest) -> HttpResponse:
    """The install page; POST starts a path or URL install and shows its progress."""
    error = None
    form = request.POST if request.method == "POST" else {}
    if request.method == "POST":
        kind = request.POST.get("source", "path")
        location = request.POST.get("path" if kind == "path" else "url", "")
        source = services.InstallSource(
            kind=SourceKind.PATH if kind == "path" else SourceKind.URL,
            location=location,
            expected_sha256=request.POST.get("sha256", ""),
            name=request.POST.get("name", ""),
            model_type=request.POST.get("model_type", ""),
        )
        if not location.strip():
            error = f"Give the {kind} to install from."
        else:
            try:
                model = services.start_install(source=source, user=request.user)
            except services.InstallRefused as exc:
                error = exc.reason
            else:
                messages.info(request, f"Installing “{model.name}”…")
                return redirect("catalog:detail", pk=model.pk)
    context = {
        "error": error,
        "form": form,
        "roots": settings.MODEL_ROOTS,
        "model_types": formats.LEGACY_MODEL_TYPES,
        "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
        "disk": _disk(),
    }
    return render(request, "catalog/install.html", context, status=400 if error else 200)


def _lifecycle_view(request: AuthedRequest, pk: int, verb: str) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    action = {
        "retire": services.retire_model,
        "restore": services.restore_model,
        "delete": services.delete_model,
        "cancel": services.cancel_install,
    }[verb]
    try:
        action(model=model, user=request.user)
    except services.LifecycleError as exc:
        messages.error(request, exc.reason)
    else:
        done = {
            "retire": f"“{model.name}” retired.",
            "restore": f"“{model.name}” restored.",
            "delete": f"“{model.name}” deleted.",
            "cancel": f"The install of “{model.name}” was cancelled and its partial file removed.",
        }[verb]
        messages.success(request, done)
    return redirect("catalog:detail", pk=pk)


@requires(Cap.MANAGE_MODELS)
@require_POST
def cancel(request: AuthedRequest, pk: int) -> HttpResponse:
    return _lifecycle_view(request, pk, "cancel")


@requires(Cap.MANAGE_MODELS)
@require_POST
def retire(request: AuthedRequest, pk: int) -> HttpResponse:
    return _lifecycle_view(request, pk, "retire")


@requires(Cap.MANAGE_MODELS)
@require_POST
def restore(request: AuthedRequest, pk: int) -> HttpResponse:
    return _lifecycle_view(request, pk, "restore")


@requires(Cap.MANAGE_MODELS)
@require_POST
def delete(request: AuthedRequest, pk: int) -> HttpResponse:
    if request.POST.get("confirm") != get_object_or_404(LocalModel, pk=pk).slug:
        messages.error(request, "Type the model's slug to confirm deleting its file.")
        return redirect("catalog:detail", pk=pk)
    return _lifecycle_view(request, pk, "delete")


@requires(Cap.MANAGE_MODELS)
@require_POST
def dismiss(request: AuthedRequest, pk: int) -> HttpResponse:
    """Clear a failed install off the models list (its record and audit entries stay)."""
    model = get_object_or_404(LocalModel, pk=pk)
    try:
        services.dismiss_install(model=model, user=request.user)
    except services.LifecycleError as exc:
        messages.error(request, exc.reason)
        return redirect("catalog:detail", pk=pk)
    messages.success(request, f"Dismissed the failed install of “{model.name}”.")
    return redirect("catalog:list")


@requires(Cap.MANAGE_MODELS)
@require_POST
def set_prompt_format(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=pk)
    try:
        services.set_prompt_format(
            model=model, prompt_format=request.POST.get("prompt_format", ""), user=request.user
        )
    except services.LifecycleError as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(request, "Chat format saved; chat prompts to this model now use it.")
    return redirect("catalog:detail", pk=pk)


@requires(Cap.READ_AUDIT)
@require_GET
def audit(request: AuthedRequest) -> HttpResponse:
    """The catalog's audit trail became the one Audit page, showing models' entries."""
    return redirect(f"{reverse('core:audit')}?target_type=model")


def _csrf_refusal(request: AuthedRequest) -> HttpResponse | None:
    """The CSRF check of a session upload, made before any of the body is read.

    ``CsrfViewMiddleware`` looks for the form's token in ``request.POST`` first, and reading
    that would stream the whole file in before the check; here it sees an empty form, so the
    token comes from the ``X-CSRFToken`` header (the upload page sends it).
    """
    probe = copy.copy(request)
    probe.POST = QueryDict()
    return CsrfViewMiddleware(lambda _: HttpResponse()).process_view(probe, _upload, (), {})


@csrf_exempt  # checked below for session callers; a bearer token needs no CSRF token
@require_POST
@requires(Cap.MANAGE_MODELS, api=True)
def upload(request: AuthedRequest) -> HttpResponse:
    """POST /api/models/upload: one multipart file field ``file`` (+ ``name``, ``model_type``).

    Bearer token, or session with the ``X-CSRFToken`` header. Whatever can refuse the upload
    (the role, CSRF, the declared length) is checked before any of the body is read; then the
    body, which reaches this view unread (``opsdash.core.streamed_body``), streams through
    ``PartialFileUploadHandler`` into the models disk: written once, hashed in the same pass.
    The rest of the install runs in the background (202).
    """
    if bearer_token(request) is None:
        refused = _csrf_refusal(request)
        if refused is not None:
            return refused
    if not request.META.get("CONTENT_LENGTH"):
        # Django's multipart parser reads nothing without a length (curl -F and browsers send one).
        chunked = JsonResponse(
            {"detail": "Send the upload with a Content-Length header (not chunked)."}, status=411
        )
        chunked["Connection"] = "close"
        return chunked
    # The handler must be in place before anything reads the body.
    handler = PartialFileUploadHandler(request, services.new_partial_path())
    request.upload_handlers = [handler]
    response: HttpResponse | None = None
    try:
        response = _upload(request, handler)
    except UploadTooLarge as exc:
        response = JsonResponse({"detail": exc.reason}, status=exc.status)
    except RequestAborted:
        response = HttpResponse(status=400)  # the client left mid-upload: nobody reads this
    finally:
        if response is None or response.status_code != 202:
            handler.abort()  # nothing of a refused or broken upload stays on disk
    if response.status_code != 202:
        # The rest of a refused body is never read: end the connection rather than drain it.
        response["Connection"] = "close"
    return response


def _upload(request: AuthedRequest, handler: PartialFileUploadHandler) -> HttpResponse:
    streamed = request.FILES.get("file")
    assert streamed is None or isinstance(streamed, StreamedModelFile)
    if handler.error is not None:
        return JsonResponse({"detail": handler.error.reason}, status=handler.error.status)
    if streamed is None:
        return JsonResponse(
            {"detail": "Attach the model file in the form field “file”."}, status=400
        )
    try:
        model = services.install_uploaded(
            partial=streamed.partial,
            written=streamed.written,
            filename=streamed.name or "upload",
            name=request.POST.get("name", ""),
            model_type=request.POST.get("model_type", ""),
            user=request.user,
        )
    except services.InstallRefused as exc:
        # 409 for a file already installed (its code's status), 400 for the rest.
        return JsonResponse({"detail": exc.reason, "code": exc.code}, status=exc.status)
    return JsonResponse(model_json(model), status=202)
