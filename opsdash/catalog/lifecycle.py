"""What happens to an installed model: retire, restore, delete, configure.

Lifecycle (DESIGN.md): ``installing → ready → retired → deleted`` (+ ``failed``). Retired models
keep their runs and savings history; only deleting removes the file.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from inference import chat_formats
from opsdash.catalog import hooks
from opsdash.catalog.errors import LifecycleError
from opsdash.catalog.install import audit
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.errors import Code


def _require_status(model: LocalModel, allowed: tuple[str, ...], action: str) -> None:
    if model.status in allowed:
        return
    if model.status == ModelStatus.INSTALLING:
        cancel = f"/api/models/{model.pk}/cancel"
        raise LifecycleError(
            f"“{model.name}” is still installing, so it cannot be {action} yet. Cancel the "
            f"install first (Cancel on its page, or POST {cancel}), or wait for it to end.",
            code=Code.STILL_INSTALLING,
        )
    raise LifecycleError(
        f"“{model.name}” is {model.status}; only {' or '.join(allowed)} models can be {action}."
    )


def _after_retire(pk: int) -> None:
    # Other apps stop serving the model (the fleet takes it off its nodes) without the catalog
    # importing them, once the retire has committed; a failing hook is logged (hooks.py).
    transaction.on_commit(lambda: hooks.run_after_retire(model_id=pk))


@transaction.atomic
def retire_model(*, model: LocalModel, user: User | None) -> LocalModel:
    """Take a ready model out of use; its file, runs and savings history stay."""
    model = LocalModel.objects.select_for_update().get(pk=model.pk)
    _require_status(model, (ModelStatus.READY,), "retired")
    model.status, model.retired_at = ModelStatus.RETIRED, timezone.now()
    model.save(update_fields=["status", "retired_at"])
    audit(action="retire", outcome="ok", model=model, actor=user)
    _after_retire(model.pk)
    return model


@transaction.atomic
def restore_model(*, model: LocalModel, user: User | None) -> LocalModel:
    """Bring a retired model back into use, provided its file is still intact."""
    model = LocalModel.objects.select_for_update().get(pk=model.pk)
    _require_status(model, (ModelStatus.RETIRED,), "restored")
    if not Path(model.file_path).is_file():
        audit(
            action="restore",
            outcome="failed",
            model=model,
            actor=user,
            detail=f"file missing: {model.file_path}",
        )
        raise LifecycleError(
            f"The file {model.file_path} is missing, so “{model.name}” cannot "
            f"be restored. Delete it and install the file again.",
            code=Code.FILE_MISSING,
        )
    model.status, model.retired_at = ModelStatus.READY, None
    model.save(update_fields=["status", "retired_at"])
    audit(action="restore", outcome="ok", model=model, actor=user)
    return model


@transaction.atomic
def delete_model(*, model: LocalModel, user: User | None) -> LocalModel:
    """Remove a retired (or failed) model's file; the record and its history stay."""
    model = LocalModel.objects.select_for_update().get(pk=model.pk)
    _require_status(model, (ModelStatus.RETIRED, ModelStatus.FAILED), "deleted")
    freed = 0
    if model.file_path:
        path = Path(model.file_path)
        if path.is_file():
            freed = path.stat().st_size
            path.unlink()
    model.status, model.deleted_at = ModelStatus.DELETED, timezone.now()
    model.save(update_fields=["status", "deleted_at"])
    audit(
        action="delete",
        outcome="ok",
        model=model,
        actor=user,
        detail=f"removed {model.file_path} ({freed} bytes)" if freed else "no file to remove",
    )
    _after_retire(model.pk)
    return model


@transaction.atomic
def dismiss_install(*, model: LocalModel, user: User | None) -> LocalModel:
    """Clear a failed install off the models list: its record becomes ``deleted`` (kept, with
    its reason and audit entries, under "All, with deleted"). A failed install left no file,
    except a second copy set aside by migration 0005, whose file goes."""
    model = LocalModel.objects.select_for_update().get(pk=model.pk)
    _require_status(model, (ModelStatus.FAILED,), "dismissed")
    if model.file_path:
        Path(model.file_path).unlink(missing_ok=True)
    model.status, model.deleted_at = ModelStatus.DELETED, timezone.now()
    model.save(update_fields=["status", "deleted_at"])
    audit(action="dismiss", outcome="ok", model=model, actor=user, detail=model.error[:500])
    return model


def set_prompt_format(*, model: LocalModel, prompt_format: str, user: User | None) -> LocalModel:
    """Choose the plain chat format for a model ("" = the file's own template, or plain)."""
    if prompt_format and prompt_format not in chat_formats.FORMATS:
        raise LifecycleError(f"Unknown chat format {prompt_format!r}.", code=Code.UNKNOWN_FORMAT)
    model.prompt_format = prompt_format
    model.save(update_fields=["prompt_format"])
    audit(
        action="configure",
        outcome="ok",
        model=model,
        actor=user,
        detail=f"chat format: {prompt_format or 'the model’s own template'}",
    )
    return model
