"""SIGTERM to a real uvicorn serving OpsDash, in the middle of a blocking ``POST /api/runs``.

Everything is real: a data folder of its own, ``manage.py`` to migrate, create users and a token
and install the model, uvicorn as a child process, the runner it starts, and the SQLite ledger
read back after the server is gone. The live test server (``tests/liveserver.py``) is held to
the same stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from opsdash.accounts.services import create_token
from opsdash.runs.services import SHUTDOWN_REASON
from tests.liveserver import serve

REPO = Path(__file__).resolve().parent.parent
#: What the Makefile's `run` target gives uvicorn: a request the stop signal could not end (its
#: runner hung) is cancelled after this, leaving the runners' 3 s grace inside the 10 s stop.
GRACEFUL_SECONDS = 4
EXIT_DEADLINE_SECONDS = 10.0


#: More tokens than any test waits for: the tiny llama that never ends (``tiny_long_gguf_path``)
#: is loaded with its whole 262,144-token context, so a run asked for these goes on until the
#: shutdown ends it.
ENDLESS_TOKENS = 100_000


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    token: str
    model_id: int
    database: Path
    log: Path

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return _request(self.url, self.token, method, path, body)


def _request(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"uvicorn exited while starting:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"uvicorn did not start within 60 s:\n{log.read_text()}")


@pytest.fixture
def served(tmp_path: Path, tiny_long_gguf_path: Path) -> Iterator[Served]:
    data, root = tmp_path / "data", tiny_long_gguf_path.parent
    env = os.environ | {
        "OPSDASH_DATA_DIR": str(data),
        "OPSDASH_MODEL_ROOTS": str(root),
        "OPSDASH_DEMO_PASSWORD": "correct horse battery staple",
        "OPSDASH_IDLE_UNLOAD_SECONDS": "0",
        "DJANGO_SETTINGS_MODULE": "opsdash.settings",
    }
    _manage(env, "migrate", "--no-input")
    _manage(env, "bootstrap", "--demo")
    _manage(env, "install_model", str(tiny_long_gguf_path))
    token = _manage(env, "create_token", "admin").strip().splitlines()[-1]
    database = data / "opsdash.sqlite3"
    with sqlite3.connect(database) as db:
        ready = "SELECT id FROM catalog_localmodel WHERE status = 'ready'"
        (model_id,) = db.execute(ready).fetchone()

    port, log = _free_port(), tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "opsdash.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--timeout-graceful-shutdown", str(GRACEFUL_SECONDS)),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, url, log)
        yield Served(process, url, token, model_id, database, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_busy_runner(url: str, token: str, log: Path | None = None) -> list[psutil.Process]:
    """Poll ``/api/runtime`` until the model's runner is generating; its process."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        loaded = _request(url, token, "GET", "/api/runtime")["loaded"]
        if any(entry["state"] == "busy" for entry in loaded):
            return [psutil.Process(entry["pid"]) for entry in loaded]
        time.sleep(0.05)
    pytest.fail(f"the run never started generating:\n{log.read_text() if log else ''}")


def _post_endless_run(
    url: str, token: str, model_id: int, answer: dict[str, Any]
) -> threading.Thread:
    """``POST /api/runs`` in a thread, asking for more tokens than any test waits for; the
    answer (status, headers, body), or the error, lands in ``answer``."""

    def post() -> None:
        body = {"model": model_id, "prompt": "hello", "max_tokens": ENDLESS_TOKENS}
        try:
            answer["status"], answer["json"] = 200, _request(url, token, "POST", "/api/runs", body)
        except urllib.error.HTTPError as exc:
            answer["status"], answer["headers"], answer["json"] = (
                exc.code,
                exc.headers,
                json.load(exc),
            )
        except (urllib.error.URLError, OSError) as exc:
            answer["error"] = exc

    client = threading.Thread(target=post)
    client.start()
    return client


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_sigterm_mid_run_records_it_interrupted_ends_the_runner_and_exits_within_10_s(served):
    answer: dict[str, Any] = {}
    client = _post_endless_run(served.url, served.token, served.model_id, answer)
    runners = _wait_for_busy_runner(served.url, served.token, served.log)
    server = psutil.Process(served.process.pid)
    assert {r.pid for r in runners} <= {c.pid for c in server.children(recursive=True)}

    sent = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(timeout=EXIT_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit within 10 s of SIGTERM:\n{served.log.read_text()}")
    took = time.monotonic() - sent
    client.join(timeout=10)

    assert took < EXIT_DEADLINE_SECONDS
    assert not [r.pid for r in runners if _alive(r)], "a runner outlived the server"
    with sqlite3.connect(served.database) as db:
        status, error, output, completion_tokens = db.execute(
            "SELECT status, error, output, completion_tokens FROM runs_run"
        ).fetchone()
    assert (status, error) == ("interrupted", SHUTDOWN_REASON)
    assert output and completion_tokens and completion_tokens < ENDLESS_TOKENS, "text so far kept"
    # The request itself was answered before the server went: the client learns what happened,
    # and that trying again shortly is the thing to do.
    assert "error" not in answer, answer.get("error")
    assert (answer["status"], answer["headers"]["Retry-After"]) == (503, "2")
    run = answer["json"]["run"]
    assert (run["status"], run["text"]) == ("interrupted", output)


@pytest.mark.slow
def test_sigterm_with_a_hung_runner_still_exits_within_10_s_and_records_the_run(served):
    # The worst case: the runner is stuck (frozen here) and cannot obey the interrupt, so the
    # request outlives uvicorn's graceful timeout and the runner has to be killed.
    client = _post_endless_run(served.url, served.token, served.model_id, {})
    runners = _wait_for_busy_runner(served.url, served.token, served.log)
    for runner in runners:
        runner.suspend()

    sent = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(timeout=EXIT_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit within 10 s of SIGTERM:\n{served.log.read_text()}")
    took = time.monotonic() - sent
    client.join(timeout=10)

    assert GRACEFUL_SECONDS <= took < EXIT_DEADLINE_SECONDS
    assert not [r.pid for r in runners if _alive(r)], "a runner outlived the server"
    with sqlite3.connect(served.database) as db:
        status, error = db.execute("SELECT status, error FROM runs_run").fetchone()
    assert (status, error) == ("interrupted", SHUTDOWN_REASON)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_live_test_server_stops_as_make_run_does_even_with_a_hung_runner(
    endless_model, operator
):
    # tests/liveserver.py gives uvicorn the graceful timeout `make run` gives it: a request the
    # stop signal cannot end (its runner is frozen here) is cancelled after it, so the server
    # exits by itself instead of waiting for the request until the test kills it.
    token = create_token(user=operator, name="t").secret
    runners: list[psutil.Process] = []
    try:
        with serve() as server:
            client = _post_endless_run(server.url, token, endless_model.pk, {})
            runners = _wait_for_busy_runner(server.url, token)
            for runner in runners:
                runner.suspend()
            sent = time.monotonic()
        took = time.monotonic() - sent  # leaving the block sent SIGTERM and waited for the exit
        client.join(timeout=10)
        assert GRACEFUL_SECONDS <= took < EXIT_DEADLINE_SECONDS
        assert not [r.pid for r in runners if _alive(r)], "a runner outlived the server"
    finally:
        for runner in runners:
            if _alive(runner):
                runner.kill()
