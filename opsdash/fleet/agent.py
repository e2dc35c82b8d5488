"""The agent: the one process on each fleet node (``manage.py agent``).

It dials out to the hub over one WebSocket (``opsdash.fleet.protocol`` is the wire contract),
so a node needs no inbound port and no database or Redis credential. It runs the node's one
sampler (frames at 1 s, ``host`` = the node's name, its runners attributed) and its own
inference supervisor, and carries out what the hub asks: generations, placements (fetch a
model file from the hub, check it, trial-load it) and status changes (approved, draining).

What it survives, and how:

- The hub, Redis or the network going away: the connection loop redials with exponential
  backoff and jitter (0.5 s doubling to 10 s), presenting the credential saved at enrollment
  (``<OPSDASH_DATA_DIR>/node-credential``, mode 0600). Generations keep running meanwhile:
  their events wait in a bounded outbox (``OUTBOX_LIMIT``) and go out, in order, once a hub
  takes the socket again; they carry ``reply_to``, so any hub process relays them to the one
  waiting. Heartbeats and frames are not buffered: only the latest matters.
- A slow link: frames are dropped rather than queued (latest wins), events are not.
- SIGTERM / SIGINT (the command): generations end at once with their text so far (a
  ``cancelled`` done), their last events are flushed for a moment, the socket closes, the
  runners exit and the sampler stops; the process is gone within a few seconds.

No ORM here: nothing on the agent's path may touch the database (it has none of the hub's);
model names come from its own index (``opsdash.fleet.agent_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from inference.backends.base import GenerationParams
from inference.errors import InferenceError
from inference.runtime.protocol import GenerateRequest
from inference.runtime.supervisor import Supervisor
from opsdash.fleet import protocol
from opsdash.fleet.agent_placements import Placer, held_for, is_id
from opsdash.fleet.agent_store import HeldModel, ModelStore
from opsdash.fleet.models import NODE_NAME_PATTERN

logger = logging.getLogger("opsdash.fleet.agent")

CREDENTIAL_FILE = "node-credential"
BACKOFF_START_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
#: How long the agent waits for the hub's answer to its hello.
WELCOME_TIMEOUT_SECONDS = 15.0
#: Outgoing events and placement reports kept while no hub holds the socket.
OUTBOX_LIMIT = 10_000
#: A frame is dropped when this much is still waiting in the socket's write buffer.
FRAME_BACKLOG_BYTES = 256 * 1024
#: At a stop: how long generations get to send their last events before the socket closes.
STOP_FLUSH_SECONDS = 2.0
RUNNER_GRACE_SECONDS = 3.0


class AgentRefused(Exception):
    """The hub refused this node for good (a bad token, a name taken): ``reason`` says why."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Redial(Exception):
    """End this connection and dial again now (a refused credential, with a token to try)."""


