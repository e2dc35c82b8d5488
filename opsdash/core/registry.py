"""A typed list of extensions one app calls and other apps fill in their ``AppConfig.ready()``.

The app that calls the extensions owns the registry (``opsdash.runs.finalizers``,
``opsdash.catalog.hooks``, ``opsdash.telemetry.collectors``) and says, next to it, what happens
when one of them fails. Unlike the dotted-path settings these replace, a registration is a
plain import mypy checks, and a test swaps the entries with ``override`` (no cache to clear).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries in registration order; registering the same entry twice keeps one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: list[T] = []

    def register(self, entry: T) -> T:
        """Add ``entry`` (returned, so this works as a decorator)."""
        if entry not in self._entries:
            self._entries.append(entry)
        return entry

    def unregister(self, entry: T) -> None:
        if entry in self._entries:
            self._entries.remove(entry)

    def entries(self) -> tuple[T, ...]:
        return tuple(self._entries)

    @contextmanager
    def override(self, *entries: T) -> Iterator[None]:
        """Exactly ``entries`` inside the block, what was registered before after it."""
        saved, self._entries = self._entries, list(entries)
        try:
            yield
        finally:
            self._entries = saved

    def __repr__(self) -> str:
        return f"<Registry {self.name}: {len(self._entries)} entries>"
