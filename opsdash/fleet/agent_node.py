"""What an agent tells the hub about its machine: the facts in ``hello`` (CPUs, memory, GPUs)
and the runners it has loaded (heartbeats, and the sampler's per-process attribution).

No ORM: model names and slugs come from the node's own index (``agent_store``), never from
the catalog. ``loaded_runners`` is called on the sampler's thread too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.runtime.supervisor import Supervisor
from opsdash.fleet import protocol
from opsdash.fleet.agent_config import AgentRefused
from opsdash.fleet.agent_store import ModelStore


def machine_facts(sampler: Any) -> dict[str, Any]:
    """What the hub shows of this machine: CPUs, memory, GPUs (from the sampler's frame)."""
    import psutil

    gpus: list[dict[str, Any]] = []
    if sampler is not None:
        frame = sampler.latest(wait=2.0)
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


def loaded_runners(supervisor: Supervisor, store: ModelStore) -> list[Any]:
    """The supervisor's runners as ``LoadedRunner``s, named from the node's index."""
    from opsdash.runs.runtime import LoadedRunner

    out = []
    for s in supervisor.status():
        held = store.get(s.model_id)
        name, slug = (held.name, held.slug) if held else (f"model {s.model_id}", str(s.model_id))
        out.append(LoadedRunner.of(s, name=name, slug=slug))
    return out


def loaded_entry(runner: Any) -> dict[str, Any]:
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


def node_sampler(*, name: str, models_dir: Path, runners: Callable[[], list[Any]]) -> Any:
    """The node's one sampler: ``host`` = the node's name, its runners attributed; it neither
    persists nor reads the catalog (no database on a node)."""
    from opsdash.telemetry.sampler import Sampler

    return Sampler.from_settings(host=name, models_dir=models_dir, persist=False, runners=runners)


def held_models(store: ModelStore) -> list[dict[str, Any]]:
    """What ``hello`` says the node holds: each model's id, sha256, and whether it loaded here."""
    return [
        {"model_id": h.model_id, "sha256": h.sha256, "status": "ready" if h.checked else "held"}
        for h in store.all()
    ]


def hello_message(
    *,
    name: str,
    version: str,
    facts: dict[str, Any],
    store: ModelStore,
    credential: str,
    token: str,
) -> str:
    """The agent's first message: who it is (its saved ``credential``, else its enrollment
    ``token``: ``AgentRefused`` with neither), its machine and what it holds."""
    if not credential and not token:
        raise AgentRefused(
            "This node has no saved credential and no node token: start the agent with "
            "--token (or OPSDASH_NODE_TOKEN), created with `manage.py create_node_token`."
        )
    identity = {"credential": credential} if credential else {"token": token}
    return protocol.encode(
        protocol.HELLO,
        name=name,
        version=version,
        protocol=protocol.PROTOCOL_VERSION,
        facts=facts,
        models=held_models(store),
        **identity,
    )
