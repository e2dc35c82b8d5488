"""The two audit tables of before (catalog's and savings') become entries of the one log.

Runs before the migrations that drop them (catalog 0006, savings 0004 depend on it), so on a
database migrated from before, no entry is lost; on a fresh one there is nothing to copy.
"""

from django.db import migrations

CATALOG_ACTIONS = {
    "install": "model.install",
    "retire": "model.retire",
    "restore": "model.restore",
    "delete": "model.delete",
    "recover": "model.recover",
    "configure": "model.configure",
    "cancel": "model.cancel",
}
SAVINGS_ACTIONS = {
    "add_price": ("price.add", "price"),
    "close_price": ("price.close", "price"),
    "refresh_prices": ("price.refresh", "price"),
    "change_costing": ("workflow.update", "workflow"),
    "recompute": ("savings.recompute", "savings"),
    "rebuild_rollups": ("savings.rebuild", "savings"),
}
OUTCOMES = {"ok", "refused", "failed"}


def _actor(entry):
    return entry.actor.username if entry.actor_id else ""


def copy_entries(apps, schema_editor):
    AuditEntry = apps.get_model("core", "AuditEntry")
    CatalogEntry = apps.get_model("catalog", "AuditEntry")
    SavingsEntry = apps.get_model("savings", "SavingsAuditEntry")
    copies = []
    for old in CatalogEntry.objects.select_related("actor", "model").order_by("at", "id"):
        action = CATALOG_ACTIONS.get(old.action, f"model.{old.action}")
        outcome = old.outcome
        if old.action == "install" and outcome == "started":
            # The one log has three outcomes; the start of an install is its own action.
            action, outcome = "model.install.start", "ok"
        copies.append(
            AuditEntry(
                at=old.at,
                actor_id=old.actor_id,
                actor_name=_actor(old),
                action=action,
                target_type="model",
                target_id=str(old.model_id) if old.model_id else "",
                target_label=old.model.name if old.model_id else "",
                outcome=outcome if outcome in OUTCOMES else "ok",
                detail=old.detail,
            )
        )
    for old in SavingsEntry.objects.select_related("actor").order_by("at", "id"):
        action, target_type = SAVINGS_ACTIONS.get(old.action, (f"savings.{old.action}", "savings"))
        copies.append(
            AuditEntry(
                at=old.at,
                actor_id=old.actor_id,
                actor_name=_actor(old),
                action=action,
                target_type=target_type,
                outcome=old.outcome if old.outcome in OUTCOMES else "ok",
                detail=old.detail,
            )
        )
    copies.sort(key=lambda entry: entry.at)
    AuditEntry.objects.bulk_create(copies, batch_size=500)


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_audit_log"),
        ("catalog", "0005_one_live_record_per_sha256"),
        ("savings", "0003_runcost_error"),
    ]

    operations = [migrations.RunPython(copy_entries, migrations.RunPython.noop)]
