"""The runner: one child process per loaded model, serving requests over a pipe.

Started by the supervisor as
``python -m inference.runtime.runner --commands-fd N --events-fd M SPEC`` with the two pipe
ends passed through ``pass_fds`` and ``SPEC`` a ``RunnerSpec`` as JSON. It loads the model,
says ``loaded``, then serves the commands in ``inference.runtime.protocol``.

Why a process per model: a malformed file or a native crash takes down this process only;
unloading gives all of the model's memory back to the OS; and CPU, RSS and GPU memory per
loaded model are exactly this process's.

Threads: the main thread reads commands, so ``cancel``, ``ping`` and ``shutdown`` are handled
at once even while a token is being computed; one worker thread runs ``generate`` and
``tokenize`` one at a time (a ``LoadedModel`` is not thread-safe), with a ``should_stop`` that
reads the flag the main thread sets, so a cancel takes effect within one token.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from inference.backends import get_backend
from inference.backends.base import (
    Event,
    Finished,
    GenerationParams,
    LoadedModel,
    LoadOptions,
    TokenEvent,
)
from inference.backends.llama_cpp import LlamaCppModel
from inference.backends.llama_cpp_batch import Sequence
from inference.errors import BackendError, InferenceError
from inference.runtime.protocol import (
    CancelCommand,
    ErrorMessage,
    GenerateCommand,
    RunnerMessage,
    RunnerSpec,
    TokenizeCommand,
)


class EventChannel:
    """Writes runner messages as JSON lines to the events pipe, from any thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: RunnerMessage) -> None:
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._lock:
            if self.broken:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except (BrokenPipeError, OSError):
                # The supervisor is gone; the command pipe reaches EOF too and we exit.
                self.broken = True


_RANK = {"interactive": 0, "batch": 1}
_Job = GenerateCommand | TokenizeCommand


