"""An agent's placement jobs: what the hub wants this node to hold, made true.

``place``: a model already on the node's disk (same sha256) is only trial-loaded, once (the
index remembers); otherwise its file is fetched from the hub (``agent_store.fetch_file``:
the node credential, ``Range`` resume, sha256 check) into the node's models folder first.
Progress goes back as ``placement`` messages: fetching (with ``bytes_done`` every
``PROGRESS_SECONDS``), loading, ready, or failed with a sentence. ``unplace``: the runner is
unloaded, the file deleted, ``removed`` reported. ``welcome``'s list is the whole desired
state: what it omits is deleted (``reconcile``). One job per model at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inference.errors import InferenceError
from inference.runtime.supervisor import Supervisor
from opsdash.fleet import protocol
from opsdash.fleet.agent_store import FetchFailed, HeldModel, ModelStore, fetch_file

logger = logging.getLogger("opsdash.fleet.agent")

#: How often a placement's fetch progress is reported.
PROGRESS_SECONDS = 1.0

Report = Callable[..., None]


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def held_for(store: ModelStore, model: Mapping[str, Any]) -> HeldModel | None:
    """The node's copy of a PlacementSpec's model: by catalog id when the sha256 agrees, else
    any file with that sha256."""
    held = store.get(model["model_id"]) if is_id(model.get("model_id")) else None
    sha256 = model.get("sha256")
    if held is not None and (not sha256 or held.sha256 == sha256):
        return held
    return store.by_sha256(sha256) if isinstance(sha256, str) else None


@dataclass(eq=False, kw_only=True)
class Placer:
    """The placement jobs of one agent. ``report(model_id, status, **fields)`` queues a
    ``placement`` message; ``credential()`` is the node's current credential."""

    name: str
    store: ModelStore
    supervisor: Supervisor
    report: Report
    credential: Callable[[], str]
    http_url: Callable[[str], str]
    trial_load_timeout: float
    jobs: dict[int, asyncio.Task[Any]] = field(default_factory=dict, init=False)

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        await asyncio.gather(*self.jobs.values(), return_exceptions=True)

    def reconcile(self, placements: list[Any]) -> None:
        """``welcome``'s list is everything this node should hold: fetch what is missing,
        report what is there, delete (reporting ``removed``) what is not listed."""
        wanted = {
            p["model_id"] for p in placements if isinstance(p, dict) and is_id(p.get("model_id"))
        }
        for held in self.store.all():
            if held.model_id not in wanted:
                self.start_unplace(held.model_id)
        for spec in placements:
            # A model the node itself is installing has no sha256 yet: kept, nothing to fetch.
            if isinstance(spec, dict) and is_id(spec.get("model_id")) and spec.get("sha256"):
                self.start_place(spec)

    def start_place(self, spec: dict[str, Any]) -> None:
        model_id = spec.get("model_id")
        if not isinstance(model_id, int) or not is_id(model_id):
            logger.warning("a placement without a model id was ignored: %r", spec)
            return
        if not isinstance(spec.get("sha256"), str):
            logger.warning("a placement without a sha256 was ignored: %r", spec)
            return
        job = self.jobs.get(model_id)
        if job is not None and not job.done():
            return  # under way; it reports when done
        self.jobs[model_id] = asyncio.get_running_loop().create_task(self._place(spec))

    async def _place(self, spec: dict[str, Any]) -> None:
        model_id, sha256 = int(spec["model_id"]), str(spec["sha256"])
        try:
            held = held_for(self.store, spec)
            if held is None:
                held = await self._fetch(spec)
            elif held.model_id != model_id:  # the same file under another catalog entry
                held = replace(held, model_id=model_id, checked=False)
                await asyncio.to_thread(self.store.add, held)
            if not held.checked:
                self.report(model_id, "loading")
                await asyncio.wait_for(
                    self.supervisor.load(held.spec(spec)), self.trial_load_timeout
                )
                # Loaded to prove it runs here; freed again until a request needs it.
                await self.supervisor.unload(model_id)
                held = replace(held, checked=True)
                await asyncio.to_thread(self.store.add, held)
            self.report(model_id, "ready")
        except FetchFailed as exc:
            self.report(model_id, "failed", error=exc.reason)
        except TimeoutError:
            self.report(
                model_id,
                "failed",
                error=f"The model did not load on node {self.name} within "
                f"{self.trial_load_timeout:g} s.",
            )
        except InferenceError as exc:
            self.report(
                model_id,
                "failed",
                error=f"The model does not load on node {self.name}: {exc.reason}",
            )
        except Exception as exc:
            logger.exception("placing model %s (%s) failed", model_id, sha256)
            self.report(model_id, "failed", error=f"Unexpected error on node {self.name}: {exc}.")

    async def _fetch(self, spec: dict[str, Any]) -> HeldModel:
        model_id, sha256 = int(spec["model_id"]), str(spec["sha256"])
        credential = self.credential()
        if not credential:
            raise FetchFailed(
                f"Node {self.name} has no credential yet, so the hub gives it no files."
            )
        file_url = spec.get("file_url") or f"/api/fleet/files/{sha256}"
        slug, backend = str(spec.get("slug") or "model"), str(spec.get("backend") or "")
        final = self.store.final_path(sha256=sha256, slug=slug, backend=backend)
        self.report(model_id, "fetching", bytes_done=0)
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(done: int) -> None:  # on the fetch thread
            now = loop.time()
            if now - last[0] >= PROGRESS_SECONDS:
                last[0] = now
                loop.call_soon_threadsafe(
                    lambda: self.report(model_id, "fetching", bytes_done=done)
                )

        size = await asyncio.to_thread(
            fetch_file,
            url=self.http_url(str(file_url)),
            credential=credential,
            sha256=sha256,
            partial=self.store.partial_path(sha256),
            final=final,
            progress=progress,
        )
        held = HeldModel(
            model_id=model_id,
            sha256=sha256,
            path=str(final),
            name=str(spec.get("name") or f"model {model_id}"),
            slug=slug,
            backend=backend,
            model_type=str(spec.get("model_type") or ""),
            size_bytes=int(spec.get("size_bytes") or size),
        )
        await asyncio.to_thread(self.store.add, held)
        self.report(model_id, "fetching", bytes_done=size)
        return held

    def start_unplace(self, model_id: int) -> None:
        previous = self.jobs.get(model_id)
        self.jobs[model_id] = asyncio.get_running_loop().create_task(
            self._unplace(model_id, previous)
        )

    async def _unplace(self, model_id: int, previous: asyncio.Task[Any] | None) -> None:
        if previous is not None and not previous.done():
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        with contextlib.suppress(InferenceError):
            await self.supervisor.unload(model_id)
        held = await asyncio.to_thread(self.store.remove, model_id)
        if held is not None:
            with contextlib.suppress(FileNotFoundError):
                self.store.partial_path(held.sha256).unlink()
        self.report(model_id, protocol.PLACEMENT_REMOVED)
