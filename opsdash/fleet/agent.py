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
model names come from its own index (``agent_store``). Here: the connection and the life
cycle; beside it ``agent_config``, ``agent_node``, ``agent_outbox``, ``agent_generation``,
``agent_placements`` and ``agent_install``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.runtime.supervisor import Supervisor
from opsdash.fleet import protocol
from opsdash.fleet.agent_config import CREDENTIAL_FILE as CREDENTIAL_FILE
from opsdash.fleet.agent_config import AgentConfig as AgentConfig
from opsdash.fleet.agent_config import AgentRefused as AgentRefused
from opsdash.fleet.agent_config import CredentialFile, Redial
from opsdash.fleet.agent_generation import Generations, NodeState
from opsdash.fleet.agent_install import Installer
from opsdash.fleet.agent_node import hello_message, loaded_runners, machine_facts, node_sampler
from opsdash.fleet.agent_outbox import Outbox, send_frame, send_heartbeats
from opsdash.fleet.agent_placements import Placer, is_id
from opsdash.fleet.agent_store import ModelStore

logger = logging.getLogger("opsdash.fleet.agent")

BACKOFF_START_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0
#: How long the agent waits for the hub's answer to its hello.
WELCOME_TIMEOUT_SECONDS = 15.0
#: At a stop: how long generations get to send their last events before the socket closes.
STOP_FLUSH_SECONDS = 2.0
RUNNER_GRACE_SECONDS = 3.0


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
        self._credential_file = CredentialFile(config.data_dir)
        self.credential = self._credential_file.read()
        self._credential_refused = False
        # The hub's word on this node (welcome, status); the generations read it.
        self.status = ""
        self.state = NodeState()
        # Counters tests and logs read.
        self.sessions = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self._ws: Any = None
        self._outbox = Outbox()
        self._welcomed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.generations = Generations(
            name=self.name,
            store=self.store,
            supervisor=self.supervisor,
            state=self.state,
            emit=self._outbox.emit,
            queue_depth=config.queue_depth,
            sampler=lambda: self.sampler,
        )
        self.placer = Placer(
            name=self.name,
            store=self.store,
            supervisor=self.supervisor,
            report=self._report,
            credential=lambda: self.credential,
            http_url=config.http_url,
            trial_load_timeout=config.trial_load_timeout,
        )
        self.installer = Installer(
            name=self.name,
            store=self.store,
            emit=self._outbox.emit,
            model_roots=config.model_roots,
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
        self.state.stopping = True
        self._stopping.set()

    @property
    def events_dropped(self) -> int:
        return self._outbox.dropped

    @property
    def approved(self) -> bool:
        return self.state.approved

    @property
    def draining(self) -> bool:
        return self.state.draining

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
        await self.installer.close()
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
            sampler = node_sampler(
                name=self.name, models_dir=self.config.models_dir, runners=self.loaded_runners
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
            except Redial:
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
                    raise Redial()
                raise AgentRefused(reason, str(answer.get("code") or ""))
            if answer["type"] != protocol.WELCOME:
                raise ValueError(f"the hub answered hello with {answer['type']!r}")
            self._on_welcome(answer)
            self._ws = ws
            sender = asyncio.create_task(self._outbox.send_to(ws), name="agent-outbox")
            beats = asyncio.create_task(
                send_heartbeats(ws, self.loaded_runners), name="agent-heartbeat"
            )
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
        return hello_message(
            name=self.name,
            version=self.config.version,
            facts=await asyncio.to_thread(self.facts),
            store=self.store,
            credential=self.credential if use_credential else "",
            token=self.config.token,
        )

    def facts(self) -> dict[str, Any]:
        """What the hub shows of this machine: CPUs, memory, GPUs (from the sampler's frame)."""
        return machine_facts(self.sampler)

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
        self._outbox.wake()

    # --- the credential -----------------------------------------------------------------------

    @property
    def credential_path(self) -> Path:
        return self._credential_file.path

    def _save_credential(self, credential: str) -> None:
        self._credential_file.save(credential)
        self.credential = credential

    def _forget_credential(self) -> None:
        self._credential_file.forget()
        self.credential = ""

    # --- what goes out ------------------------------------------------------------------------

    async def _send_frame(self, text: str) -> None:
        """The sampler's sink: one frame, or none if the link is down or backed up."""
        ws = self._ws
        if ws is None or self.approved is False:
            return
        if await send_frame(ws, text):
            self.frames_sent += 1
        else:
            self.frames_dropped += 1

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
            self._spawn(self.generations.generate(message))
        elif kind == protocol.CANCEL:
            self.generations.cancel(message.get("request_id"))
        elif kind == protocol.PLACE and isinstance(message.get("placement"), dict):
            self.placer.start_place(message["placement"])
        elif kind == protocol.UNPLACE and is_id(message.get("model_id")):
            self.placer.start_unplace(message["model_id"])
        elif kind == protocol.INSTALL:
            self.installer.start(message)
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
        self.status = self.state.apply(message)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _report(self, model_id: int, status: str, **fields: Any) -> None:
        self._outbox.emit(protocol.PLACEMENT, model_id=model_id, status=status, **fields)

    # --- the node's runners, for heartbeats and the sampler -----------------------------------

    def loaded_runners(self) -> list[Any]:
        """The supervisor's runners with names from the node's index (no catalog: no database).
        Called on the sampler's thread too."""
        return loaded_runners(self.supervisor, self.store)


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