class RunnerServer:
    """Serves one loaded model: the command loop (main thread) and the worker thread.

    The worker takes interactive requests before batch ones (``GenerateCommand.priority``),
    first come first served within each. A llama.cpp model decodes up to its
    ``parallel_sequences`` requests together (``_work_batched``); other models one at a time
    (``_work_serial``).
    """

    def __init__(self, model: LoadedModel, channel: EventChannel) -> None:
        self._model = model
        self._channel = channel
        # (rank, arrival, job): interactive first, then in order of arrival; None ends.
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._state = threading.Lock()
        self._current: str | None = None
        self._stop = threading.Event()
        self._queued: set[str] = set()
        self._cancelled: set[str] = set()
        self._running: set[str] = set()  # batched: requests with a sequence or waiting for one
        self._arrived: dict[str, float] = {}  # when each waiting request's command came
        self._skipped: set[str] = set()  # serial: cancelled while queued, already answered
        self._serial = not isinstance(model, LlamaCppModel)
        self._closing = False
        work = self._work_serial if self._serial else self._work_batched
        self._worker = threading.Thread(target=work, name="runner-worker", daemon=True)

    def serve(self, commands: IO[bytes]) -> None:
        """Handle commands until ``shutdown`` or the end of the pipe, then stop the worker."""
        self._worker.start()
        try:
            for line in commands:
                if not self._dispatch(line):
                    break
        finally:
            with self._state:
                self._closing = True
                self._stop.set()
            self._jobs.put((9, next(self._arrivals), None))
            self._worker.join()

    def _dispatch(self, line: bytes) -> bool:
        try:
            message = json.loads(line)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            self._channel.send(
                {"type": "error", "id": None, "reason": "The runner got a malformed command."}
            )
            return True
        if kind in ("generate", "tokenize", "count"):
            with self._state:
                self._queued.add(str(message.get("id")))
                self._arrived[str(message.get("id"))] = time.monotonic()
            rank = _RANK.get(message.get("priority", "interactive"), 0)
            self._jobs.put((rank, next(self._arrivals), message))
        elif kind == "cancel":
            self._cancel(cast(CancelCommand, message)["id"])
        elif kind == "ping":
            with self._state:
                busy = self._current is not None or bool(self._running)
            self._channel.send(
                {"type": "pong", "id": str(message.get("id")), "pid": os.getpid(), "busy": busy}
            )
        elif kind == "shutdown":
            return False
        else:
            self._channel.send(
                {
                    "type": "error",
                    "id": message.get("id"),
                    "reason": f"The runner does not know the command {kind!r}.",
                }
            )
        return True

    def _cancel(self, request_id: str) -> None:
        with self._state:
            if request_id == self._current:
                self._stop.set()
            elif self._serial and request_id in self._queued:
                # Answered now, not when the worker reaches it behind a long generation.
                self._queued.discard(request_id)
                self._skipped.add(request_id)
                self._send_done(request_id, Finished("cancelled", 0, 0), 0.0)
            elif request_id in self._queued or request_id in self._running:
                self._cancelled.add(request_id)
            # else: it has already finished, and its done is on its way

    def _waited_ms(self, request_id: str) -> float:
        """How long the request has waited since its command came (and forget when)."""
        with self._state:
            arrived = self._arrived.pop(request_id, None)
        return 0.0 if arrived is None else (time.monotonic() - arrived) * 1000

    def _answer(self, request_id: str, work: Callable[..., object], *args: Any) -> bool:
        """Run ``work(*args)``; on failure send the request's error and return False."""
        try:
            work(*args)
            return True
        except InferenceError as exc:
            error: ErrorMessage = {"type": "error", "id": request_id, "reason": exc.reason}
            if exc.code:
                error["code"] = exc.code
            self._channel.send(error)
        except Exception as exc:  # the runner must answer every request, whatever happened
            reason = f"The backend failed with {type(exc).__name__}: {exc}."
            self._channel.send({"type": "error", "id": request_id, "reason": reason})
        return False

    # --- one at a time -------------------------------------------------------------------------

    def _work_serial(self) -> None:
        while (job := self._jobs.get()[2]) is not None:
            request_id = job["id"]
            with self._state:
                if request_id in self._skipped:
                    self._skipped.discard(request_id)
                    self._arrived.pop(request_id, None)
                    continue
                self._current = request_id
                if self._closing or request_id in self._cancelled:
                    self._stop.set()
                else:
                    self._stop.clear()
                self._queued.discard(request_id)
                self._cancelled.discard(request_id)
            try:
                if job["type"] == "generate":
                    generate = cast(GenerateCommand, job)
                    self._answer(request_id, self._generate, generate)
                else:
                    tokenize = cast(TokenizeCommand, job)
                    self._answer(request_id, self._tokenize, tokenize)
            finally:
                with self._state:
                    self._current = None
                    self._arrived.pop(request_id, None)

    def _prompt(self, prompt: object, messages: object) -> str:
        if messages is not None:
            if not isinstance(messages, list):
                raise BackendError("Chat messages must be a list of {role, content} objects.")
            return self._model.apply_chat_template(cast(list[dict[str, Any]], messages))
        if not isinstance(prompt, str):
            raise BackendError("A request needs a prompt or chat messages.")
        return prompt

    def _params(self, job: GenerateCommand) -> GenerationParams:
        try:
            return GenerationParams(**(job.get("params") or {}))
        except TypeError as exc:
            raise BackendError(f"The generation parameters are malformed: {exc}.") from exc

    def _generate(self, job: GenerateCommand) -> None:
        request_id = job["id"]
        prompt = self._prompt(job.get("prompt"), job.get("messages"))
        params = self._params(job)
        waited = self._waited_ms(request_id)
        cpu_start = time.process_time()  # all of this process's threads, llama.cpp's included
        for event in self._model.generate(prompt, params, self._stop.is_set):
            if isinstance(event, TokenEvent):
                self._channel.send({"type": "token", "id": request_id, "text": event.text})
            elif isinstance(event, Finished):
                self._send_done(request_id, event, time.process_time() - cpu_start, waited)

    def _send_done(
        self, request_id: str, event: Finished, cpu_seconds: float, wait_ms: float = 0.0
    ) -> None:
        self._channel.send(
            {
                "type": "done",
                "id": request_id,
                "finish_reason": event.finish_reason,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "cpu_seconds": round(cpu_seconds, 6),
                "wait_ms": round(wait_ms, 3),
            }
        )

    def _tokenize(self, job: TokenizeCommand) -> None:
        tokens = self._model.tokenize(self._prompt(job.get("prompt"), job.get("messages")))
        if job["type"] == "count":
            self._channel.send({"type": "count", "id": job["id"], "count": len(tokens)})
        else:
            self._channel.send(
                {"type": "tokens", "id": job["id"], "tokens": tokens, "count": len(tokens)}
            )

    # --- several together ----------------------------------------------------------------------

    def _work_batched(self) -> None:
        """Decode up to ``parallel_sequences`` requests together, joining and leaving between
        steps; see ``_Batching``."""
        model = cast(LlamaCppModel, self._model)
        batching = _Batching(self, model)
        try:
            while True:
                idle = not batching.active and not batching.waiting
                try:
                    item = self._jobs.get() if idle else self._jobs.get_nowait()
                except queue.Empty:
                    item = None
                if item is not None:
                    rank, arrival, job = item
                    if job is None:
                        batching.end_all()
                        return
                    batching.take(rank, arrival, job)
                    continue  # take every command that has arrived before the next step
                batching.run_once()
        finally:
            model.decoder.close_all()


