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
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

from inference.backends import get_backend
from inference.backends.base import (
    Finished,
    GenerationParams,
    LoadedModel,
    LoadOptions,
    TokenEvent,
)
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


class RunnerServer:
    """Serves one loaded model: the command loop (main thread) and the worker thread."""

    def __init__(self, model: LoadedModel, channel: EventChannel) -> None:
        self._model = model
        self._channel = channel
        self._jobs: queue.Queue[GenerateCommand | TokenizeCommand | None] = queue.Queue()
        self._state = threading.Lock()
        self._current: str | None = None
        self._stop = threading.Event()
        self._queued: set[str] = set()
        self._cancelled: set[str] = set()
        self._closing = False
        self._worker = threading.Thread(target=self._work, name="runner-worker", daemon=True)

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
            self._jobs.put(None)
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
            self._jobs.put(message)
        elif kind == "cancel":
            self._cancel(cast(CancelCommand, message)["id"])
        elif kind == "ping":
            with self._state:
                busy = self._current is not None
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
            elif request_id in self._queued:
                self._cancelled.add(request_id)
            # else: it has already finished, and its done is on its way

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            request_id = job["id"]
            with self._state:
                self._current = request_id
                if self._closing or request_id in self._cancelled:
                    self._stop.set()
                else:
                    self._stop.clear()
                self._queued.discard(request_id)
                self._cancelled.discard(request_id)
            try:
                if job["type"] == "generate":
                    self._generate(job)
                else:
                    self._tokenize(job)
            except InferenceError as exc:
                error: ErrorMessage = {"type": "error", "id": request_id, "reason": exc.reason}
                if exc.code:
                    error["code"] = exc.code
                self._channel.send(error)
            except Exception as exc:  # the runner must answer every request, whatever happened
                reason = f"The backend failed with {type(exc).__name__}: {exc}."
                self._channel.send({"type": "error", "id": request_id, "reason": reason})
            finally:
                with self._state:
                    self._current = None

    def _prompt(self, prompt: object, messages: object) -> str:
        if messages is not None:
            if not isinstance(messages, list):
                raise BackendError("Chat messages must be a list of {role, content} objects.")
            return self._model.apply_chat_template(cast(list[dict[str, Any]], messages))
        if not isinstance(prompt, str):
            raise BackendError("A request needs a prompt or chat messages.")
        return prompt

    def _generate(self, job: GenerateCommand) -> None:
        request_id = job["id"]
        prompt = self._prompt(job.get("prompt"), job.get("messages"))
        try:
            params = GenerationParams(**(job.get("params") or {}))
        except TypeError as exc:
            raise BackendError(f"The generation parameters are malformed: {exc}.") from exc
        cpu_start = time.process_time()  # all of this process's threads, llama.cpp's included
        for event in self._model.generate(prompt, params, self._stop.is_set):
            if isinstance(event, TokenEvent):
                self._channel.send({"type": "token", "id": request_id, "text": event.text})
            elif isinstance(event, Finished):
                self._channel.send(
                    {
                        "type": "done",
                        "id": request_id,
                        "finish_reason": event.finish_reason,
                        "prompt_tokens": event.prompt_tokens,
                        "completion_tokens": event.completion_tokens,
                        "cpu_seconds": round(time.process_time() - cpu_start, 6),
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
            }
        )
        with os.fdopen(args.commands_fd, "rb") as commands:
            RunnerServer(model, channel).serve(commands)
    finally:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
