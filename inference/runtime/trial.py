"""The trial load that the install path runs before a model is accepted.

``trial_load`` starts ``python -m inference.runtime.trial <json>`` as a child process, which
loads the model with the chosen backend, tokenizes a short prompt and generates a few tokens,
then prints one JSON line. A malformed file can crash native code; in a child that is a failed
install with a reason, not a dead web server. The parent never imports a native library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: The prompt the child tokenizes and continues. Several tokens long on purpose: llama.cpp
#: takes a different code path for a multi-token batch than for one token, and both should run.
TRIAL_PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
TRIAL_MAX_TOKENS = 4
#: Enough context for the prompt and the sample; small, so the trial stays light on memory.
TRIAL_CONTEXT_LENGTH = 256
STDERR_TAIL_CHARS = 500

#: Test hook: when set to a signal name (e.g. "SIGSEGV"), the child kills itself with that
#: signal after importing the backend, standing in for a native crash. Never set in production.
CRASH_FOR_TESTS_ENV = "OPSDASH_TRIAL_CRASH_FOR_TESTS"


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What a trial load found.

    ``seconds`` is the child's own time to load and sample when it got that far, else the wall
    time the parent waited. ``error`` is None when ``ok``, else a sentence a person can act on.
    """

    ok: bool
    seconds: float
    sample_text: str = ""
    prompt_tokens: int = 0
    error: str | None = None


def trial_load(
    path: Path,
    *,
    backend: str,
    model_type: str | None = None,
    timeout: float = 120.0,
    should_stop: Callable[[], str | None] | None = None,
) -> TrialResult:
    """Load ``path`` with ``backend`` in a child process and generate a few tokens.

    Never raises for a bad model: every failure (backend error, missing library, crash by a
    signal, non-zero exit, timeout) comes back as ``ok=False`` with a readable ``error``.
    ``should_stop`` is asked about twice a second; when it returns a reason (the install was
    cancelled) the child is killed and that reason comes back as the error.
    """
    request = {"path": str(Path(path).resolve()), "backend": backend, "model_type": model_type}
    command = [sys.executable, "-m", "inference.runtime.trial", json.dumps(request)]
    started = time.monotonic()
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_environment(),
        )
    except OSError as exc:
        return TrialResult(
            ok=False, seconds=0.0, error=f"The trial load could not start a Python process: {exc}."
        )
    try:
        stdout, stderr = _wait(child, timeout=timeout, started=started, should_stop=should_stop)
    except _Stopped as stop:
        child.kill()
        child.communicate()
        return TrialResult(ok=False, seconds=time.monotonic() - started, error=stop.reason)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        return TrialResult(
            ok=False,
            seconds=time.monotonic() - started,
            error=(
                f"The model did not finish loading within {timeout:g} s. The file may be too "
                "large for this machine, or the disk too slow; try again when the machine is "
                "less busy."
            ),
        )
    waited = time.monotonic() - started
    return _interpret(child.returncode, stdout, stderr, waited)


class _Stopped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _wait(
    child: subprocess.Popen[bytes],
    *,
    timeout: float,
    started: float,
    should_stop: Callable[[], str | None] | None,
) -> tuple[bytes, bytes]:
    if should_stop is None:
        return child.communicate(timeout=timeout)
    while True:
        left = timeout - (time.monotonic() - started)
        try:
            # communicate() may be called again after it timed out; it keeps what it read.
            return child.communicate(timeout=max(0.0, min(0.5, left)))
        except subprocess.TimeoutExpired:
            if left <= 0.5:
                raise
        reason = should_stop()
        if reason:
            raise _Stopped(reason)


def _child_environment() -> dict[str, str]:
    # The child runs ``-m inference.runtime.…``, so the folder holding this package must be on
    # its path whatever the parent's working directory is.
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def _stderr_tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    if len(text) > STDERR_TAIL_CHARS:
        text = "…" + text[-STDERR_TAIL_CHARS:]
    return text


def _with_tail(reason: str, stderr: bytes) -> str:
    tail = _stderr_tail(stderr)
    return f"{reason} Last output: {tail}" if tail else reason


def _parse_result(stdout: bytes) -> dict[str, Any] | None:
    for line in reversed(stdout.decode("utf-8", errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return None


def _interpret(returncode: int, stdout: bytes, stderr: bytes, waited: float) -> TrialResult:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if name == "SIGKILL":
            reason = (
                "The trial load was killed (SIGKILL), most likely because the machine ran out "
                "of memory while loading the model."
            )
        else:
            reason = (
                f"The backend crashed ({name}) while loading the model. The file may be "
                "corrupt or use a feature this backend does not support."
            )
        return TrialResult(ok=False, seconds=waited, error=_with_tail(reason, stderr))

    result = _parse_result(stdout)
    if result is None:
        reason = f"The trial load exited with status {returncode} without reporting a result."
        return TrialResult(ok=False, seconds=waited, error=_with_tail(reason, stderr))
    if not result.get("ok"):
        reason = str(result.get("error") or "The trial load failed without saying why.")
        # The backend's sentence first; native libraries often say more on stderr.
        return TrialResult(ok=False, seconds=waited, error=_with_tail(reason, stderr))
    return TrialResult(
        ok=True,
        seconds=float(result.get("seconds", waited)),
        sample_text=str(result.get("sample_text", "")),
        prompt_tokens=int(result.get("prompt_tokens", 0)),
    )


# --- the child -------------------------------------------------------------------------------


def _run_trial(request: dict[str, Any]) -> dict[str, Any]:
    from inference.backends import get_backend
    from inference.backends.base import (
        Finished,
        GenerationParams,
        LoadOptions,
        TokenEvent,
    )
    from inference.errors import InferenceError

    started = time.monotonic()
    try:
        backend = get_backend(str(request["backend"]))
        crash = os.environ.get(CRASH_FOR_TESTS_ENV)
        if crash:
            os.kill(os.getpid(), signal.Signals[crash])
        model = backend.load(
            Path(request["path"]),
            LoadOptions(
                context_length=TRIAL_CONTEXT_LENGTH,
                model_type=request.get("model_type"),
                seed=0,
            ),
        )
        try:
            prompt_tokens = len(model.tokenize(TRIAL_PROMPT))
            pieces: list[str] = []
            params = GenerationParams(max_tokens=TRIAL_MAX_TOKENS, temperature=0.0, seed=0)
            for event in model.generate(TRIAL_PROMPT, params):
                if isinstance(event, TokenEvent):
                    pieces.append(event.text)
                elif isinstance(event, Finished):
                    prompt_tokens = event.prompt_tokens
        finally:
            model.close()
    except InferenceError as exc:
        return {"ok": False, "error": exc.reason}
    except Exception as exc:  # the child's job is to report, whatever went wrong
        return {"ok": False, "error": f"The backend failed with {type(exc).__name__}: {exc}."}
    return {
        "ok": True,
        "seconds": round(time.monotonic() - started, 3),
        "sample_text": "".join(pieces),
        "prompt_tokens": prompt_tokens,
    }


def _main(argv: list[str]) -> int:
    # Native libraries sometimes print to stdout; keep the real stdout for the one result line
    # and send everything else written to file descriptor 1 to stderr.
    result_stream: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        request = json.loads(argv[1])
        if not isinstance(request, dict):
            raise ValueError("expected a JSON object")
    except (IndexError, ValueError) as exc:
        result = {"ok": False, "error": f"The trial load got malformed arguments: {exc}."}
    else:
        result = _run_trial(request)
    result_stream.write(json.dumps(result) + "\n")
    result_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
