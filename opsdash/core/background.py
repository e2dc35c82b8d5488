"""The registry of the web process's background services: what runs beside the requests.

Each app that owns a long-lived thread, pool or process registers it here from its
``AppConfig.ready()``: the model supervisor (runs), the job pools (catalog), the telemetry
sampler. One place then knows them all:

- ``start_all()`` starts each (each also starts itself on first use, so calling it is optional);
- ``stop_all()`` is the lifespan shutdown (``opsdash.asgi``): services stop in the order they
  were registered, which is ``INSTALLED_APPS``' (the job pools, the supervisor, then the sampler,
  so the last runs' energy is still read); a failing one is logged and the rest still stop;
- ``reset_after_fork()`` is for a forked child (the test live server): threads do not survive a
  fork, so each service forgets what the parent had started and starts afresh on first use.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opsdash.core.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackgroundService:
    """One service: ``start`` is idempotent, ``stop`` may be a coroutine function.

    ``at_startup`` services are started by the server's lifespan startup (``start_at_startup``)
    rather than on first use: work nobody asks for, such as a fleet hub's health sweep.
    """

    name: str
    start: Callable[[], object]
    stop: Callable[[], Awaitable[object] | object]
    reset_after_fork: Callable[[], object]
    at_startup: bool = False


services: Registry[BackgroundService] = Registry("background services")


def register(
    name: str,
    *,
    start: Callable[[], object],
    stop: Callable[[], Awaitable[object] | object],
    reset_after_fork: Callable[[], object],
    at_startup: bool = False,
) -> BackgroundService:
    """Add the service called ``name`` (once: registering a name again replaces it)."""
    for existing in services.entries():
        if existing.name == name:
            services.unregister(existing)
    return services.register(
        BackgroundService(name, start, stop, reset_after_fork, at_startup=at_startup)
    )


def names() -> list[str]:
    return [service.name for service in services.entries()]


def start_all() -> None:
    for service in services.entries():
        service.start()


def start_at_startup() -> None:
    """Start the services registered ``at_startup`` (the server's lifespan startup)."""
    for service in services.entries():
        if service.at_startup:
            service.start()


async def stop_all() -> None:
    """Stop every service in registration order; a failure is logged, the others still stop."""
    for service in services.entries():
        try:
            result = service.stop()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("stopping the background service %s failed", service.name)


def reset_after_fork() -> None:
    """In a forked child: every service forgets the parent's threads and starts afresh."""
    for service in services.entries():
        service.reset_after_fork()
