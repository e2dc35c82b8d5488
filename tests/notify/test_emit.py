from __future__ import annotations

import pytest
from django.db import transaction

from opsdash.notify.models import Channel, Delivery, Notification
from opsdash.notify.services import EventKind, emit

pytestmark = pytest.mark.django_db


def _channel(name: str, events: list[str], *, enabled: bool = True) -> Channel:
    return Channel.objects.create(
        name=name, kind="webhook", target="http://127.0.0.1:9/x", events=events, enabled=enabled
    )


def _emit(key: str = "budget:1:2026-01-01:80", kind: str = EventKind.BUDGET) -> Notification | None:
    return emit(kind=kind, key=key, subject="Budget at 80 %", message="Support bot used 80 %.")


def test_a_key_is_emitted_once_and_the_second_emit_returns_none():
    _channel("ops", [EventKind.BUDGET])

    first = _emit()
    second = _emit()

    assert first is not None and second is None
    assert Notification.objects.count() == 1
    assert Delivery.objects.count() == 1


def test_a_duplicate_key_leaves_the_callers_transaction_usable():
    _emit()
    with transaction.atomic():
        assert _emit() is None
        # The savepoint took the IntegrityError; the outer transaction still writes.
        assert _emit(key="budget:1:2026-01-01:100") is not None
    assert Notification.objects.count() == 2


def test_deliveries_go_only_to_enabled_channels_taking_the_kind():
    budget = _channel("finance", [EventKind.BUDGET])
    _channel("gpu team", [EventKind.TELEMETRY, EventKind.NODE])
    _channel("off", [EventKind.BUDGET], enabled=False)
    both = _channel("everything", [EventKind.BUDGET, EventKind.TELEMETRY])

    _emit()

    assert sorted(Delivery.objects.values_list("channel_id", flat=True)) == sorted(
        [budget.pk, both.pk]
    )
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_a_rolled_back_emit_leaves_nothing_to_send():
    _channel("ops", [EventKind.BUDGET])
    with pytest.raises(RuntimeError), transaction.atomic():
        _emit()
        raise RuntimeError("the run's finalization failed")

    assert not Notification.objects.exists() and not Delivery.objects.exists()
    # ...so the same crossing, recorded again later, alerts then.
    assert _emit() is not None
