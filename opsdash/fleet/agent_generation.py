"""An agent's generations: ``generate`` from the hub run on the node's own supervisor, their
events queued for the hub in order (``emit``), ``cancel`` stopping one within a token.

Refusals come *before* ``accepted`` (stopping, not approved, draining, a model the node does
not hold, a bad request, a full queue), so the hub sends the request to another node.

The ``done`` event carries the energy the node found for the generation (``energy_joules``,
``energy_source``, ``energy_basis``, ``energy_devices``), computed here exactly as the
embedded mode prices a run (``opsdash.savings.energy.run_energy_figures``): the node's own
sampler's energy record over the generation's time window and its runner's devices, shared
by overlap with the node's other generations; without counters, the CPU-time estimate with
this node's settings. The hub prices the run from it (``Run.node_energy``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.backends.base import GenerationParams
from inference.errors import InferenceError
from inference.runtime.protocol import GenerateRequest, Priority
from inference.runtime.supervisor import Supervisor
from opsdash.fleet import protocol
from opsdash.fleet.agent_placements import held_for
from opsdash.fleet.agent_store import ModelStore
from opsdash.savings.energy import KEEP_SECONDS, EnergyFigures, Span, run_energy_figures

logger = logging.getLogger("opsdash.fleet.agent")

#: ``emit(message_type, terminal=..., **fields)``: queue a message for the hub.
Emit = Callable[..., None]


class NodeState:
    """What the generations ask of their agent, read when a request arrives."""

    def __init__(self) -> None:
        self.approved = False
        self.draining = False
        self.stopping = False

    def apply(self, message: Mapping[str, Any]) -> str:
        """The hub's ``welcome`` or ``status`` (approved, draining); its status."""
        status = str(message.get("status") or "")
        approved = message.get("approved")
        self.approved = bool(approved) if approved is not None else status not in ("", "pending")
        draining = message.get("draining")
        self.draining = bool(draining) if draining is not None else status == "draining"
        return status


