"""The batch worker: runs the requests of the Batch API's batches, in a thread of every hub.

One thread with its own event loop (and its own ORM thread, ``ThreadSensitiveContext``) per
web process, started with the server (``GatewayConfig.ready``). Every ``POLL_SECONDS``, and
at once when a batch is created or cancelled (``wake``), it claims the batches to work on:
``in_progress`` or ``cancelling``, not leased, or leased by a process that is gone or whose
lease ran out (``claimed_by`` / ``lease_until``, renewed while it works, so in the fleet mode
exactly one hub runs a batch and another takes over when that one dies). Claiming a batch puts
its items left ``running`` by that earlier owner back to ``pending`` (their runs were
recorded ``interrupted`` by the startup recovery, or are not running any more): that is how a
batch resumes after a restart, each request answered once.

Per batch it keeps up to ``parallel_sequences(model)`` requests running, each a run with
``source=batch`` (generated at batch priority, after interactive work) through the run path
the gateway uses. A request the server stopped (shutdown, busy, a lost node) goes back to
``pending`` and is tried again; one the model refused fails with the error ``/v1`` would have
answered. When nothing is left, ``finish_batch`` writes the output and error files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import timedelta

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.core.processes import current_process, is_alive
from opsdash.gateway import batches
from opsdash.gateway.models import Batch, BatchItem, BatchStatus, ItemStatus
from opsdash.runs.models import Run, RunStatus
from opsdash.runs.services import execute_run, finish_run

logger = logging.getLogger(__name__)

#: How long a claim holds without renewal; renewed every ``RENEW_SECONDS`` while working.
LEASE = timedelta(seconds=60)
RENEW_SECONDS = 10.0
#: How often the worker looks for batches it was not woken for (other hubs', expired leases).
POLL_SECONDS = 5.0
#: How often a batch's loop looks at its row (a cancel from another process, the lease).
TICK_SECONDS = 0.5
#: After the server stopped a request (shutdown, busy), wait this long before starting more.
BACKOFF_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 10.0


def worker_id() -> str:
    """This process as ``claimed_by`` records it: host, pid and start time."""
    me = current_process()
    return f"{me.host}:{me.pid}:{me.started_at or ''}"


def _owner_gone(claimed_by: str) -> bool:
    try:
        host, pid, started = claimed_by.rsplit(":", 2)
        return not is_alive(host=host, pid=int(pid), started_at=float(started) if started else None)
    except ValueError:
        return True


# --- claims (sync: run on the worker's ORM thread) ------------------------------------------


def claim_batches() -> list[int]:
    """The batches this process works on now: its own, and those it could take over."""
    me, now = worker_id(), timezone.now()
    ours: list[int] = []
    found = Batch.objects.filter(
        status__in=[BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING]
    ).values_list("pk", "claimed_by", "lease_until")
    for pk, claimed_by, lease_until in found.order_by("created_at", "id"):
        if claimed_by == me:
            ours.append(pk)
            continue
        free = not claimed_by or lease_until is None or lease_until < now
        if not free and not _owner_gone(claimed_by):
            continue
        taken = Batch.objects.filter(pk=pk, claimed_by=claimed_by, lease_until=lease_until).update(
            claimed_by=me, lease_until=now + LEASE
        )
        if taken:
            recover_items(batch_id=pk)
            ours.append(pk)
    return ours


def recover_items(*, batch_id: int) -> int:
    """Items left ``running`` by an earlier owner whose run is not going on: ``pending``."""
    count = 0
    stale = BatchItem.objects.filter(batch_id=batch_id, status=ItemStatus.RUNNING)
    for item in stale.select_related("run"):
        run: Run | None = item.run
        if (
            run is not None
            and run.status == RunStatus.RUNNING
            and is_alive(host=run.host, pid=run.pid, started_at=run.pid_started_at)
            and run.pid != current_process().pid
        ):
            continue  # still generating in a live process (fleet): leave it be
        count += BatchItem.objects.filter(pk=item.pk, status=ItemStatus.RUNNING).update(
            status=ItemStatus.PENDING
        )
    if count:
        logger.info(
            "batch %s: %s request(s) left running were put back to pending", batch_id, count
        )
    return count


def renew(*, batch_id: int) -> bool:
    return bool(
        Batch.objects.filter(pk=batch_id, claimed_by=worker_id()).update(
            lease_until=timezone.now() + LEASE
        )
    )


def release(*, batch_id: int) -> None:
    Batch.objects.filter(pk=batch_id, claimed_by=worker_id()).update(
        claimed_by="", lease_until=None
    )


def next_item(*, batch_id: int) -> BatchItem | None:
    """Take the first pending item (a conditional update, so no other worker takes it too)."""
    while True:
        item = (
            BatchItem.objects.filter(batch_id=batch_id, status=ItemStatus.PENDING)
            .order_by("line")
            .first()
        )
        if item is None:
            return None
        taken = BatchItem.objects.filter(pk=item.pk, status=ItemStatus.PENDING).update(
            status=ItemStatus.RUNNING, attempts=item.attempts + 1
        )
        if taken:
            item.status, item.attempts = ItemStatus.RUNNING, item.attempts + 1
            return item


def parallel_for(model: LocalModel) -> int:
    """How many of a batch's requests run at once: what the model's runner decodes together."""
    from opsdash.runs import services as run_services

    parallel = getattr(run_services, "parallel_sequences", None)
    return max(1, int(parallel(model) if parallel else settings.PARALLEL_SEQUENCES))


def _batch_state(batch_id: int) -> tuple[Batch, int] | None:
    """The batch, and how many requests may run at once (0: start none: the model is gone,
    whose pending requests are failed here)."""
    batch = (
        Batch.objects.select_related("workflow", "model", "input_file").filter(pk=batch_id).first()
    )
    if batch is None:
        return None
    model = batch.model
    if batch.status == BatchStatus.IN_PROGRESS and (
        model is None or model.status != ModelStatus.READY
    ):
        state = "deleted" if model is None else model.status
        batches.fail_pending(
            batch=batch,
            code="model_not_found",
            message=f"The model `{batch.model_name}` is {state}, not ready, so this request "
            "was not run; submit it again with a ready model (GET /v1/models).",
        )
        return batch, 0
    return batch, parallel_for(model) if model is not None else 0


def _pending_left(batch_id: int) -> bool:
    return BatchItem.objects.filter(batch_id=batch_id, status=ItemStatus.PENDING).exists()


def _close_connection() -> None:
    # A function, so ``connection`` is looked up on the ORM thread, whose connection it is.
    connection.close()


# --- the loop --------------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def main(self) -> None:
        async with ThreadSensitiveContext():
            try:
                await self._rounds()
            finally:
                await sync_to_async(_close_connection)()

    async def _rounds(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            try:
                await sync_to_async(close_old_connections)()
                for pk in await sync_to_async(claim_batches)():
                    task = self.tasks.get(pk)
                    if task is None or task.done():
                        self.tasks[pk] = asyncio.create_task(self._work(pk))
            except Exception:
                logger.exception("the batch worker's round failed; trying again")
            waiting = {
                asyncio.ensure_future(self.wake.wait()),
                asyncio.ensure_future(self.stop.wait()),
            }
            _, pending = await asyncio.wait(
                waiting, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for future in pending:
                future.cancel()
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _work(self, batch_id: int) -> None:
        """Run one batch's requests until none is left (or the worker stops)."""
        running: dict[asyncio.Task[str], BatchItem] = {}
        renewed = time.monotonic()
        paused_until = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() - renewed > RENEW_SECONDS:
                    if not await sync_to_async(renew)(batch_id=batch_id):
                        logger.warning("batch %s: lost its lease; another hub has it", batch_id)
                        return
                    renewed = time.monotonic()
                state = await sync_to_async(_batch_state)(batch_id)
                if state is None or state[0].status not in batches.ACTIVE:
                    return
                batch, parallel = state
                expired = batch.expires_at is not None and timezone.now() >= batch.expires_at
                accepting = (
                    batch.status == BatchStatus.IN_PROGRESS
                    and not expired
                    and time.monotonic() >= paused_until
                )
                while accepting and len(running) < parallel:
                    item = await sync_to_async(next_item)(batch_id=batch_id)
                    if item is None:
                        break
                    running[asyncio.create_task(self._run_item(batch, item))] = item
                if not running:
                    waiting_out = batch.status == BatchStatus.IN_PROGRESS and not expired
                    if not (waiting_out and await sync_to_async(_pending_left)(batch_id)):
                        await sync_to_async(batches.finish_batch)(batch=batch)
                        return
                    await asyncio.sleep(TICK_SECONDS)
                    continue
                done, _ = await asyncio.wait(
                    running, timeout=TICK_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    item = running.pop(task)
                    outcome = "retry" if task.exception() else task.result()
                    if task.exception():
                        logger.error(
                            "batch %s: request %s failed unexpectedly",
                            batch_id,
                            item.custom_id,
                            exc_info=task.exception(),
                        )
                        await sync_to_async(batches.retry_item)(item=item)
                    if outcome == "retry":
                        paused_until = time.monotonic() + BACKOFF_SECONDS
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("batch %s: the worker failed; another round resumes it", batch_id)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for item in running.values():
                # Stopped under the worker: tried again by whoever runs the batch next.
                await sync_to_async(batches.retry_item)(item=item, server_stopped=True)
            await sync_to_async(release)(batch_id=batch_id)

    async def _run_item(self, batch: Batch, item: BatchItem) -> str:
        """One request from start to its recorded outcome: "done", "failed" or "retry"."""
        beginning = asyncio.ensure_future(sync_to_async(batches.begin_item)(batch=batch, item=item))
        try:
            started = await asyncio.shield(beginning)
        except asyncio.CancelledError:
            # Stopped while its run was being written: a run row is always finalized.
            started = await beginning
            if not isinstance(started, str):
                await sync_to_async(finish_run)(
                    run_id=started[0].pk,
                    status=RunStatus.CANCELLED,
                    error="The batch worker stopped before this request ran; it runs again.",
                )
            raise
        if isinstance(started, str):
            return started
        run, call = started
        run = await execute_run(run)
        return str(
            await sync_to_async(batches.settle_item)(batch=batch, item=item, call=call, run=run)
        )


# --- the thread ------------------------------------------------------------------------------

_lock = threading.Lock()
_thread: threading.Thread | None = None
_loop: asyncio.AbstractEventLoop | None = None
_worker: _Worker | None = None


def _serve(ready: threading.Event) -> None:
    global _loop, _worker
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = _Worker()
    _loop, _worker = loop, worker
    ready.set()
    try:
        loop.run_until_complete(worker.main())
    finally:
        loop.close()


def start_worker() -> None:
    """Start this process's batch worker thread (idempotent)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        ready = threading.Event()
        _thread = threading.Thread(
            target=_serve, args=(ready,), name="opsdash-batch-worker", daemon=True
        )
        _thread.start()
        ready.wait(5)


def stop_worker() -> None:
    """Stop: the requests running are stopped (recorded ``cancelled``, their items ``pending``
    again) and the batches released, so the next start resumes them at once."""
    global _thread
    with _lock:
        current, _thread = _thread, None
        loop, worker = _loop, _worker
    if current is None or loop is None or worker is None:
        return
    try:
        loop.call_soon_threadsafe(worker.stop.set)
    except RuntimeError:  # its loop already ended
        return
    current.join(timeout=STOP_TIMEOUT_SECONDS)
    if current.is_alive():
        logger.warning("the batch worker did not stop within %s s", STOP_TIMEOUT_SECONDS)


def wake() -> None:
    """Look for work now (a batch was created or cancelled in this process)."""
    loop, worker = _loop, _worker
    if running() and loop is not None and worker is not None:
        with contextlib.suppress(RuntimeError):  # its loop just ended
            loop.call_soon_threadsafe(worker.wake.set)


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def reset_after_fork() -> None:
    """In a forked child: the parent's thread did not come along; start afresh."""
    global _thread, _lock, _loop, _worker
    _thread, _lock, _loop, _worker = None, threading.Lock(), None, None


batches.on_new_work(wake)
