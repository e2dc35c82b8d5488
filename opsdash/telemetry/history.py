"""History arithmetic: per-minute min/avg/max rollups and the columnar answers the range picker
charts. No database here (``services`` reads and writes the rows), so it is tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict


@dataclass(frozen=True)
class Range:
    name: str
    seconds: int
    step: int  # seconds per point
    live: bool  # answered from the 1 s in-memory history, not the database


RANGES = {
    r.name: r
    for r in (
        Range("5m", 5 * 60, 1, live=True),
        Range("15m", 15 * 60, 1, live=True),
        Range("1h", 3600, 60, live=False),
        Range("24h", 24 * 3600, 120, live=False),
        Range("7d", 7 * 24 * 3600, 900, live=False),
    )
}


class SeriesAnswer(TypedDict):
    min: list[float | None]
    avg: list[float | None]
    max: list[float | None]


class HistoryAnswer(TypedDict):
    range: str
    host: str
    step_seconds: int
    t: list[int]  # epoch ms, the start of each point's bucket
    series: dict[str, SeriesAnswer]


@dataclass
class MinuteRow:
    minute: datetime
    samples: int
    figures: dict[str, list[float]]  # series → [min, avg, max]


@dataclass
class _Stat:
    low: float
    high: float
    total: float
    count: int = 1

    def add(self, value: float) -> None:
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.total += value
        self.count += 1


@dataclass
class MinuteAccumulator:
    """Folds 1 s samples into one row per wall-clock minute; ``add`` returns the finished
    minute's row when a sample from the next minute arrives."""

    minute_ms: int | None = None
    samples: int = 0
    stats: dict[str, _Stat] = field(default_factory=dict)

    def add(self, t_ms: int, series: dict[str, float]) -> MinuteRow | None:
        minute_ms = t_ms - t_ms % 60_000
        finished = None
        if self.minute_ms is not None and minute_ms != self.minute_ms:
            finished = self.flush()
        self.minute_ms = minute_ms
        self.samples += 1
        for name, value in series.items():
            stat = self.stats.get(name)
            if stat is None:
                self.stats[name] = _Stat(value, value, value)
            else:
                stat.add(value)
        return finished

    def flush(self) -> MinuteRow | None:
        """The row of the minute so far (at shutdown), or None when empty."""
        if self.minute_ms is None or not self.samples:
            return None
        row = MinuteRow(
            minute=datetime.fromtimestamp(self.minute_ms / 1000, tz=UTC),
            samples=self.samples,
            figures={
                name: [_round(s.low), _round(s.total / s.count), _round(s.high)]
                for name, s in self.stats.items()
            },
        )
        self.minute_ms, self.samples, self.stats = None, 0, {}
        return row


def from_rows(
    rows: Iterable[tuple[datetime, int, dict[str, list[float]]]],
    *,
    range_: Range,
    host: str,
    now: datetime,
) -> HistoryAnswer:
    """Minute rows merged into ``range_.step`` buckets on a regular grid; a bucket without rows
    is None (a gap in the chart, not a line drawn across the time OpsDash was down)."""
    step_ms = range_.step * 1000
    end_ms = int(now.timestamp() * 1000)
    start_ms = end_ms - range_.seconds * 1000
    first = start_ms - start_ms % step_ms
    grid = list(range(first, end_ms + 1, step_ms))
    index = {t: i for i, t in enumerate(grid)}
    buckets: dict[str, dict[int, list[float]]] = {}  # series → bucket → [min, Σavg·n, max, n]
    for minute, samples, figures in rows:
        t = int(minute.timestamp() * 1000)
        bucket = t - t % step_ms
        if bucket not in index:
            continue
        weight = max(samples, 1)
        for name, (row_min, row_avg, row_max) in figures.items():
            acc = buckets.setdefault(name, {}).get(bucket)
            if acc is None:
                buckets[name][bucket] = [row_min, row_avg * weight, row_max, weight]
            else:
                acc[0] = min(acc[0], row_min)
                acc[1] += row_avg * weight
                acc[2] = max(acc[2], row_max)
                acc[3] += weight
    series: dict[str, SeriesAnswer] = {}
    for name in sorted(buckets):
        low: list[float | None] = [None] * len(grid)
        avg: list[float | None] = [None] * len(grid)
        high: list[float | None] = [None] * len(grid)
        for bucket, (lo, total, hi, n) in buckets[name].items():
            i = index[bucket]
            low[i], avg[i], high[i] = lo, _round(total / n), hi
        series[name] = {"min": low, "avg": avg, "max": high}
    return {
        "range": range_.name,
        "host": host,
        "step_seconds": range_.step,
        "t": grid,
        "series": series,
    }


def from_samples(
    samples: list[tuple[int, dict[str, float]]], *, range_: Range, host: str, now_ms: int
) -> HistoryAnswer:
    """1 s samples (from memory) as the same columnar answer; min = avg = max."""
    start_ms = now_ms - range_.seconds * 1000
    kept = [(t, s) for t, s in samples if t >= start_ms]
    names = sorted({name for _, s in kept for name in s})
    series: dict[str, SeriesAnswer] = {}
    for name in names:
        values = [s.get(name) for _, s in kept]
        series[name] = {"min": values, "avg": values, "max": values}
    return {
        "range": range_.name,
        "host": host,
        "step_seconds": range_.step,
        "t": [t for t, _ in kept],
        "series": series,
    }


def _round(value: Any) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    return round(float(value), 2)