@dataclass(eq=False)
class _Request:
    """A generate request of the batched worker, waiting or decoding."""

    rank: int
    arrival: int
    id: str
    tokens: list[int]
    room: int
    params: GenerationParams
    sequence: Sequence | None = None
    held: list[str] = field(default_factory=list)  # a batch request's text, sent at the end
    wait_ms: float | None = None  # from its command to its first start

    @property
    def batch(self) -> bool:
        return self.rank == _RANK["batch"]


class _Batching:
    """The batched worker's state: requests waiting and decoding, and one scheduling round.

    A round: end the cancelled requests; if an interactive request waits and every sequence
    is taken, set back the batch request with the least work done (it is redone from its
    start later, with the same seed, so its text is the same: which is why a batch request's
    text is sent only at its end); start waiting requests in free sequences, interactive
    first; then decode one token of every request in one batch.
    """

    def __init__(self, server: RunnerServer, model: LlamaCppModel) -> None:
        self.server = server
        self.model = model
        self.decoder = model.decoder
        self.waiting: list[_Request] = []
        self.active: list[_Request] = []

    def take(self, rank: int, arrival: int, job: _Job) -> None:
        server = self.server
        request_id = job["id"]
        with server._state:
            server._queued.discard(request_id)
            if job["type"] == "generate":
                server._running.add(request_id)
        if job["type"] != "generate":
            tokenize = cast(TokenizeCommand, job)
            server._answer(request_id, server._tokenize, tokenize)
            self._forget(request_id)
            return
        generate = cast(GenerateCommand, job)

        def admit() -> None:
            prompt = server._prompt(generate.get("prompt"), generate.get("messages"))
            params = server._params(generate)
            tokens, room = self.model.prepare(prompt)
            self.waiting.append(_Request(rank, arrival, request_id, tokens, room, params))

        if not server._answer(request_id, admit):
            self._forget(request_id)

    def run_once(self) -> None:
        self._end_cancelled()
        self._make_room()
        self._start_waiting()
        if not self.active:
            return
        try:
            results = self.decoder.step()
        except Exception as exc:
            # One decode serves every active request, so its failure is theirs.
            for request in list(self.active):
                self.server._answer(request.id, _raise, exc)
                self._close(request)
            return
        by_sequence = {request.sequence: request for request in self.active}
        for sequence, events in results:
            self._deliver(by_sequence[sequence], events)

    def end_all(self) -> None:
        """The runner is shutting down: every request ends cancelled, with its text so far."""
        for request in list(self.active):
            assert request.sequence is not None
            self._deliver(request, self.decoder.cancel(request.sequence))
        for request in list(self.waiting):
            self._cancel_waiting(request)

    # --- a round's parts -------------------------------------------------------------------------

    def _end_cancelled(self) -> None:
        with self.server._state:
            cancelled = set(self.server._cancelled)
            closing = self.server._closing
        if not cancelled and not closing:
            return
        for request in list(self.active):
            if closing or request.id in cancelled:
                assert request.sequence is not None
                self._deliver(request, self.decoder.cancel(request.sequence))
        for request in list(self.waiting):
            if closing or request.id in cancelled:
                self._cancel_waiting(request)

    def _make_room(self) -> None:
        if self.decoder.free_slots or not any(not r.batch for r in self.waiting):
            return
        batch = [r for r in self.active if r.batch and r.sequence is not None]
        if not batch:
            return
        victim = min(batch, key=lambda r: (r.sequence.stream.generated, -r.arrival))  # type: ignore[union-attr]
        assert victim.sequence is not None
        self.decoder.close(victim.sequence)
        victim.sequence = None
        victim.held.clear()
        self.active.remove(victim)
        self.waiting.append(victim)

    def _start_waiting(self) -> None:
        while self.decoder.free_slots and self.waiting:
            request = min(self.waiting, key=lambda r: (r.rank, r.arrival))
            self.waiting.remove(request)
            self.active.append(request)
            try:
                sequence = self.decoder.open(request.tokens, request.params, room=request.room)
                request.sequence = sequence
                if request.wait_ms is None:
                    request.wait_ms = self.server._waited_ms(request.id)
                # A redo after being set back must draw the same tokens.
                request.params = dataclasses.replace(request.params, seed=sequence.seed)
                events = self.decoder.prefill(sequence)
            except Exception as exc:
                self.server._answer(request.id, _raise, exc)
                self._close(request)
                continue
            self._deliver(request, events)

    # --- events ----------------------------------------------------------------------------------

    def _deliver(self, request: _Request, events: list[Event]) -> None:
        channel = self.server._channel
        for event in events:
            if isinstance(event, TokenEvent):
                if request.batch:
                    request.held.append(event.text)
                else:
                    channel.send({"type": "token", "id": request.id, "text": event.text})
            elif isinstance(event, Finished):
                if request.held:
                    channel.send({"type": "token", "id": request.id, "text": "".join(request.held)})
                assert request.sequence is not None
                cpu = request.sequence.cpu_seconds
                self.server._send_done(request.id, event, cpu, request.wait_ms or 0.0)
                self._close(request)

    def _cancel_waiting(self, request: _Request) -> None:
        self.waiting.remove(request)
        done = Finished("cancelled", len(request.tokens), 0)
        self.server._send_done(request.id, done, 0.0, self.server._waited_ms(request.id))
        self._forget(request.id)

    def _close(self, request: _Request) -> None:
        if request.sequence is not None:
            self.decoder.close(request.sequence)
            request.sequence = None
        if request in self.active:
            self.active.remove(request)
        self._forget(request.id)

    def _forget(self, request_id: str) -> None:
        with self.server._state:
            self.server._running.discard(request_id)
            self.server._cancelled.discard(request_id)
            self.server._arrived.pop(request_id, None)


