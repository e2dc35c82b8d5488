"""/ws/playground/: start runs, stream their tokens, stop them.

Client → server::

    {"type": "run", "panel": "a", "model": 3, "prompt": "…" | "messages": [...],
     "params": {...}, "workflow": "slug"?}
    {"type": "stop", "panel": "a"}

Server → client: ``started`` (the run id), ``token`` (text as it is generated), ``done`` (status,
usage, timings, error) per panel, or ``error`` when a request is refused before a run starts.
Between ``started`` and the first token, a run whose model is not loaded yet gets
``{"type": "status", "state": "loading"}`` and then ``{"type": "status", "state": "running"}``
once its runner has loaded the model (the page shows "loading model", not seconds of
"running"); a run on a loaded model gets neither. (Fleet mode: a node loads the model out of
this process's sight, so no ``loading`` is sent.)
Every frame is answered: one that is not a JSON object (binary, malformed, nested too deep, a
lone surrogate) gets an ``error`` and the socket stays open.
Several panels may run at once (compare). Closing the socket stops its runs; they are recorded
as ``cancelled`` with the text so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from opsdash.accounts.roles import Cap, can
from opsdash.runs.models import Run, RunSource
from opsdash.runs.runtime import get_supervisor
from opsdash.runs.serializers import run_json
from opsdash.runs.services import RunRefused, RunRequest, execute_run, start_run

logger = logging.getLogger(__name__)

MAX_PANELS = 4
STOP_GRACE_SECONDS = 15
MAX_ID = 2**63 - 1  # the database's largest key: a bigger number cannot name a model
#: How often a run whose model is loading looks whether the load is done (only meanwhile).
LOAD_POLL_SECONDS = 0.2
#: Runner states in which the model is loaded (inference.runtime.process.RunnerState).
LOADED_STATES = frozenset({"idle", "busy"})


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

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Decode the frame here, not in the base class: it closes the socket (1011) on a
        frame that is not JSON, where a person gets a reason and keeps the page working."""
        if text_data is None:
            await self._error("Send text frames holding a JSON object; binary frames are not read.")
            return
        try:
            content = json.loads(text_data)
            # JSON can escape a lone surrogate ("\ud800"); UTF-8, the database and the model
            # cannot take one.
            json.dumps(content, ensure_ascii=False).encode()
        except RecursionError:
            await self._error("Send a JSON object: this one is nested too deeply to read.")
            return
        except UnicodeEncodeError:
            await self._error("The message holds a lone UTF-16 surrogate, which is not text.")
            return
        except ValueError:
            await self._error("Send a JSON object: this frame is not valid JSON.")
            return
        try:
            await self.receive_json(content)
        except Exception:
            # A message of a shape nothing checked for must not end the socket and its runs.
            logger.exception("playground message failed")
            await self._error("The server could not handle this message.")

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self._error("Send a JSON object.")
            return
        kind = content.get("type")
        if kind == "run":
            await self.start(content)
        elif kind == "stop":
            await self.stop(str(content.get("panel") or "main"))
        else:
            await self._error(f"Unknown message type {kind!r}.")

    async def start(self, content: dict[str, Any]) -> None:
        panel = str(content.get("panel") or "main")[:40]
        if panel in self.active:
            await self._refuse(panel, "This panel is still generating; stop it first.")
            return
        if len(self.active) >= MAX_PANELS:
            await self._refuse(panel, f"At most {MAX_PANELS} generations at once per page.")
            return
        model_id = _model_id(content.get("model"))
        if model_id is None:
            await self._refuse(panel, "Pick a model.")
            return
        params = content.get("params") or {}
        if not isinstance(params, dict):
            await self._refuse(panel, "Parameters must be an object.")
            return
        wrong = _wrong_type(content)
        if wrong:
            await self._refuse(panel, wrong)
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
        phase = _Phase(self, panel, run.pk)
        watcher = asyncio.create_task(phase.watch_load(run.model_id))

        async def on_token(text: str) -> None:
            await phase.running()
            await self._safe_send({"type": "token", "panel": panel, "run": run.pk, "text": text})

        try:
            final = await execute_run(run, on_token=on_token, cancel=cancel)
            watcher.cancel()
            await self._safe_send({"type": "done", "panel": panel, **run_json(final)})
        except Exception:
            logger.exception("playground run %s", run.pk)
        finally:
            watcher.cancel()
            self.active.pop(panel, None)

    async def _safe_send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the browser may have gone; the run is recorded
            await self.send_json(message)

    async def _refuse(self, panel: str, reason: str) -> None:
        await self.send_json({"type": "error", "panel": panel, "reason": reason})

    async def _error(self, reason: str) -> None:
        """An error about the message itself, which names no panel."""
        await self.send_json({"type": "error", "reason": reason})


def _runner_state(model_id: int) -> str | None:
    """The state of the model's runner in this process, or None when it has none. Reads the
    supervisor's status only (no database, no waiting), so the event loop may call it."""
    for status in get_supervisor().status():
        if status.model_id == model_id:
            return status.state
    return None


class _Phase:
    """What one run is doing before its first token: ``loading`` its model, then ``running``.

    Each state is sent at most once, in that order, whoever notices first (the load watcher
    or the first token); the state is set before the send is awaited, so the two cannot both
    send it.
    """

    def __init__(self, consumer: PlaygroundConsumer, panel: str, run_id: int) -> None:
        self.consumer, self.panel, self.run_id = consumer, panel, run_id
        self.state: str | None = None

    async def _say(self, state: str) -> None:
        self.state = state
        message = {"type": "status", "panel": self.panel, "run": self.run_id, "state": state}
        await self.consumer._safe_send(message)

    async def running(self) -> None:
        if self.state == "loading":
            await self._say("running")
        else:
            self.state = "running"  # nothing was announced: the page shows running already

    async def watch_load(self, model_id: int) -> None:
        if settings.FLEET:
            return  # a node loads it, out of this process's sight
        if _runner_state(model_id) in LOADED_STATES:
            return
        if self.state is None:
            await self._say("loading")
        while self.state == "loading" and _runner_state(model_id) not in LOADED_STATES:
            await asyncio.sleep(LOAD_POLL_SECONDS)
        await self.running()


def _model_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        model_id = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return None
    return model_id if 0 < model_id <= MAX_ID else None


def _wrong_type(content: dict[str, Any]) -> str | None:
    """What in a run message has a type ``start_run`` cannot take, in a sentence, or None."""
    for name in ("prompt", "workflow"):
        if content.get(name) is not None and not isinstance(content[name], str):
            return f"{name.capitalize()} must be text."
    messages = content.get("messages")
    if messages is not None and not (
        isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
    ):
        return "Messages must be a list of {role, content} objects."
    return None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
