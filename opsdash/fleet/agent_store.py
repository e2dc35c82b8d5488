"""An agent's models on its own disk: what it holds (a JSON index), and fetching a file from
the hub.

The agent has no database (it holds no credential for one), so what it holds is a small JSON
index in its data folder, ``node-models.json``, written atomically: model id → file, sha256,
names, backend. The files live in its own ``OPSDASH_MODELS_DIR``.

Fetching (``fetch_file``) is plain HTTP from the hub, authenticated by the node credential as
a Bearer token, into ``<models>/.partial/<sha256>``: a broken transfer resumes with ``Range``
from the bytes already there, the bytes are hashed as they are written (the partial part
once more on a resume), and only a file whose sha256 is the one asked for is renamed into
place. Blocking by design: the agent runs it on a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inference.runtime.protocol import ModelSpec

logger = logging.getLogger(__name__)

INDEX_NAME = "node-models.json"
PARTIAL_DIR = ".partial"
CHUNK_BYTES = 1024 * 1024
#: Which file extension a backend's files get on the node (llama.cpp reads GGUF).
SUFFIXES = {"llama_cpp": ".gguf"}


@dataclass(frozen=True)
class HeldModel:
    """One model file this node holds."""

    model_id: int
    sha256: str
    path: str
    name: str
    slug: str
    backend: str
    model_type: str = ""
    size_bytes: int = 0
    #: Trial-loaded on this node once (a placement is reported ready without loading again).
    checked: bool = False

    def spec(self, placement: Mapping[str, Any] | None = None) -> ModelSpec:
        """How to load this copy; ``placement`` (the hub's PlacementSpec, sent with every
        ``place`` and ``generate``) says how many sequences to decode together and the memory
        that takes. A hub that predates them (or a value out of range) gets one at a time.

        Read from the hub's message each time rather than kept in the index, so a hub whose
        settings changed is followed without fetching the file again."""
        placement = placement or {}
        n = placement.get("parallel_sequences")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
            n = 1
        estimated = placement.get("estimated_bytes")
        if isinstance(estimated, bool) or not isinstance(estimated, int) or estimated <= 0:
            estimated = self.size_bytes or 0
        return ModelSpec(
            model_id=self.model_id,
            path=self.path,
            backend=self.backend,
            model_type=self.model_type or None,
            estimated_bytes=estimated,
            parallel_sequences=n,
        )


class ModelStore:
    """The index of the node's models. Used from the agent's event loop and its fetch threads,
    hence the lock."""

    def __init__(self, *, models_dir: Path, data_dir: Path) -> None:
        self.models_dir = models_dir
        self.index_path = data_dir / INDEX_NAME
        self._lock = threading.Lock()
        self._held: dict[int, HeldModel] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning(
                "The model index %s is unreadable (%s); starting empty.", self.index_path, exc
            )
            return
        for item in raw.get("models", []) if isinstance(raw, dict) else []:
            try:
                held = HeldModel(**item)
            except TypeError:
                continue
            if Path(held.path).is_file():  # a file deleted by hand is simply not held
                self._held[held.model_id] = held

    def _save(self) -> None:
        data = {
            "models": [asdict(h) for h in sorted(self._held.values(), key=lambda h: h.model_id)]
        }
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.index_path)

    def get(self, model_id: int) -> HeldModel | None:
        with self._lock:
            held = self._held.get(model_id)
        if held is not None and not Path(held.path).is_file():
            return None
        return held

    def by_sha256(self, sha256: str) -> HeldModel | None:
        with self._lock:
            found = [h for h in self._held.values() if h.sha256 == sha256]
        return next((h for h in found if Path(h.path).is_file()), None)

    def all(self) -> list[HeldModel]:
        with self._lock:
            return sorted(self._held.values(), key=lambda h: h.model_id)

    def add(self, held: HeldModel) -> None:
        with self._lock:
            self._held[held.model_id] = held
            self._save()

    def remove(self, model_id: int) -> HeldModel | None:
        """Forget the model and delete its file, unless another entry shares the file."""
        with self._lock:
            held = self._held.pop(model_id, None)
            if held is None:
                return None
            self._save()
            shared = any(h.path == held.path for h in self._held.values())
        if not shared:
            with contextlib.suppress(FileNotFoundError):
                Path(held.path).unlink()
        return held

    def final_path(self, *, sha256: str, slug: str, backend: str) -> Path:
        safe = "".join(c for c in slug if c.isalnum() or c in "-_")[:60] or "model"
        return self.models_dir / f"{safe}-{sha256[:12]}{SUFFIXES.get(backend, '.bin')}"

    def partial_path(self, sha256: str) -> Path:
        return self.models_dir / PARTIAL_DIR / sha256


class FetchFailed(Exception):
    """The file could not be fetched; ``reason`` is a sentence for the placement's error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fetch_file(
    *,
    url: str,
    credential: str,
    sha256: str,
    partial: Path,
    final: Path,
    progress: Callable[[int], None] | None = None,
    attempts: int = 4,
    timeout: float = 30.0,
    stop: threading.Event | None = None,
    retry_seconds: float = 0.5,
) -> int:
    """Fetch ``url`` into ``partial`` (resuming what is there), check its sha256, rename it to
    ``final``; the number of bytes. Raises ``FetchFailed`` with a sentence: the hub refused
    (401, 404), every attempt broke, or the bytes are not the file asked for (the partial is
    deleted then, so the next try starts clean)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(attempts):
        if stop is not None and stop.is_set():
            raise FetchFailed("The agent stopped while fetching the file.")
        if attempt:
            time.sleep(retry_seconds * attempt)
        try:
            done, hasher = _fetch_once(url, credential, partial, progress, timeout, stop)
            break
        except _Retry as exc:
            last_error = str(exc)
            logger.info("fetching %s broke (%s); resuming", url, last_error)
    else:
        raise FetchFailed(
            f"Could not fetch the model file from the hub after {attempts} attempts: {last_error}."
        )
    digest = hasher.hexdigest()
    if digest != sha256:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise FetchFailed(
            f"The file fetched from the hub has sha256 {digest}, not the expected {sha256}; "
            f"it was deleted. Check the model's file on the hub and deploy it again."
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    return done


class _Retry(Exception):
    """A transfer that broke in a way worth resuming."""


def _fetch_once(
    url: str,
    credential: str,
    partial: Path,
    progress: Callable[[int], None] | None,
    timeout: float,
    stop: threading.Event | None,
) -> tuple[int, Any]:
    have = partial.stat().st_size if partial.exists() else 0
    hasher = hashlib.sha256()
    headers = {"Authorization": f"Bearer {credential}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the hub's URL)
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 416:  # asked past the end: what is there is wrong, start over
            partial.unlink(missing_ok=True)
            raise _Retry("the hub refused the resume range") from exc
        if exc.code in (401, 403):
            raise FetchFailed(
                f"The hub refused this node's credential for the model file ({exc.code}"
                f"{': ' + detail if detail else ''})."
            ) from exc
        if exc.code == 404:
            raise FetchFailed(
                f"The hub has no such model file ({detail or url}); it may have been deleted."
            ) from exc
        raise _Retry(f"the hub answered {exc.code}{': ' + detail if detail else ''}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(str(getattr(exc, "reason", exc)) or type(exc).__name__) from exc
    with response:
        if have and response.status == 206:
            mode = "ab"
            with partial.open("rb") as existing:
                while chunk := existing.read(CHUNK_BYTES):
                    hasher.update(chunk)
        else:  # 200: the hub sent the whole file (it ignored or lacks the range)
            mode, have = "wb", 0
        try:
            with partial.open(mode) as out:
                while True:
                    if stop is not None and stop.is_set():
                        raise FetchFailed("The agent stopped while fetching the file.")
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.errno is not None and exc.errno == 28:
                raise FetchFailed(f"The node's models disk is full ({partial.parent}).") from exc
            raise _Retry(str(exc) or type(exc).__name__) from exc
        expected = response.headers.get("Content-Length")
        if response.status == 206:
            total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and have < int(total):
                raise _Retry(f"the transfer ended at {have} of {total} bytes")
        elif expected is not None and expected.isdigit() and have < int(expected):
            raise _Retry(f"the transfer ended at {have} of {expected} bytes")
    return have, hasher


def _detail(exc: urllib.error.HTTPError) -> str:
    """The hub's sentence from an error answer (``{"detail": ...}``), if it sent one."""
    try:
        body = exc.read(4096)
        data = json.loads(body)
    except (OSError, ValueError):
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail.strip() if isinstance(detail, str) else ""
