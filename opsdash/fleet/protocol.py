"""The agent link: what an agent and the hub say to each other over ``/ws/agent/``.

Framework-free (no Django import), so the agent, the hub's consumer, tests and the benchmark all
build and read messages through this one module. Every message is one JSON object with a
``type``; requests and their events carry a ``request_id`` (and the hub's ``reply_to`` channel)
so one socket multiplexes heartbeats, telemetry, placement jobs and many generations.

Why one outbound WebSocket per node (the pattern of Beszel and GPUStack's workers): a node needs
no inbound port and holds no database or Redis credential; any hub process can take the socket,
and the process holding it joins the channel-layer group ``node_group(name)``, so a request that
arrives at another hub process reaches the node through Redis. Events name the ``reply_to``
channel of the hub process that asked, so after a hub restart an agent that reconnects to
another process still delivers the rest of a generation to whoever is waiting for it.

Agent → hub
  hello       {name, version, facts: {cpu_count, memory_total_bytes, gpus}, token? | credential?,
               models: [{model_id, sha256, status}]}  first message; a token enrolls, a
               credential (given once in ``welcome``) identifies a known node
  heartbeat   {loaded: [{model, name, slug, queue_length, state}…], queue_length}  every
               HEARTBEAT_SECONDS
  frame       <telemetry frame>  the node's sampler, every tick (host = node name): the frame
               itself, whose own ``type`` is ``frame``, as the sampler serialized it (the hub
               passes it on unparsed); a ``{frame: <telemetry frame>}`` wrapper is read too
  event       {request_id, reply_to, event: <token event>}  one event of a generation:
               {"type": "accepted", "node"} first, then {"type": "token", "text"}…, then
               {"type": "done", …usage} or {"type": "error", "code", "reason"}. ``done``
               carries the local supervisor's usage and timings, and may carry the energy
               the node found for the run: ``energy_joules``, ``energy_source``
               ("measured" | "estimated"), ``energy_basis``, ``energy_devices``; without them
               the hub estimates it from ``cpu_seconds`` (``opsdash.savings``). An error
               *before* ``accepted`` means the node did not start it (codes ``not_approved``,
               ``draining``, ``model_not_loaded``, ``invalid_param``, ``busy``,
               ``shutting_down``): the hub may send it to another node. The hub relays each
               as ``{"type": "agent.event", "request_id", "node", "event"}`` to ``reply_to``.
  placement   {model_id, status, error?, bytes_done?}  progress of a placement job: status
               fetching, loading, ready or failed (with error); ``removed`` (PLACEMENT_REMOVED)
               once it has deleted its copy, after ``unplace`` or because ``welcome`` no
               longer lists the model
  installed   {model_id, status: ready | failed, error, metadata}  the end of an ``install``:
               ``metadata`` is the file's (``ModelMetadata.as_dict()``: format, architecture,
               parameter_count, quantization, context_length, size_bytes, …) plus sha256,
               backend, backend_reason, trial_seconds, trial_sample and path (on the node);
               ``error`` a sentence when failed. Progress before it goes as ``placement``
               messages (fetching with bytes_done, loading) for the model's placement

hello also carries ``protocol`` (PROTOCOL_VERSION). While no hub holds its socket an agent
keeps generating and queues its ``event`` and ``placement`` messages (bounded), sending them in
order after the next ``welcome``; heartbeats and frames are not queued.

Hub → agent
  welcome     {node, status, approved, draining, credential?, placements: [PlacementSpec…]}
               answer to hello
  refused     {reason, code}  then the hub closes with CLOSE_REFUSED; the agent stops (a
               refused credential with a token at hand: it enrolls again with the token). Also
               sent when no hello arrives within the consumer's HELLO_TIMEOUT_SECONDS.
  status      {status, approved, draining}  approved, drained, resumed; ``status``
               ``deleted`` when an admin removed the node (its credential is gone)
  place       {placement: PlacementSpec}  fetch (unless present), check, trial-load
  unplace     {model_id}  unload and delete the node's copy
  install     {model_id, source: "path" | "url", path? | url?, sha256?, name, slug,
               model_type?}  install a model from the node's own disk (inside its
               OPSDASH_MODEL_ROOTS) or a URL it downloads, with the hub's install pipeline;
               answered by ``installed``. The file then exists only on that node
  generate    {request_id, reply_to, model: PlacementSpec, request: {prompt?, messages?,
               params, priority?}}  priority "interactive" (default) or "batch"
  cancel      {request_id}

A PlacementSpec is ``{model_id, sha256, name, slug, backend, model_type, size_bytes,
file_url, parallel_sequences, estimated_bytes}``; ``file_url`` is the hub path the agent
fetches the file from (``Range`` resumes), authenticated by its node credential
(``Authorization: Bearer <credential>``); ``parallel_sequences`` and ``estimated_bytes`` how
the agent loads it (``opsdash.runs.capacity``); the agent keeps
every model in ``welcome``'s list and deletes (reporting ``removed``) any copy that is not in it.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
AGENT_PATH = "/ws/agent/"

#: How often an agent sends a heartbeat (a frame also counts as one on the hub).
HEARTBEAT_SECONDS = 2.0
#: How long a hub waits for a node's ``accepted`` before it tries another node.
ACCEPT_TIMEOUT_SECONDS = 5.0

#: Close codes (4000–4999 are the application's): the agent stops on REFUSED, and reconnects
#: with backoff on anything else.
CLOSE_REFUSED = 4401
CLOSE_REPLACED = 4409  # another connection took over this node's identity

# Agent → hub
HELLO = "hello"
HEARTBEAT = "heartbeat"
FRAME = "frame"
EVENT = "event"
PLACEMENT = "placement"
INSTALLED = "installed"
# Hub → agent
WELCOME = "welcome"
REFUSED = "refused"
STATUS = "status"
PLACE = "place"
UNPLACE = "unplace"
INSTALL = "install"
GENERATE = "generate"
CANCEL = "cancel"

#: Error codes a generation may end with on the node, besides inference's own.
NODE_LOST = "node_lost"
NODE_BUSY = "busy"

#: The ``placement`` status an agent reports once its copy of a model is gone.
PLACEMENT_REMOVED = "removed"


def node_group(name: str) -> str:
    """The channel-layer group of the hub process holding node ``name``'s socket."""
    return f"fleet.node.{name}"


def encode(message_type: str, **fields: Any) -> str:
    return json.dumps({"type": message_type, **fields}, separators=(",", ":"))


def decode(text: str) -> dict[str, Any]:
    """One message; ``ValueError`` for anything that is not a JSON object with a string type."""
    message = json.loads(text)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("An agent-link message is a JSON object with a string `type`.")
    return message