class EnergySpans:
    """The node's recent generations, for sharing a device's energy by overlap: those that
    ended measured (their span and devices, for ``KEEP_SECONDS``) and those still running.
    Changed on the agent's loop only; ``snapshot`` is taken there too."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}
        self.finished: list[Span] = []

    def snapshot(self, request_id: str) -> Callable[[frozenset[str]], list[Span]]:
        """The other generations as ``run_energy_figures`` asks for them (``others``)."""
        now = time.time()
        self.finished = [s for s in self.finished if s.end >= now - KEEP_SECONDS]
        finished = list(self.finished)
        running = [t for rid, t in self.running.items() if rid != request_id]

        def others(devices: frozenset[str]) -> list[Span]:
            # Generations still running share the device too; their devices are not known
            # yet, so they are taken to share this one's (as the embedded ledger does).
            return finished + [Span(t, now, devices) for t in running]

        return others


@dataclass(eq=False, kw_only=True)
class Generations:
    name: str
    store: ModelStore
    supervisor: Supervisor
    state: NodeState
    emit: Emit
    queue_depth: int
    sampler: Callable[[], Any]
    cancels: dict[str, asyncio.Event] = field(default_factory=dict, init=False)
    #: The interactive generations under way, request id → model id: what the queue limit
    #: counts (batch ones wait for idle capacity and are bounded by their sender).
    interactive: dict[str, int] = field(default_factory=dict, init=False)
    spans: EnergySpans = field(default_factory=EnergySpans, init=False)

    def cancel(self, request_id: object) -> None:
        cancel = self.cancels.get(str(request_id))
        if cancel is not None:
            cancel.set()

    async def generate(self, message: Mapping[str, Any]) -> None:
        request_id, reply_to = message.get("request_id"), message.get("reply_to")
        if not isinstance(request_id, str) or not isinstance(reply_to, str):
            logger.warning("a generate message without request_id or reply_to was ignored")
            return

        def emit(event: dict[str, Any], *, terminal: bool = True) -> None:
            self.emit(
                protocol.EVENT,
                terminal=terminal,
                request_id=request_id,
                reply_to=reply_to,
                event=event,
            )

        refusal = self.refusal(message)
        if refusal is not None:
            emit({"type": "error", "code": refusal[0], "reason": refusal[1]})
            return
        held, request = held_for(self.store, message["model"]), parse_request(message["request"])
        assert held is not None and not isinstance(request, str)
        priority = parse_priority(message["request"])
        assert priority is not None
        emit({"type": "accepted", "node": self.name})
        cancel = asyncio.Event()
        self.cancels[request_id] = cancel
        if priority == "interactive":
            self.interactive[request_id] = held.model_id
        started = time.time()
        self.spans.running[request_id] = started
        try:
            events = self.supervisor.generate(
                held.spec(message["model"]), request, cancel_event=cancel, priority=priority
            )
            async for event in events:
                if event["type"] == "done":
                    done = dict(event)
                    done.update(await self.energy_fields(request_id, started, time.time(), done))
                    emit(done)
                else:
                    emit(dict(event), terminal=event["type"] != "token")
        except InferenceError as exc:
            emit({"type": "error", "code": error_code(exc), "reason": exc.reason})
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
            self.cancels.pop(request_id, None)
            self.interactive.pop(request_id, None)
            self.spans.running.pop(request_id, None)

    def refusal(self, message: Mapping[str, Any]) -> tuple[str, str] | None:
        """Why this node will not start the generation (code, sentence), or None."""
        if self.state.stopping:
            return "shutting_down", f"Node {self.name} is stopping."
        if not self.state.approved:
            return "not_approved", f"Node {self.name} is waiting for an admin's approval."
        if self.state.draining:
            return "draining", f"Node {self.name} is draining: it takes no new requests."
        model = message.get("model")
        held = held_for(self.store, model) if isinstance(model, dict) else None
        if held is None:
            label = model.get("name") if isinstance(model, dict) else None
            return (
                "model_not_loaded",
                f"Node {self.name} does not hold the model “{label or model}”; deploy it there.",
            )
        request = parse_request(message.get("request"))
        if isinstance(request, str):
            return "invalid_param", request
        priority = parse_priority(message.get("request"))
        if priority is None:
            return "invalid_param", "The request's priority must be “interactive” or “batch”."
        if priority == "batch":
            return None  # batch work waits for idle capacity; the queue limit is interactive's
        queued = sum(1 for m in self.interactive.values() if m == held.model_id)
        # As the supervisor counts (it would answer busy after ``accepted``, too late to try
        # another node): interactive requests waiting beyond those the runner decodes at once.
        loaded = [s for s in self.supervisor.status() if s.model_id == held.model_id]
        parallel = loaded[0].parallel_sequences if loaded else held.spec(model).parallel_sequences
        if queued >= self.queue_depth + max(parallel, 1):
            return (
                protocol.NODE_BUSY,
                f"“{held.name}” already has {queued} requests on node {self.name}, its limit.",
            )
        return None

    async def energy_fields(
        self, request_id: str, started: float, ended: float, done: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The done event's energy fields for a generation that ran from ``started`` to
        ``ended`` (epoch seconds); {} if they cannot be worked out (the hub then estimates)."""
        others = self.spans.snapshot(request_id)
        try:
            figures = await asyncio.to_thread(self._figures, started, ended, done, others)
        except Exception:
            logger.exception("the energy of generation %s could not be worked out", request_id)
            return {}
        if figures.source == "measured":
            self.spans.finished.append(Span(started, ended, frozenset(figures.devices)))
        return {
            # mJ / 1000: the hub's round(joules × 1000) gives back the very same millijoules.
            "energy_joules": figures.energy_mj / 1000,
            "energy_source": figures.source,
            "energy_basis": figures.basis,
            "energy_devices": figures.devices,
        }

    def _figures(
        self,
        started: float,
        ended: float,
        done: Mapping[str, Any],
        others: Callable[[frozenset[str]], list[Span]],
    ) -> EnergyFigures:
        """On a worker thread: a counter reading now (NVML, RAPL), then the same arithmetic as
        the embedded mode's pricing."""
        from opsdash.telemetry.energy import HostEnergy

        sampler, meter = self.sampler(), None
        if sampler is not None and hasattr(sampler, "record_energy"):
            sampler.record_energy()
            if sampler.energy.devices:
                meter = HostEnergy(sampler.energy)
        pid = done.get("pid")
        total_ms = done.get("total_ms")
        cpu_seconds = done.get("cpu_seconds")
        return run_energy_figures(
            meter,
            pid=pid if isinstance(pid, int) else None,
            start=started,
            end=ended,
            others=others,
            cpu_seconds=float(cpu_seconds) if isinstance(cpu_seconds, int | float) else None,
            duration_seconds=total_ms / 1000 if isinstance(total_ms, int | float) else None,
        )


def parse_request(raw: object) -> GenerateRequest | str:
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


def parse_priority(raw: object) -> Priority | None:
    """The request's priority ("interactive" when the hub sent none), or None when it is
    neither of the two."""
    value = raw.get("priority", "interactive") if isinstance(raw, dict) else "interactive"
    if value == "interactive" or value is None:
        return "interactive"
    return "batch" if value == "batch" else None


def error_code(exc: InferenceError) -> str:
    """The code a node's failed generation carries: the run path's own mapping (``busy``,
    ``load_failed``, ``crashed`` …), else inference's code."""
    from opsdash.runs.services import error_code as run_error_code

    return run_error_code(exc) or exc.code or ""
