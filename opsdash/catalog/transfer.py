"""Moving model bytes onto the models disk: copy, download, upload.

Every source writes through one ``PartialWriter`` that hashes in the same pass, watches free
space and turns disk errors into sentences. Large files never sit in memory: data moves in
fixed-size chunks. A ``Guard`` bounds a transfer between chunks: an overall deadline, a minimum
rate over a sliding window, and cancellation from another thread or process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.template.defaultfilters import filesizeformat

from opsdash.core.errors import Code, Refusal

CHUNK_BYTES = 4 * 1024 * 1024
_FREE_CHECK_EVERY = 64 * 1024 * 1024

Progress = Callable[[int, int | None], None]


class TransferError(Refusal):
    """Moving the bytes failed; ``reason`` says why in words a person can act on."""

    default_code = Code.UNAVAILABLE


class TransferCancelled(TransferError):
    """Someone cancelled the transfer; ``reason`` says who."""


class Guard:
    """Limits one transfer, checked between chunks by ``check(done)``.

    ``deadline_seconds`` bounds the whole transfer (0: none). ``min_bytes_per_second`` must be
    reached over every ``window_seconds`` once the first window has passed (0: no minimum), so
    a server that dribbles a byte now and then fails instead of holding a worker for days.
    ``cancelled`` is asked at most every ``poll_seconds`` and returns a reason once someone
    cancelled (it may read the database, so another process can cancel); ``interrupt`` does
    the same from a thread of this process and also unblocks a read waiting on the network.
    """

    def __init__(
        self,
        *,
        source: str,
        deadline_seconds: float = 0,
        min_bytes_per_second: int = 0,
        window_seconds: float = 60,
        cancelled: Callable[[], str | None] | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.source = source
        self.deadline_seconds = deadline_seconds
        self.min_bytes_per_second = min_bytes_per_second
        self.window_seconds = window_seconds
        self._cancelled = cancelled
        self._poll_seconds = poll_seconds
        self._started = time.monotonic()
        self._last_poll = float("-inf")
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._reason: str | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        if not self.deadline_seconds:
            return None
        return max(0.0, self.deadline_seconds - (time.monotonic() - self._started))

    def interrupt(self, reason: str) -> None:
        """Cancel from another thread: the next check raises, a blocked read returns now."""
        with self._lock:
            self._reason = reason
            self._wake.set()
            if self._socket is not None:
                _shut_down(self._socket)

    def attach(self, fileno: int | None) -> None:
        """The socket a blocked read waits on (None: none now); ``interrupt`` shuts it down.

        The guard keeps its own duplicate of the descriptor while attached: the response may
        close its own at the end of the body, and a number closed and reused by another thread
        must never be shut down by mistake.
        """
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            if fileno is None:
                return
            try:
                self._socket = socket.socket(fileno=os.dup(fileno))
            except OSError:
                return  # not a socket we can reach: cancelling waits for the next chunk
            if self._reason is not None:
                _shut_down(self._socket)

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (never past the deadline), waking at once on ``interrupt``."""
        remaining = self.remaining()
        self._wake.wait(seconds if remaining is None else min(seconds, remaining))
        self.check_cancelled()

    def cancel_reason(self) -> str | None:
        """Who cancelled, once someone did; polls ``cancelled`` at most every ``poll_seconds``."""
        if self._reason is None and self._cancelled is not None:
            now = time.monotonic()
            if now - self._last_poll >= self._poll_seconds:
                self._last_poll = now
                self._reason = self._cancelled()
        return self._reason

    def check_cancelled(self) -> None:
        reason = self.cancel_reason()
        if reason is not None:
            raise TransferCancelled(reason)

    def check(self, done: int) -> None:
        """Raise when the transfer was cancelled, ran past its deadline or is too slow."""
        self.check_cancelled()
        now = time.monotonic()
        elapsed = now - self._started
        if self.deadline_seconds and elapsed > self.deadline_seconds:
            raise TransferError(
                f"The download from {self.source} did not finish within "
                f"{_seconds(self.deadline_seconds)} (OPSDASH_DOWNLOAD_DEADLINE_SECONDS): "
                f"{human_size(done)} arrived. Try again from a faster source, or raise the limit."
            )
        if not self.min_bytes_per_second:
            return
        samples = self._samples
        if now - samples[-1][0] >= 0.25:  # bounded: about four samples a second per window
            samples.append((now, done))
        # The baseline is the newest sample at least one window old; older ones are not needed.
        while len(samples) > 1 and now - samples[1][0] >= self.window_seconds:
            samples.popleft()
        since, then = samples[0]
        span = now - since
        if span < self.window_seconds:
            return
        sent = done - then
        if sent < self.min_bytes_per_second * span:
            raise TransferError(
                f"The download from {self.source} sent {sent:,} bytes in the last "
                f"{_seconds(span)}, below the minimum of {human_size(self.min_bytes_per_second)} "
                f"per second (OPSDASH_DOWNLOAD_MIN_BYTES_PER_SECOND). The server is too slow or "
                f"stalled; try again later or from another source."
            )


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s".replace(".0 s", " s")


