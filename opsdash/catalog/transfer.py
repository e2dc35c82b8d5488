"""Moving model bytes onto the models disk: copy, download, upload.

Every source writes through one ``PartialWriter`` that hashes in the same pass, watches free
space and turns disk errors into sentences. Large files never sit in memory: data moves in
fixed-size chunks.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.template.defaultfilters import filesizeformat

CHUNK_BYTES = 4 * 1024 * 1024
_FREE_CHECK_EVERY = 64 * 1024 * 1024

Progress = Callable[[int, int | None], None]


class TransferError(Exception):
    """Moving the bytes failed; ``reason`` says why in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


def human_size(n: int) -> str:
    return str(filesizeformat(n)).replace("\xa0", " ")


def check_free_space(folder: Path, *, needed: int, reserve: int) -> None:
    """Refuse up front when ``needed`` bytes would leave less than ``reserve`` free."""
    free = shutil.disk_usage(folder).free
    if free - needed < reserve:
        raise TransferError(
            f"Not enough disk space: the file needs {human_size(needed)} but the models folder has "
            f"{human_size(free)} free and OpsDash keeps {human_size(reserve)} in reserve "
            f"(OPSDASH_MIN_FREE_BYTES). Free some space and try again."
        )


class PartialWriter:
    """Writes a ``.partial`` file, hashing as it goes and stopping before the disk is full."""

    def __init__(self, path: Path, *, reserve: int, progress: Progress | None = None) -> None:
        self.path = path
        self.reserve = reserve
        self.progress = progress
        self.total: int | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._since_check = 0
        self._file: BinaryIO = path.open("wb")

    @property
    def size(self) -> int:
        return self._size

    def restart(self) -> None:
        """Start over from byte zero (a server that ignored our range request)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, chunk: bytes | memoryview) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TransferError(
                    f"The disk holding the models folder ran out of space after "
                    f"{human_size(self._size)} were written. Free some space and install again."
                ) from exc
            raise TransferError(f"Could not write the model file: {exc.strerror}.") from exc
        # hashlib releases the GIL on large buffers, so this overlaps with other threads' work.
        self._hash.update(chunk)
        self._size += len(chunk)
        self._since_check += len(chunk)
        if self._since_check >= _FREE_CHECK_EVERY:
            self._since_check = 0
            free = shutil.disk_usage(self.path.parent).free
            if free < self.reserve:
                raise TransferError(
                    f"The models disk is nearly full ({human_size(free)} free, below the "
                    f"{human_size(self.reserve)} reserve) after {human_size(self._size)} were "
                    f"written. Free some space and install again."
                )
        if self.progress:
            self.progress(self._size, self.total)

    def finish(self) -> Written:
        try:
            self._file.flush()
            self._file.close()
        except OSError as exc:
            raise TransferError(
                f"Could not finish writing the model file: {exc.strerror}."
            ) from exc
        return Written(size=self._size, sha256=self._hash.hexdigest())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def copy_file(source: Path, writer: PartialWriter) -> Written:
    """Copy ``source`` through ``writer`` (hash and copy in one read)."""
    writer.total = source.stat().st_size
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as src:
        while True:
            n = src.readinto(buffer)
            if not n:
                break
            writer.write(view[:n])
    return writer.finish()


def download(url: str, writer: PartialWriter, *, timeout: float, attempts: int) -> Written:
    """Download ``url`` through ``writer``, resuming with a Range request after a drop.

    A 4xx answer stops at once (retrying cannot help); timeouts, resets, 5xx answers and
    connections that close early are retried up to ``attempts`` times in all.
    """
    last_problem = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(min(2 ** (attempt - 2), 8))
        request = urllib.request.Request(url, headers={"User-Agent": "OpsDash model installer"})
        resuming = writer.size > 0
        if resuming:
            request.add_header("Range", f"bytes={writer.size}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if resuming and response.status != 206:
                    writer.restart()  # the server sent the whole file again
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit():
                    writer.total = writer.size + int(length)
                _stream(response, writer)
                if writer.total is not None and writer.size < writer.total:
                    raise http.client.IncompleteRead(b"", writer.total - writer.size)
                return writer.finish()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                raise TransferError(
                    f"The server answered {exc.code} {exc.reason} for {url}. Check the address."
                ) from exc
            last_problem = f"the server answered {exc.code} {exc.reason}"
        except TimeoutError:
            last_problem = f"no data arrived for {timeout:g} seconds"
        except http.client.IncompleteRead:
            last_problem = (
                f"the server closed the connection after {human_size(writer.size)} of "
                f"{human_size(writer.total or 0)}"
            )
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                last_problem = f"no answer within {timeout:g} seconds"
            else:
                last_problem = f"could not connect ({reason})"
        except (ConnectionError, http.client.HTTPException) as exc:
            last_problem = f"the connection failed ({exc.__class__.__name__})"
    raise TransferError(f"Download failed after {attempts} attempts: {last_problem}. ({url})")


def _stream(response: http.client.HTTPResponse, writer: PartialWriter) -> None:
    while True:
        chunk = response.read(CHUNK_BYTES)
        if not chunk:
            return
        writer.write(chunk)
