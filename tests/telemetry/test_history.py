"""History: per-minute rollups, retention, and the range picker's API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from opsdash.telemetry import sampler as sampler_module
from opsdash.telemetry import services
from opsdash.telemetry.history import RANGES, MinuteAccumulator, MinuteRow, from_rows
from opsdash.telemetry.models import AlertEpisode, MinuteFigures
from tests.telemetry.test_sampler import wait_for

MINUTE = 60_000


def test_a_minute_of_samples_becomes_one_row_of_min_avg_max():
    acc = MinuteAccumulator()
    base = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
    for i, cpu in enumerate([10.0, 30.0, 20.0]):
        assert acc.add(base + i * 1000, {"cpu": cpu, "mem_used": 100.0 + i}) is None

    row = acc.add(base + MINUTE, {"cpu": 99.0, "mem_used": 1.0})

    assert row is not None and row.samples == 3
    assert row.minute == datetime.fromtimestamp(base / 1000, tz=UTC)
    assert row.figures["cpu"] == [10.0, 20.0, 30.0]
    assert row.figures["mem_used"] == [100.0, 101.0, 102.0]
    assert acc.flush().figures["cpu"] == [99.0, 99.0, 99.0]


def test_rows_merge_into_wider_points_and_missing_time_is_a_gap():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        (now - timedelta(minutes=30), 60, {"cpu": [10.0, 20.0, 30.0]}),
        (now - timedelta(minutes=29), 30, {"cpu": [0.0, 50.0, 90.0]}),
        (now - timedelta(minutes=3), 60, {"cpu": [5.0, 5.0, 5.0]}),
    ]

    answer = from_rows(rows, range_=RANGES["24h"], host="h", now=now)

    assert answer["step_seconds"] == 120 and len(answer["t"]) == 24 * 30 + 1
    cpu = answer["series"]["cpu"]
    i = answer["t"].index(int((now - timedelta(minutes=30)).timestamp() * 1000))
    assert (cpu["min"][i], cpu["max"][i]) == (0.0, 90.0)
    assert cpu["avg"][i] == pytest.approx((20 * 60 + 50 * 30) / 90, abs=0.01), "weighted"
    assert cpu["avg"][i + 1] is None, "no rows: a gap, not a line across it"
    assert sum(v is not None for v in cpu["avg"]) == 2


@pytest.mark.django_db
def test_saving_the_same_minute_twice_merges_it():
    minute = timezone.now().replace(second=0, microsecond=0)
    services.save_minute(host="h", row=MinuteRow(minute, 20, {"cpu": [10.0, 20.0, 40.0]}))
    services.save_minute(host="h", row=MinuteRow(minute, 20, {"cpu": [0.0, 40.0, 50.0]}))

    row = MinuteFigures.objects.get(host="h", minute=minute)
    assert row.samples == 40 and row.figures["cpu"] == [0.0, 30.0, 50.0]


@pytest.mark.django_db(transaction=True)
def test_the_sampler_stores_its_minute_in_the_database():
    sampler = sampler_module.get_sampler()
    sampler.latest(wait=3)
    wait_for(lambda: sampler.ticks >= 5)
    sampler_module.stop_sampler()  # stores the minute so far

    rows = list(MinuteFigures.objects.filter(host="testhost"))
    assert rows and sum(r.samples for r in rows) >= 4
    low, avg, high = rows[-1].figures["cpu"]
    assert 0 <= low <= avg <= high <= 100
    assert rows[-1].figures["mem_used"][0] > 0


@pytest.mark.django_db
def test_retention_deletes_what_is_older_than_the_setting(settings, capsys):
    now = timezone.now()
    for days in (1, 29, 31, 45):
        MinuteFigures.objects.create(
            host="h", minute=now - timedelta(days=days), samples=60, figures={}
        )
    AlertEpisode.objects.create(
        kind="ram",
        host="h",
        subject="Host",
        threshold=90,
        peak=95,
        message="m",
        started_at=now - timedelta(days=40),
        ended_at=now - timedelta(days=40),
    )
    AlertEpisode.objects.create(
        kind="ram",
        host="h",
        subject="Host",
        threshold=90,
        peak=95,
        message="m",
        started_at=now - timedelta(days=40),
    )  # still open: kept

    call_command("prune_telemetry")

    assert "deleted 2 minute rows and 1 alert episodes" in capsys.readouterr().out
    # Host "h" only: a sampler that an earlier test started may store its minute in between,
    # a fresh row that no pruning touches.
    minutes = MinuteFigures.objects.filter(host="h")
    assert minutes.count() == 2 and AlertEpisode.objects.filter(host="h").count() == 1
    call_command("prune_telemetry", "--days", "7")
    assert minutes.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_each_range_from_the_right_store(as_operator):
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes in range(1, 90):
        MinuteFigures.objects.create(
            host="testhost",
            minute=now - timedelta(minutes=minutes),
            samples=60,
            figures={"cpu": [1.0, float(minutes % 7), 99.0], "net_rx": [0.0, 1000.0, 5000.0]},
        )

    hour = as_operator.get("/api/telemetry/history?range=1h").json()
    week = as_operator.get("/api/telemetry/history?range=7d").json()
    live = as_operator.get("/api/telemetry/history?range=5m").json()

    assert hour["step_seconds"] == 60 and 60 <= len(hour["t"]) <= 62
    assert sum(v is not None for v in hour["series"]["cpu"]["avg"]) >= 59
    assert hour["series"]["cpu"]["max"][-3] == 99.0
    assert week["step_seconds"] == 900 and len(week["t"]) == 7 * 96 + 1
    assert sum(v is not None for v in week["series"]["net_rx"]["avg"]) in (6, 7, 8)
    assert live["step_seconds"] == 1 and live["host"] == "testhost"
    assert len(live["t"]) >= 1 and "cpu" in live["series"], "5 minutes come from memory"


@pytest.mark.django_db(transaction=True)
def test_an_unknown_range_is_refused(as_operator):
    response = as_operator.get("/api/telemetry/history?range=3y")
    assert response.status_code == 422