def _shut_down(sock: socket.socket) -> None:
    # shutdown() acts on the connection, so doing it through a duplicate descriptor wakes the
    # thread blocked reading the original one, which close() from another thread would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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

    def _disk_full(self) -> TransferError:
        return TransferError(
            f"The disk holding the models folder ran out of space after "
            f"{human_size(self._size)} were written. Free some space and install again."
        )

    def write(self, chunk: bytes | memoryview) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full() from exc
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
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full() from exc
            raise TransferError(
                f"Could not finish writing the model file: {exc.strerror}."
            ) from exc
        return Written(size=self._size, sha256=self._hash.hexdigest())

    def close(self) -> None:
        if not self._file.closed:
            # A buffered tail that cannot be written does not matter: the caller removes the file.
            with contextlib.suppress(OSError):
                self._file.close()


def copy_file(source: Path, writer: PartialWriter, *, guard: Guard | None = None) -> Written:
    """Copy ``source`` through ``writer`` (hash and copy in one read)."""
    writer.total = source.stat().st_size
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as src:
        while True:
            if guard is not None:
                guard.check_cancelled()
            n = src.readinto(buffer)
            if not n:
                break
            writer.write(view[:n])
    return writer.finish()


def download(
    url: str,
    writer: PartialWriter,
    *,
    timeout: float,
    attempts: int,
    guard: Guard | None = None,
) -> Written:
    """Download ``url`` through ``writer``, resuming with a Range request after a drop.

    A 4xx answer stops at once (retrying cannot help); timeouts, resets, 5xx answers and
    connections that close early are retried up to ``attempts`` times in all. ``timeout`` is
    how long one read may wait for data; ``guard`` bounds the whole download (deadline, minimum
    rate, cancellation) and is never retried past.
    """
    guard = guard or Guard(source=url)
    last_problem = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            guard.wait(min(2 ** (attempt - 2), 8))
        guard.check(writer.size)
        request = urllib.request.Request(url, headers={"User-Agent": "OpsDash model installer"})
        resuming = writer.size > 0
        if resuming:
            request.add_header("Range", f"bytes={writer.size}-")
        # A read never waits past the deadline, so a silent server cannot stretch it.
        remaining = guard.remaining()
        wait = timeout if remaining is None else max(0.1, min(timeout, remaining + 0.1))
        try:
            with urllib.request.urlopen(request, timeout=wait) as response:
                guard.attach(response.fileno())
                try:
                    if resuming and response.status != 206:
                        writer.restart()  # the server sent the whole file again
                    length = response.headers.get("Content-Length")
                    if length is not None and length.isdigit():
                        writer.total = writer.size + int(length)
                    _stream(response, writer, guard)
                finally:
                    guard.attach(None)
                if writer.total is not None and writer.size < writer.total:
                    raise http.client.IncompleteRead(b"", writer.total - writer.size)
                return writer.finish()
        except TransferError:
            raise
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                raise TransferError(
                    f"The server answered {exc.code} {exc.reason} for {url}. Check the address."
                ) from exc
            last_problem = f"the server answered {exc.code} {exc.reason}"
        except TimeoutError:
            guard.check(writer.size)  # the deadline, not the server, may have ended the wait
            last_problem = f"no data arrived for {wait:g} seconds"
        except http.client.IncompleteRead:
            guard.check_cancelled()  # an interrupt shuts the socket, which reads as a short body
            last_problem = (
                f"the server closed the connection after {human_size(writer.size)} of "
                f"{human_size(writer.total or 0)}"
            )
        except urllib.error.URLError as exc:
            guard.check(writer.size)
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                last_problem = f"no answer within {wait:g} seconds"
            else:
                last_problem = f"could not connect ({reason})"
        except (OSError, http.client.HTTPException) as exc:
            guard.check_cancelled()
            last_problem = f"the connection failed ({exc.__class__.__name__})"
    raise TransferError(f"Download failed after {attempts} attempts: {last_problem}. ({url})")


def _stream(response: http.client.HTTPResponse, writer: PartialWriter, guard: Guard) -> None:
    while True:
        # read1 returns what has arrived instead of waiting for a whole chunk, so the guard
        # runs after every burst, however slowly the server sends.
        chunk = response.read1(CHUNK_BYTES)
        guard.check(writer.size)
        if not chunk:
            return
        writer.write(chunk)
        guard.check(writer.size)