def _raise(exc: BaseException) -> None:
    raise exc


#: Test hook: when set to a signal name (e.g. "SIGSEGV"), the runner kills itself with that
#: signal after importing the backend, standing in for a native crash ("SIGSTOP": a load that
#: hangs). Never set in production.
CRASH_FOR_TESTS_ENV = "OPSDASH_TRIAL_CRASH_FOR_TESTS"


def _load(spec: RunnerSpec) -> LoadedModel:
    try:
        options = LoadOptions(**spec.get("options", {}))
    except TypeError as exc:
        raise BackendError(f"The load options are malformed: {exc}.") from exc
    backend = get_backend(spec["backend"])
    if crash := os.environ.get(CRASH_FOR_TESTS_ENV):
        os.kill(os.getpid(), signal.Signals[crash])
    return backend.load(Path(spec["path"]), options)


def main(argv: list[str] | None = None) -> int:
    """Load the model, serve until told to stop; 0 after a clean shutdown, 1 if loading failed."""
    parser = argparse.ArgumentParser(prog="python -m inference.runtime.runner")
    parser.add_argument("--commands-fd", type=int, required=True)
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("spec", help="a RunnerSpec as JSON")
    args = parser.parse_args(argv)
    channel = EventChannel(args.events_fd)
    started = time.monotonic()
    try:
        spec = cast(RunnerSpec, json.loads(args.spec))
        if not isinstance(spec, Mapping):
            raise BackendError("The runner's model spec is not a JSON object.")
        model = _load(spec)
    except InferenceError as exc:
        channel.send({"type": "error", "id": None, "reason": exc.reason})
        return 1
    except Exception as exc:  # a load failure must reach the supervisor as a sentence
        reason = f"The backend failed to load the model with {type(exc).__name__}: {exc}."
        channel.send({"type": "error", "id": None, "reason": reason})
        return 1
    try:
        channel.send(
            {
                "type": "loaded",
                "pid": os.getpid(),
                "context_length": model.context_length,
                "notices": list(model.notices),
                "load_ms": round((time.monotonic() - started) * 1000, 3),
                "parallel_sequences": getattr(model, "parallel_sequences", 1),
            }
        )
        with os.fdopen(args.commands_fd, "rb") as commands:
            RunnerServer(model, channel).serve(commands)
    finally:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