@dataclass(frozen=True)
class AgentConfig:
    """What one agent needs; ``from_settings`` reads ``OPSDASH_HUB_URL``, ``OPSDASH_NODE_TOKEN``,
    ``OPSDASH_NODE_NAME`` and the node's own data and models folders."""

    hub_url: str
    name: str
    token: str
    data_dir: Path
    models_dir: Path
    memory_budget_bytes: int
    queue_depth: int
    idle_unload_seconds: float = 300.0
    trial_load_timeout: float = 180.0
    version: str = ""

    def __post_init__(self) -> None:
        if not re.match(NODE_NAME_PATTERN, self.name):
            raise ValueError(
                f"“{self.name[:80]}” cannot be a node name: 1–63 letters, digits, dots, hyphens "
                "or underscores, starting with a letter or digit (--name or OPSDASH_NODE_NAME)."
            )
        if not self.hub_url:
            raise ValueError("No hub URL: start the agent with --hub URL (or OPSDASH_HUB_URL).")
        parts = urlsplit(self.hub_url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            raise ValueError(
                f"The hub URL “{self.hub_url[:200]}” is not an http(s):// or ws(s):// address "
                "of an OpsDash hub (--hub or OPSDASH_HUB_URL), e.g. https://opsdash.example.com."
            )

    @classmethod
    def from_settings(
        cls, *, hub_url: str | None = None, token: str | None = None, name: str | None = None
    ) -> AgentConfig:
        return cls(
            hub_url=(hub_url or settings.HUB_URL or "").strip(),
            name=(name or settings.NODE_NAME or "").strip(),
            token=(token or settings.NODE_TOKEN or "").strip(),
            data_dir=Path(settings.DATA_DIR),
            models_dir=Path(settings.MODELS_DIR),
            memory_budget_bytes=settings.MEMORY_BUDGET_BYTES,
            queue_depth=settings.QUEUE_DEPTH,
            idle_unload_seconds=settings.IDLE_UNLOAD_SECONDS,
            trial_load_timeout=settings.TRIAL_LOAD_TIMEOUT_SECONDS,
            version=_version(),
        )

    def _base(self) -> tuple[str, str, str]:
        parts = urlsplit(self.hub_url)
        path = parts.path.rstrip("/")
        if path.endswith(protocol.AGENT_PATH.rstrip("/")):
            path = path[: -len(protocol.AGENT_PATH.rstrip("/"))]
        return parts.scheme, parts.netloc, path

    @property
    def ws_url(self) -> str:
        """The hub's ``/ws/agent/`` (http → ws, https → wss; a path prefix is kept)."""
        scheme, netloc, path = self._base()
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        return urlunsplit((scheme, netloc, path + protocol.AGENT_PATH, "", ""))

    def http_url(self, path: str) -> str:
        """A hub path (a placement's ``file_url``) as an http(s) URL."""
        scheme, netloc, base = self._base()
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return urlunsplit((scheme, netloc, base + "/" + path.lstrip("/"), "", ""))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opsdash")
    except PackageNotFoundError:
        return ""


class Agent:
    """One node's agent; ``await run()`` until ``stop()`` (or a refusal: ``AgentRefused``).

    ``supervisor`` and ``sampler`` default to the node's own (a ``Supervisor`` with the
    configured limits, a ``Sampler`` that neither persists nor reads the catalog); ``sampler``
    False runs none.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        supervisor: Supervisor | None = None,
        sampler: Any = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = ModelStore(models_dir=config.models_dir, data_dir=config.data_dir)
        self.supervisor = supervisor or Supervisor(
            memory_budget_bytes=config.memory_budget_bytes,
            idle_unload_seconds=config.idle_unload_seconds,
            queue_depth=config.queue_depth,
        )
        self._sampler_option = sampler
        self.sampler: Any = None
        self.credential = self._read_credential()
        self._credential_refused = False
        # The hub's word on this node (welcome, status).
        self.status = ""
        self.approved = False
        self.draining = False
        # Counters tests and logs read.
        self.sessions = 0
        self.events_dropped = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self._ws: Any = None
        self._outbox: deque[str] = deque()
        self._outbox_ready = asyncio.Event()
        self._welcomed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._generations: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.placer = Placer(
            name=self.name,
            store=self.store,
            supervisor=self.supervisor,
            report=self._report,
            credential=lambda: self.credential,
            http_url=config.http_url,
            trial_load_timeout=config.trial_load_timeout,
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_sampler()
        dialing = asyncio.create_task(self._dial_forever(), name="agent-dial")
        stopping = asyncio.create_task(self._stopping.wait(), name="agent-stop")
        try:
            done, _ = await asyncio.wait({dialing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if dialing in done:
                dialing.result()  # AgentRefused, or a bug
            else:
                await self._finish_before_stop()
        finally:
            for task in (dialing, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close()

    def stop(self) -> None:
        """Begin a clean stop (safe from a signal handler on the agent's loop)."""
        self.supervisor.interrupt()  # generations end now, each with its text so far
        self._stopping.set()

    async def wait_welcomed(self, timeout: float) -> None:
        """Until a hub has welcomed this agent (tests; ``TimeoutError`` otherwise)."""
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def _finish_before_stop(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_FLUSH_SECONDS)
        deadline = asyncio.get_running_loop().time() + STOP_FLUSH_SECONDS
        while self._outbox and self._ws is not None:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1001, "agent stopping"), 2.0)

    async def _close(self) -> None:
        await self.placer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.supervisor.close(RUNNER_GRACE_SECONDS)
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.stop, db_timeout=0.5)

    def _start_sampler(self) -> None:
        if self._sampler_option is False:
            return
        sampler = self._sampler_option
        if sampler is None:
            from opsdash.telemetry.sampler import Sampler

            # persist=False and our own runner source: the sampler must not touch a database.
            sampler = Sampler.from_settings(
                host=self.name,
                models_dir=self.config.models_dir,
                persist=False,
                runners=self.loaded_runners,
            )
        self.sampler = sampler
        sampler.start()
        assert self._loop is not None
        sampler.attach(self._loop, self._send_frame)

    # --- the connection -----------------------------------------------------------------------

    async def _dial_forever(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        backoff = BACKOFF_START_SECONDS
        while not self._stopping.is_set():
            try:
                await self._session()
            except AgentRefused:
                raise
            except _Redial:
                continue
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == protocol.CLOSE_REFUSED:
                    raise AgentRefused("The hub refused this node and closed the link.") from exc
                if code == protocol.CLOSE_REPLACED:
                    logger.error(
                        "Another agent connected as node %s and took over; is it running twice?",
                        self.name,
                    )
                else:
                    logger.warning("The link to the hub closed (%s); redialing.", code)
            except InvalidURI as exc:
                raise AgentRefused(
                    f"The hub URL {self.config.ws_url} is not valid: {exc}."
                ) from exc
            except (OSError, InvalidHandshake, TimeoutError, ValueError) as exc:
                logger.warning(
                    "Cannot reach the hub at %s (%s); retrying.",
                    self.config.ws_url,
                    str(exc) or type(exc).__name__,
                )
            if self._welcomed.is_set():
                backoff = BACKOFF_START_SECONDS  # it was up: the next dial is a fresh start
                self._welcomed.clear()
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(BACKOFF_CAP_SECONDS, backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(
            self.config.ws_url,
            open_timeout=10,
            ping_interval=10,
            ping_timeout=10,
            close_timeout=2,
            max_size=16 * 1024 * 1024,
            user_agent_header=f"opsdash-agent/{self.config.version or '0'}",
        ) as ws:
            used_credential = bool(self.credential) and not self._credential_refused
            await ws.send(await self._hello(used_credential))
            first: Any = await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_SECONDS)
            answer = protocol.decode(first)
            if answer["type"] == protocol.REFUSED:
                reason = str(answer.get("reason") or "The hub refused this node.")
                if used_credential and self.config.token:
                    logger.warning(
                        "The hub refused the saved credential (%s); enrolling again.", reason
                    )
                    self._credential_refused = True
                    raise _Redial()
                raise AgentRefused(reason, str(answer.get("code") or ""))
            if answer["type"] != protocol.WELCOME:
                raise ValueError(f"the hub answered hello with {answer['type']!r}")
            self._on_welcome(answer)
            self._ws = ws
            sender = asyncio.create_task(self._send_outbox(ws), name="agent-outbox")
            beats = asyncio.create_task(self._heartbeats(ws), name="agent-heartbeat")
            try:
                async for text in ws:
                    if isinstance(text, str):
                        self._dispatch(text)
                    if sender.done() or beats.done():
                        break  # a send failed: the socket is going
            finally:
                self._ws = None
                for task in (sender, beats):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _hello(self, use_credential: bool) -> str:
        identity = (
            {"credential": self.credential} if use_credential else {"token": self.config.token}
        )
        if not use_credential and not self.config.token:
            raise AgentRefused(
                "This node has no saved credential and no node token: start the agent with "
                "--token (or OPSDASH_NODE_TOKEN), created with `manage.py create_node_token`."
            )
        return protocol.encode(
            protocol.HELLO,
            name=self.name,
            version=self.config.version,
            protocol=protocol.PROTOCOL_VERSION,
            facts=await asyncio.to_thread(self.facts),
            models=[
                {
                    "model_id": h.model_id,
                    "sha256": h.sha256,
                    "status": "ready" if h.checked else "held",
                }
                for h in self.store.all()
            ],
            **identity,
        )

    def facts(self) -> dict[str, Any]:
        """What the hub shows of this machine: CPUs, memory, GPUs (from the sampler's frame)."""
        import psutil

        gpus: list[dict[str, Any]] = []
        if self.sampler is not None:
            frame = self.sampler.latest(wait=2.0)
            if frame is not None:
                gpus = [
                    {
                        "index": g.get("index"),
                        "name": g.get("name"),
                        "mem_total": g.get("mem_total"),
                    }
                    for g in frame.get("gpus", [])
                ]
        return {
            "cpu_count": psutil.cpu_count(logical=True) or os.cpu_count() or 0,
            "memory_total_bytes": psutil.virtual_memory().total,
            "gpus": gpus,
        }

    def _on_welcome(self, message: Mapping[str, Any]) -> None:
        credential = message.get("credential")
        if isinstance(credential, str) and credential:
            self._save_credential(credential)
            self._credential_refused = False
        self._apply_status(message)
        self.sessions += 1
        self._welcomed.set()
        logger.info("Node %s linked to %s (%s).", self.name, self.config.ws_url, self.status or "?")
        placements = message.get("placements")
        if isinstance(placements, list):
            self.placer.reconcile(placements)
        self._outbox_ready.set()

    # --- the credential -----------------------------------------------------------------------

    @property
    def credential_path(self) -> Path:
        return self.config.data_dir / CREDENTIAL_FILE

    def _read_credential(self) -> str:
        try:
            return self.credential_path.read_text().strip()
        except FileNotFoundError:
            return ""

    def _save_credential(self, credential: str) -> None:
        """Kept readable by this user only: it is the node's identity."""
        path = self.credential_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(credential + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        self.credential = credential

    def _forget_credential(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.credential_path.unlink()
        self.credential = ""

    # --- what goes out ------------------------------------------------------------------------

    async def _send_frame(self, text: str) -> None:
        """The sampler's sink: one frame, or none if the link is down or backed up."""
        ws = self._ws
        if ws is None or self.approved is False:
            return
        transport = getattr(ws, "transport", None)
        if transport is not None and transport.get_write_buffer_size() > FRAME_BACKLOG_BYTES:
            self.frames_dropped += 1
            return
        from websockets.exceptions import ConnectionClosed

        # The sampler's text as it is: a frame's own type is "frame", so it is the message
        # (serialized once, on the sampler's thread; the hub passes it on unparsed).
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)
            self.frames_sent += 1

    async def _heartbeats(self, ws: Any) -> None:
        while True:
            runners = self.loaded_runners()
            await ws.send(
                protocol.encode(
                    protocol.HEARTBEAT,
                    loaded=[_loaded_entry(r) for r in runners],
                    queue_length=sum(r.queue_length for r in runners),
                )
            )
            await asyncio.sleep(protocol.HEARTBEAT_SECONDS)

    def _emit(self, message_type: str, *, terminal: bool = True, **fields: Any) -> None:
        """Queue a message that must reach the hub, in order, even across a reconnect.

        When the outbox is full, token events are dropped (counted) but the end of a
        generation and placement reports are still kept: a client then gets a short text
        with a true ending rather than waiting for one that never comes.
        """
        if not terminal and len(self._outbox) >= OUTBOX_LIMIT:
            self.events_dropped += 1
            return
        self._outbox.append(protocol.encode(message_type, **fields))
        self._outbox_ready.set()

    async def _send_outbox(self, ws: Any) -> None:
        while True:
            while self._outbox:
                await ws.send(self._outbox[0])  # a closed socket raises: it stays queued
                self._outbox.popleft()
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    # --- what comes in ------------------------------------------------------------------------

    def _dispatch(self, text: str) -> None:
        try:
            message = protocol.decode(text)
        except ValueError:
            logger.warning("The hub sent something that is not a message: %.200s", text)
            return
        kind = message["type"]
        if kind == protocol.STATUS:
            self._apply_status(message)
        elif kind == protocol.GENERATE:
            self._spawn(self._generate(message))
        elif kind == protocol.CANCEL:
            cancel = self._generations.get(str(message.get("request_id")))
            if cancel is not None:
                cancel.set()
        elif kind == protocol.PLACE and isinstance(message.get("placement"), dict):
            self.placer.start_place(message["placement"])
        elif kind == protocol.UNPLACE and is_id(message.get("model_id")):
            self.placer.start_unplace(message["model_id"])
        elif kind == protocol.REFUSED:
            logger.error("The hub refused this node: %s", message.get("reason"))
        else:
            logger.debug("ignoring a %s message from the hub", kind)

    def _apply_status(self, message: Mapping[str, Any]) -> None:
        status = str(message.get("status") or "")
        if status == "deleted":
            # An admin deleted this node: its credential is dead. With a token it enrolls
            # again (pending); without one the next hello says what to do.
            logger.warning("An admin deleted node %s on the hub.", self.name)
            self._forget_credential()
            ws = self._ws
            if ws is not None:
                self._spawn(ws.close(1000, "node deleted"))
            return
        self.status = status
        approved = message.get("approved")
        self.approved = bool(approved) if approved is not None else status not in ("", "pending")
        draining = message.get("draining")
        self.draining = bool(draining) if draining is not None else status == "draining"

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- generations --------------------------------------------------------------------------

    async def _generate(self, message: Mapping[str, Any]) -> None:
        request_id, reply_to = message.get("request_id"), message.get("reply_to")
        if not isinstance(request_id, str) or not isinstance(reply_to, str):
            logger.warning("a generate message without request_id or reply_to was ignored")
            return

        def emit(event: dict[str, Any], *, terminal: bool = True) -> None:
            self._emit(
                protocol.EVENT,
                terminal=terminal,
                request_id=request_id,
                reply_to=reply_to,
                event=event,
            )

        # Refusals come before ``accepted``, so the hub sends the request to another node.
        refusal = self._refusal(message)
        if refusal is not None:
            emit({"type": "error", "code": refusal[0], "reason": refusal[1]})
            return
        held, request = self._held_for(message["model"]), _request(message["request"])
        assert held is not None and not isinstance(request, str)
        emit({"type": "accepted", "node": self.name})
        cancel = asyncio.Event()
        self._generations[request_id] = cancel
        try:
            async for event in self.supervisor.generate(held.spec(), request, cancel_event=cancel):
                emit(dict(event), terminal=event["type"] != "token")
        except InferenceError as exc:
            emit({"type": "error", "code": _error_code(exc), "reason": exc.reason})
        except Exception as exc:
            logger.exception("generation %s failed on the agent", request_id)
            emit(
                {
                    "type": "error",
                    "code": "",
                    "reason": f"Unexpected error on node {self.name}: {exc}.",
                }
            )
        finally:
            self._generations.pop(request_id, None)

    def _refusal(self, message: Mapping[str, Any]) -> tuple[str, str] | None:
        """Why this node will not start the generation (code, sentence), or None."""
        if self._stopping.is_set():
            return "shutting_down", f"Node {self.name} is stopping."
        if not self.approved:
            return "not_approved", f"Node {self.name} is waiting for an admin's approval."
        if self.draining:
            return "draining", f"Node {self.name} is draining: it takes no new requests."
        model = message.get("model")
        held = self._held_for(model) if isinstance(model, dict) else None
        if held is None:
            label = model.get("name") if isinstance(model, dict) else None
            return (
                "model_not_loaded",
                f"Node {self.name} does not hold the model “{label or model}”; deploy it there.",
            )
        request = _request(message.get("request"))
        if isinstance(request, str):
            return "invalid_param", request
        queued = sum(
            s.queue_length for s in self.supervisor.status() if s.model_id == held.model_id
        )
        if queued >= self.config.queue_depth:
            return (
                protocol.NODE_BUSY,
                f"“{held.name}” already has {queued} requests on node {self.name}, its limit.",
            )
        return None

    def _held_for(self, model: Mapping[str, Any]) -> HeldModel | None:
        return held_for(self.store, model)

    def _report(self, model_id: int, status: str, **fields: Any) -> None:
        self._emit(protocol.PLACEMENT, model_id=model_id, status=status, **fields)

    # --- the node's runners, for heartbeats and the sampler -----------------------------------

    def loaded_runners(self) -> list[Any]:
        """The supervisor's runners with names from the node's index (no catalog: no database).
        Called on the sampler's thread too."""
        from opsdash.runs.runtime import LoadedRunner

        out = []
        for s in self.supervisor.status():
            held = self.store.get(s.model_id)
            out.append(
                LoadedRunner(
                    model_id=s.model_id,
                    name=held.name if held else f"model {s.model_id}",
                    slug=held.slug if held else str(s.model_id),
                    pid=s.pid,
                    rss_bytes=s.rss_bytes,
                    loaded_at=s.loaded_at,
                    last_used_at=s.last_used_at,
                    queue_length=s.queue_length,
                    state=s.state,
                )
            )
        return out


def _loaded_entry(runner: Any) -> dict[str, Any]:
    """A runner as heartbeats carry it (``Node.loaded``; the embedded node's shape)."""
    return {
        "model": runner.model_id,
        "name": runner.name,
        "slug": runner.slug,
        "pid": runner.pid,
        "rss_bytes": runner.rss_bytes,
        "queue_length": runner.queue_length,
        "state": runner.state,
    }


def _request(raw: object) -> GenerateRequest | str:
    """The hub's ``request`` as a ``GenerateRequest``, or the sentence saying what is wrong."""
    if not isinstance(raw, dict):
        return "The generate message carries no request."
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        return "The request's params must be an object."
    try:
        return GenerateRequest(
            params=GenerationParams(**{k: v for k, v in params.items() if v is not None}),
            prompt=raw.get("prompt"),
            messages=raw.get("messages"),
        )
    except InferenceError as exc:
        return exc.reason
    except TypeError as exc:
        return f"The request has a parameter this node does not know: {exc}."


def _error_code(exc: InferenceError) -> str:
    """The code a node's failed generation carries: the run path's own mapping (``busy``,
    ``load_failed``, ``crashed`` …), else inference's code."""
    from opsdash.runs.services import error_code

    return error_code(exc) or exc.code or ""


def run_agent(config: AgentConfig, *, install_signals: bool = True) -> None:
    """Run an agent until SIGTERM / SIGINT (the management command)."""
    import signal

    async def main() -> None:
        agent = Agent(config)
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())
