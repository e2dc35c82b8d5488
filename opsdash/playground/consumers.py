"""/ws/playground/: start runs, stream their tokens, stop them.

Client → server::

    {"type": "run", "panel": "a", "model": 3, "prompt": "…" | "messages": [...],
     "params": {...}, "workflow": "slug"?}
    {"type": "stop", "panel": "a"}

Server → client: ``started`` (the run id), ``token`` (text as it is generated), ``done`` (status,
usage, timings, error) per panel, or ``error`` when a request is refused before a run starts.
Several panels may run at once (compare). Closing the socket stops its runs; they are recorded
as ``cancelled`` with the text so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from opsdash.accounts.roles import Cap, can
from opsdash.runs.api import run_json
from opsdash.runs.models import Run, RunSource
from opsdash.runs.services import RunRefused, RunRequest, execute_run, start_run

logger = logging.getLogger(__name__)

MAX_PANELS = 4
STOP_GRACE_SECONDS = 15


@dataclass
class ActiveRun:
    run: Run
    cancel: asyncio.Event
    task: asyncio.Task[None]


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    required_cap = Cap.RUN_PROMPTS  # the permission walk in tests reads this

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(can)(user, self.required_cap):
            await self.close(code=4403)
            return
        self.active: dict[str, ActiveRun] = {}
        await self.accept()

    async def disconnect(self, code: int) -> None:
        active = list(getattr(self, "active", {}).values())
        for item in active:
            item.cancel.set()
        if active:
            # Let each run finalize as `cancelled` with its text, so nothing is lost.
            await asyncio.wait([item.task for item in active], timeout=STOP_GRACE_SECONDS)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "reason": "Send a JSON object."})
            return
        kind = content.get("type")
        if kind == "run":
            await self.start(content)
        elif kind == "stop":
            await self.stop(str(content.get("panel") or "main"))
        else:
            await self.send_json({"type": "error", "reason": f"Unknown message type {kind!r}."})

    async def start(self, content: dict[str, Any]) -> None:
        panel = str(content.get("panel") or "main")[:40]
        if panel in self.active:
            await self._refuse(panel, "This panel is still generating; stop it first.")
            return
        if len(self.active) >= MAX_PANELS:
            await self._refuse(panel, f"At most {MAX_PANELS} generations at once per page.")
            return
        try:
            model_id = int(content.get("model"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            await self._refuse(panel, "Pick a model.")
            return
        params = content.get("params") or {}
        if not isinstance(params, dict):
            await self._refuse(panel, "Parameters must be an object.")
            return
        request = RunRequest(
            model_id=model_id,
            prompt=content.get("prompt"),
            messages=content.get("messages"),
            workflow=content.get("workflow") or None,
            params=params,
        )
        group = _uuid(content.get("group"))
        try:
            run = await database_sync_to_async(start_run)(
                request=request, user=self.scope["user"], source=RunSource.PLAYGROUND, group=group
            )
        except RunRefused as exc:
            await self._refuse(panel, exc.reason)
            return
        await self.send_json({"type": "started", "panel": panel, "run": run.pk, "model": model_id})
        cancel = asyncio.Event()
        task = asyncio.create_task(self._drive(panel, run, cancel))
        self.active[panel] = ActiveRun(run=run, cancel=cancel, task=task)

    async def stop(self, panel: str) -> None:
        item = self.active.get(panel)
        if item is not None:
            item.cancel.set()

    async def _drive(self, panel: str, run: Run, cancel: asyncio.Event) -> None:
        """Forward tokens to this socket as they come, then the final figures."""

        async def on_token(text: str) -> None:
            await self._safe_send({"type": "token", "panel": panel, "run": run.pk, "text": text})

        try:
            final = await execute_run(run, on_token=on_token, cancel=cancel)
            await self._safe_send({"type": "done", "panel": panel, **run_json(final)})
        except Exception:
            logger.exception("playground run %s", run.pk)
        finally:
            self.active.pop(panel, None)

    async def _safe_send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the browser may have gone; the run is recorded
            await self.send_json(message)

    async def _refuse(self, panel: str, reason: str) -> None:
        await self.send_json({"type": "error", "panel": panel, "reason": reason})


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
