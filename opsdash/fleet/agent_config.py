"""What one agent is configured with (``AgentConfig``), and the node credential it keeps.

The hub gives a node its credential once, in ``welcome`` after enrolling with a token; the
agent keeps it in ``<OPSDASH_DATA_DIR>/node-credential``, readable by its user only (mode
0600), and presents it on every later hello. No ORM here (the agent has no database).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from opsdash.fleet import protocol
from opsdash.fleet.models import NODE_NAME_PATTERN

CREDENTIAL_FILE = "node-credential"


@dataclass(frozen=True)
class AgentConfig:
    """What one agent needs; ``from_settings`` reads ``OPSDASH_HUB_URL``, ``OPSDASH_NODE_TOKEN``,
    ``OPSDASH_NODE_NAME``, the node's own data and models folders and ``OPSDASH_MODEL_ROOTS``
    (the folders an ``install`` from a path on this node may read; none: refused)."""

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
    model_roots: tuple[Path, ...] = field(default=())

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
            model_roots=tuple(Path(p) for p in settings.MODEL_ROOTS),
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


class AgentRefused(Exception):
    """The hub refused this node for good (a bad token, a name taken): ``reason`` says why."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Redial(Exception):
    """End this connection and dial again now (a refused credential, with a token to try)."""


class CredentialFile:
    """The node's credential on disk (``<data>/node-credential``, mode 0600)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CREDENTIAL_FILE

    def read(self) -> str:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""

    def save(self, credential: str) -> None:
        """Kept readable by this user only: it is the node's identity (written atomically)."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(credential + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
