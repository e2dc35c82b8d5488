"""The alert sources that existed before notifications: telemetry episodes and lost nodes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opsdash.fleet import services as fleet
from opsdash.fleet.models import NodeStatus
from opsdash.notify.hooks import emit_telemetry_episode
from opsdash.notify.models import Channel, Delivery, Notification
from opsdash.notify.services import EventKind
from opsdash.telemetry import alerts, storage
from opsdash.telemetry.models import AlertEpisode, AlertKind

pytestmark = pytest.mark.django_db


@pytest.fixture
def gpu_team() -> Channel:
    return Channel.objects.create(
        name="gpu team",
        kind="webhook",
        target="http://127.0.0.1:9/hook",
        events=[EventKind.TELEMETRY, EventKind.NODE],
    )


def _hot(tracker: alerts.AlertTracker, t: int) -> alerts.Changes:
    breach = alerts.Breach(AlertKind.GPU_TEMPERATURE, "GPU 0", 91.0, 85.0)
    return tracker.update([breach], now_ms=t)


def test_an_opened_telemetry_episode_notifies_once_however_many_ticks_see_it(gpu_team):  # type: ignore[no-untyped-def]
    tracker = alerts.AlertTracker(raise_after=3, clear_after=2)
    for tick in range(10):  # hot for ten ticks: one episode
        storage.record_alert_changes(host="gpu1", changes=_hot(tracker, 1_000 * tick))

    episode = AlertEpisode.objects.get()
    notification = Notification.objects.get()
    assert notification.kind == EventKind.TELEMETRY
    assert notification.key == f"telemetry:{episode.pk}"
    assert notification.message == episode.message
    assert "GPU 0" in notification.message and "gpu1" in notification.subject
    assert notification.link == "/telemetry/?host=gpu1"
    assert Delivery.objects.filter(channel=gpu_team).count() == 1

    # The same episode reported again (a replay of the change) is not a second alert...
    assert emit_telemetry_episode(episode=episode) is None
    # ...but once it has ended, the next crossing is a new episode and a new alert.
    for tick in range(10, 13):
        storage.record_alert_changes(host="gpu1", changes=tracker.update([], now_ms=1_000 * tick))
    for tick in range(13, 17):
        storage.record_alert_changes(host="gpu1", changes=_hot(tracker, 1_000 * tick))
    assert AlertEpisode.objects.count() == 2
    assert Notification.objects.count() == 2


def _offline_node(settings):  # type: ignore[no-untyped-def]
    settings.FLEET = False
    settings.NODE_UNHEALTHY_SECONDS, settings.NODE_OFFLINE_SECONDS = 15, 60
    _, secret = fleet.create_node_token(name="rack", user=None)
    node, _ = fleet.register_node(
        name="gpu-7", token_secret=secret, facts={"cpu_count": 1}, version="1", address="10.0.0.7"
    )
    settings.FLEET = True
    node = fleet.approve_node(node=node, user=None)
    settings.FLEET = False
    return node


def test_a_node_going_offline_notifies_once(settings, gpu_team):  # type: ignore[no-untyped-def]
    node = _offline_node(settings)
    seen = node.last_seen

    fleet.sweep_node_health(now=seen + timedelta(seconds=20))  # unhealthy: no alert yet
    assert not Notification.objects.exists()
    fleet.sweep_node_health(now=seen + timedelta(seconds=61))
    fleet.sweep_node_health(now=seen + timedelta(seconds=600))  # still offline: nothing new

    node.refresh_from_db()
    assert node.status == NodeStatus.OFFLINE
    notification = Notification.objects.get()
    assert notification.kind == EventKind.NODE
    assert notification.key == f"node:gpu-7:offline:{seen.isoformat()}"
    assert notification.link == "/nodes/gpu-7/"
    assert notification.subject == "Node gpu-7 lost"
    assert Delivery.objects.filter(channel=gpu_team).count() == 1
