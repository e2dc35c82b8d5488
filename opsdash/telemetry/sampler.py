"""The sampler: one per process, one frame per tick, sent to the ``telemetry`` group.

It runs on a thread of its own, so the blocking psutil and NVML calls never touch daphne's
event loop. Each tick it reads the host (cheap figures every tick; clock frequency, free space
and slow NVML fields every 5 s; the runners' process table every 2 s), builds one frame,
serializes it once, keeps it as the latest snapshot and in a 15-minute ring, checks the alert
thresholds, folds it into the current minute's rollup, and hands the text to the event loop
that serves the websockets (``attach``) for ``group_send``. If that loop is still busy with
the previous frame, this one is dropped: latest wins from the source on.

It also records the host's energy counters every tick (NVML's total energy per GPU, RAPL's
``energy_uj`` per CPU package) in a bounded in-memory record, with on which GPUs each process
runs and the CPU seconds of the processes it watches (runners, the server); savings asks for a
run's energy through ``opsdash.telemetry.energy``. The probes (``probes/``: psutil, NVML,
RAPL) are read by this class only.

Database work (minute rows, alert episodes, thresholds, hourly pruning) goes to a second
thread, through the storage module it is given, so a slow or locked database can delay a row,
never a tick. Runner state comes from ``opsdash.runs.runtime.loaded_runners()``, names included.

``get_sampler()`` starts it on first use: the first telemetry websocket, snapshot or scrape.
In a fleet, each node's ``manage.py agent`` runs the same class (``persist=False``, its frames
sent to the hub, which stores the rows: ``opsdash.telemetry.fleet``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings

from opsdash.runs.runtime import LoadedRunner, loaded_runners
from opsdash.telemetry import alerts, frames
from opsdash.telemetry import storage as default_storage
from opsdash.telemetry.frames import Frame, ProcessFigures, RunnerFigures
from opsdash.telemetry.history import MinuteAccumulator
from opsdash.telemetry.probes.energy import EnergyRecorder
from opsdash.telemetry.probes.host import HostProbe, ProcessTable
from opsdash.telemetry.probes.nvml import NvmlProbe
from opsdash.telemetry.probes.rapl import POWERCAP, RaplProbe

logger = logging.getLogger(__name__)

HISTORY_SECONDS = 15 * 60
SLOW_SECONDS = 5.0
PROCESS_SECONDS = 2.0
RULES_SECONDS = 10.0
PRUNE_SECONDS = 3600.0


@dataclass
class _Clock:
    """Counts ticks to decide which slow work is due."""

    tick: float
    ticks: int = 0
    last: dict[str, float] = field(default_factory=dict)

    def due(self, name: str, every: float) -> bool:
        now = time.monotonic()
        if now - self.last.get(name, -1e18) >= every - self.tick / 2:
            self.last[name] = now
            return True
        return False


class Sampler:
    def __init__(
        self,
        *,
        tick_seconds: float,
        host: str,
        models_dir: Path,
        nvml: Any = None,
        ps: Any = psutil,
        runners: Callable[[], list[LoadedRunner]] = loaded_runners,
        persist: bool = True,
        storage: Any = default_storage,
        history_days: int = 30,
        sys_root: str = "/sys",
        powercap: Path = POWERCAP,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.host = host
        self.persist = persist
        self._storage = storage
        self.history_days = history_days
        self._host_probe = HostProbe(models_dir=models_dir, ps=ps, sys_root=sys_root)
        self._gpu_probe = NvmlProbe(nvml)
        self._rapl_probe = RaplProbe(powercap)
        self.energy = EnergyRecorder()
        self._process_table = ProcessTable(ps)
        self._runner_source = runners
        self._ring: deque[str] = deque(maxlen=max(1, round(HISTORY_SECONDS / tick_seconds)))
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._latest_text: str | None = None
        self._history_text: str | None = None
        self._fresh = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: Callable[[str], Awaitable[object]] | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: concurrent.futures.ThreadPoolExecutor | None = None
        self._clock = _Clock(tick_seconds)
        self._minutes = MinuteAccumulator()
        self._tracker = alerts.AlertTracker()
        self._rules = [alerts.Rule(k, v) for k, v in alerts.DEFAULT_THRESHOLDS.items()]
        self._runners: list[RunnerFigures] = []
        self._server: ProcessFigures | None = None
        self.ticks = 0
        self.published = 0
        self.dropped = 0

    @classmethod
    def from_settings(cls, **overrides: Any) -> Sampler:
        options: dict[str, Any] = {
            "tick_seconds": settings.TELEMETRY_TICK_MS / 1000,
            "host": settings.TELEMETRY_HOST,
            "models_dir": settings.MODELS_DIR,
            "history_days": settings.TELEMETRY_HISTORY_DAYS,
        }
        options.update(overrides)
        return cls(**options)

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._db = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="opsdash-telemetry-db"
        )
        if self.persist:
            self._db_job(self._startup_job)
        self._thread = threading.Thread(
            target=self._run, name="opsdash-telemetry-sampler", daemon=True
        )
        self._thread.start()

    def stop(self, *, db_timeout: float = 10.0) -> None:
        """Stop ticking, store the minute so far, close the database connection and NVML.

        Waits up to ``db_timeout`` for database work still queued (a locked database must not
        hold up a shutdown); what is left then runs on, or is dropped with the process.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        row = self._minutes.flush()
        if row is not None and self.persist:
            self._db_job(self._save_minute_job, row)
        if self._db is not None:
            done = self._db.submit(_close_connections)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                done.result(timeout=db_timeout)
            self._db.shutdown(wait=False)
            self._db = None
        self._gpu_probe.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        """Send frames to the group through this event loop (the one serving websockets), or,
        with ``sink``, hand each frame's text to that coroutine function on it instead (a fleet
        agent sends its frames to the hub). Latest wins either way."""
        self._loop = loop
        self._sink = sink

    # --- what readers get ---------------------------------------------------------------------

    def latest(self, *, wait: float = 0.0) -> Frame | None:
        """The newest frame; waits up to ``wait`` seconds for the first one after start."""
        with self._fresh:
            if self._latest is None and wait > 0:
                self._fresh.wait_for(lambda: self._latest is not None, timeout=wait)
            return self._latest

    def latest_text(self) -> str | None:
        return self._latest_text

    def history_text(self) -> str:
        """``{"type": "history", "frames": [...]}`` of the last 15 minutes, built by joining the
        stored JSON (no re-serialization) once per tick however many pages open."""
        with self._lock:
            if self._history_text is None:
                self._history_text = (
                    '{"type":"history","host":'
                    + frames.encode(self.host)
                    + ',"frames":['
                    + ",".join(self._ring)
                    + "]}"
                )
            return self._history_text

    def history_frames(self) -> list[str]:
        with self._lock:
            return list(self._ring)

    def reload_rules(self) -> None:
        """Read the thresholds again now (after an admin changed them)."""
        if self.persist:
            self._db_job(self._rules_job)

    # --- the tick -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop_ticks()
        finally:
            # The runner source may have read model names on this thread.
            _close_connections()

    def _loop_ticks(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("telemetry tick failed; the sampler carries on")
            next_at += self.tick_seconds
            delay = next_at - time.monotonic()
            if delay < 0:  # overran (a suspended VM, a stalled disk): skip, do not catch up
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def tick(self) -> Frame:
        clock = self._clock
        slow = clock.due("slow", SLOW_SECONDS)
        t_ms = int(time.time() * 1000)
        host = self._host_probe.read(slow=slow)
        gpu = self._gpu_probe.read(slow=slow)
        self._record_energy(t_ms / 1000, gpu.energy_mj)
        if slow and gpu.state == frames.GPU_OK:
            self.energy.note_processes(
                t_ms / 1000,
                {pid: {f"gpu:{i}" for i in gpus} for pid, gpus in gpu.process_gpus.items()},
            )
        if clock.due("processes", PROCESS_SECONDS):
            self._read_processes(gpu.process_memory if gpu.state == frames.GPU_OK else None)
        frame: Frame = {
            "type": "frame",
            "t": t_ms,
            "host": self.host,
            "cpu": host.cpu,
            "memory": host.memory,
            "disk": host.disk,
            "net": host.net,
            "gpu_state": gpu.state,
            "gpu_detail": gpu.detail,
            "gpus": gpu.gpus,
            "runners": self._runners,
            "server": self._server,
            "alerts": [],
        }
        changes = self._tracker.update(alerts.breaches(frame, self._rules), t_ms)
        frame["alerts"] = self._tracker.figures()
        text = frames.encode(frame)
        with self._fresh:
            self._latest, self._latest_text = frame, text
            self._ring.append(frames.encode(frames.lite(frame)))
            self._history_text = None
            self._fresh.notify_all()
        self._publish(text)
        self.ticks += 1

        row = self._minutes.add(t_ms, frames.series_of(frame))
        if self.persist:
            if row is not None:
                self._db_job(self._save_minute_job, row)
            if changes.opened or changes.closed:
                self._db_job(self._alerts_job, changes)
            if clock.due("rules", RULES_SECONDS):
                self._db_job(self._rules_job)
            if clock.due("prune", PRUNE_SECONDS):
                self._db_job(self._prune_job)
        return frame

    def record_energy(self, at: float | None = None) -> None:
        """Read the energy counters now (or for ``at``) into the record, between two ticks:
        pricing takes a reading at a run's end."""
        self._record_energy(time.time() if at is None else at, self._gpu_probe.read_energy())

    def _record_energy(self, at: float, gpu_mj: dict[int, int]) -> None:
        raw = self._rapl_probe.read()
        raw.update({f"gpu:{index}": mj * 1000 for index, mj in gpu_mj.items()})  # mJ → µJ
        self.energy.record(at, raw, self._rapl_probe.wraps())

    def _read_processes(self, gpu_memory: dict[int, int] | None) -> None:
        try:
            loaded = self._runner_source()
        except Exception:
            logger.exception("reading the loaded runners failed")
            loaded = []
        server_pid = os.getpid()
        table = self._process_table.read([r.pid for r in loaded] + [server_pid])
        self.energy.note_cpu_seconds(time.time(), self._process_table.cpu_seconds)
        runners: list[RunnerFigures] = []
        for runner in loaded:
            process = table.get(runner.pid)
            if process is None:
                continue
            runners.append(
                {
                    **process,
                    "model": runner.model_id,
                    "name": runner.name,
                    "slug": runner.slug,
                    "gpu_mem_bytes": None if gpu_memory is None else gpu_memory.get(runner.pid, 0),
                    "queue": runner.queue_length,
                    "state": runner.state,
                }
            )
        self._runners = runners
        self._server = table.get(server_pid)

    def _publish(self, text: str) -> None:
        loop = self._loop
        if loop is None:
            return
        if loop.is_closed() or not loop.is_running():
            self._loop = None
            return
        if self._inflight is not None and not self._inflight.done():
            self.dropped += 1  # the loop has not sent the last one yet: latest wins
            return
        try:
            self._inflight = asyncio.run_coroutine_threadsafe(self._send(text), loop)
        except RuntimeError:  # the loop closed between the check and the call
            self._loop = None
            return
        self._inflight.add_done_callback(_log_failure)
        self.published += 1

    async def _send(self, text: str) -> None:
        if self._sink is not None:
            await self._sink(text)
            return
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            message = {"type": "telemetry.frame", "host": self.host, "text": text}
            await layer.group_send(frames.GROUP, message)

    # --- database work, on its own thread -----------------------------------------------------

    def _db_job(self, job: Callable[..., None], *args: Any) -> None:
        if self._db is None:
            return
        with contextlib.suppress(RuntimeError):  # already shut down
            self._db.submit(_guarded, job, *args)

    def _startup_job(self) -> None:
        self._storage.close_open_episodes(host=self.host, at=datetime.now(UTC))
        self._rules_job()

    def _save_minute_job(self, row: Any) -> None:
        self._storage.save_minute(host=self.host, row=row)

    def _alerts_job(self, changes: alerts.Changes) -> None:
        self._storage.record_alert_changes(host=self.host, changes=changes)

    def _rules_job(self) -> None:
        self._rules = self._storage.alert_rules()

    def _prune_job(self) -> None:
        self._storage.prune_history(days=self.history_days)


def _guarded(job: Callable[..., None], *args: Any) -> None:
    from django.db import close_old_connections

    close_old_connections()
    try:
        job(*args)
    except Exception as exc:
        logger.warning("telemetry database work failed (%s): %s", job.__name__, exc)


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("sending a telemetry frame failed: %s", future.exception())


# --- the process's one sampler --------------------------------------------------------------

_lock = threading.Lock()
_sampler: Sampler | None = None
starts = 0  # how many samplers this process has started (tests check it stays 1)


def get_sampler() -> Sampler:
    """The process's sampler, started on first use."""
    global _sampler, starts
    with _lock:
        if _sampler is None:
            _sampler = Sampler.from_settings()
            _sampler.start()
            starts += 1
        return _sampler


def current_sampler() -> Sampler | None:
    return _sampler


def stop_sampler() -> None:
    """Stop and forget the sampler (tests; shutdown of the agent)."""
    global _sampler
    with _lock:
        current, _sampler = _sampler, None
    if current is not None:
        current.stop()


def _forget_after_fork() -> None:
    # Threads do not survive fork(): a forked server (the browser tests' daphne) starts its own.
    global _sampler, _lock, starts
    _sampler, _lock, starts = None, threading.Lock(), 0


#: What ``opsdash.core.background.reset_after_fork()`` calls (the fork hook does it too).
reset_after_fork = _forget_after_fork
os.register_at_fork(after_in_child=_forget_after_fork)
