"""A batch survives a crash of the server and resumes where it was, with real processes.

Everything is real, as in tests/test_shutdown.py: a data folder of its own, ``manage.py`` to
migrate, create the workflow and its API key and install the tiny llama, uvicorn as a child process
with its runner, the official ``openai`` client, and the SQLite ledger read back between the
servers and after the last one is gone. The crash is a SIGKILL of the server and of its runner
(its own session, so it would outlive the server otherwise), as a power cut would leave it: no
graceful stop, runs left ``running`` and items left ``running`` under a lease nobody renews.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = "nightly-enrichment"
REQUESTS = 16
#: The tiny llama that never writes its end token (``tiny_long_gguf_path``) writes exactly these
#: per request: a tenth of a second to a few seconds per pair of requests decoded together, so
#: the batch lasts long enough to be killed in the middle on a fast machine, and the whole test
#: stays well under two minutes on two busy cores.
MAX_TOKENS = 1000
PARALLEL = 2
WAIT_SECONDS = 180
#: What mark_interrupted_runs writes on a run whose process died under it.
CRASH_REASON = "The server stopped while this run was generating."


def _prompt(i: int) -> str:
    # Each request's prompt is its own, so a run in the ledger tells which request it was.
    return f"Request {i}: hello world"


def _requests_file(model: str) -> bytes:
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": _prompt(i)}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "seed": 11,
            },
        }
        for i in range(REQUESTS)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


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


@dataclass
class Site:
    """The data folder both servers serve, and what the client needs to reach them."""

    tmp: Path
    env: dict[str, str]
    database: Path
    model: str
    key: str
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str) -> Server:
        port, log = _free_port(), self.tmp / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "opsdash.asgi:application"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                    *("--timeout-graceful-shutdown", "4"),
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, f"http://127.0.0.1:{port}", log)
        self.servers.append(server)  # stopped by the fixture whatever happens
        server.wait_until_serving()
        return server

    def ledger(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        # Read-only, so reading between the servers cannot take a lock a server then waits on.
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            return db.execute(query, params).fetchall()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"uvicorn exited:\n{self.log.read_text()}"
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"uvicorn did not start within 60 s:\n{self.log.read_text()}")

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def crash(self) -> None:
        """SIGKILL the server and every process under it (the runner too), all at once."""
        family = psutil.Process(self.process.pid).children(recursive=True)
        assert family, "the server had no runner to kill: the batch was not generating"
        self.process.kill()
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.process.wait(timeout=10)
        psutil.wait_procs(family, timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def site(tmp_path: Path, tiny_long_gguf_path: Path) -> Iterator[Site]:
    data = tmp_path / "data"
    env = os.environ | {
        "OPSDASH_DATA_DIR": str(data),
        "OPSDASH_MODEL_ROOTS": str(tiny_long_gguf_path.parent),
        "OPSDASH_IDLE_UNLOAD_SECONDS": "0",
        "OPSDASH_PARALLEL_SEQUENCES": str(PARALLEL),
        "DJANGO_SETTINGS_MODULE": "opsdash.settings",
    }
    _manage(env, "migrate", "--no-input")
    _manage(env, "install_model", str(tiny_long_gguf_path))
    _manage(
        env,
        "shell",
        "-c",
        "from opsdash.runs.workflows import create_workflow; "
        f"create_workflow(name='Nightly enrichment', slug='{WORKFLOW}', description='', "
        "baseline_provider='openai', baseline_model='gpt-4o-mini', user=None)",
    )
    key = _manage(env, "create_api_key", WORKFLOW).strip().splitlines()[-1]
    database = data / "opsdash.sqlite3"
    site = Site(tmp_path, env, database, "", key)
    ((model,),) = site.ledger("SELECT slug FROM catalog_localmodel WHERE status = 'ready'")
    site.model = str(model)
    yield site
    for server in site.servers:
        server.stop()


def test_a_batch_killed_mid_way_resumes_on_the_next_server_and_answers_each_request_once(
    site: Site,
):
    first = site.start("server-1")
    api = first.client(site.key)
    uploaded = api.files.create(file=("rows.jsonl", _requests_file(site.model)), purpose="batch")
    batch = api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    # Mid-way: some requests answered, others generating (a run of the ledger ``running``).
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        assert time.monotonic() < deadline, f"no progress:\n{first.log.read_text()}"
        batch = api.batches.retrieve(batch.id)
        assert batch.status == "in_progress", f"the batch ended before the crash: {batch}"
        assert batch.request_counts is not None
        done = batch.request_counts.completed
        generating = site.ledger("SELECT count(*) FROM runs_run WHERE status = 'running'")[0][0]
        if done >= 2 and generating:
            break
        time.sleep(0.1)
    first.crash()

    answered_before = dict(
        site.ledger(
            "SELECT custom_id, run_id FROM gateway_batchitem WHERE status = 'done' ORDER BY line"
        )
    )
    left_running = {
        run_id
        for (run_id,) in site.ledger(
            "SELECT id FROM runs_run WHERE source = 'batch' AND status = 'running'"
        )
    }
    assert 2 <= len(answered_before) < REQUESTS
    assert left_running, "the crash caught no request generating"

    second = site.start("server-2")
    api = second.client(site.key)
    deadline = time.monotonic() + WAIT_SECONDS
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.monotonic() < deadline, f"still {batch.status}:\n{second.log.read_text()}"
        time.sleep(0.5)
        batch = api.batches.retrieve(batch.id)

    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert counts is not None
    assert (counts.total, counts.completed, counts.failed) == (REQUESTS, REQUESTS, 0)
    assert batch.error_file_id is None and batch.output_file_id is not None
    output = [
        json.loads(line) for line in api.files.content(batch.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == sorted(
        f"row-{i}" for i in range(REQUESTS)
    )
    assert all(line["error"] is None for line in output)
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in output)
    second.stop()

    # The ledger, with no server left: every request one ``ok`` run of the workflow, those
    # answered before the crash not run again, and the runs the crash cut off ``interrupted``.
    runs = site.ledger(
        "SELECT r.id, r.status, r.error, r.messages, r.pid FROM runs_run r "
        "JOIN runs_workflow w ON w.id = r.workflow_id WHERE r.source = 'batch' AND w.slug = ?",
        WORKFLOW,
    )
    prompt_of = {
        run_id: json.loads(str(messages))[0]["content"] for run_id, *_, messages, _ in runs
    }
    ok = [run_id for run_id, status, *_ in runs if status == "ok"]
    assert sorted(prompt_of[r] for r in ok) == sorted(_prompt(i) for i in range(REQUESTS))
    interrupted = {run_id: error for run_id, status, error, *_ in runs if status == "interrupted"}
    assert set(interrupted) == left_running
    assert set(interrupted.values()) == {CRASH_REASON}
    assert len(runs) == len(ok) + len(interrupted), "no run left running or otherwise ended"

    items = {
        custom_id: (status, run_id, attempts)
        for custom_id, status, run_id, attempts in site.ledger(
            "SELECT custom_id, status, run_id, attempts FROM gateway_batchitem"
        )
    }
    assert {status for status, *_ in items.values()} == {"done"}
    assert {run_id for _, run_id, _ in items.values()} == set(ok)
    for custom_id, run_id in answered_before.items():
        assert items[custom_id][:2] == ("done", run_id), f"{custom_id} was run again"
    # The requests the crash cut off were tried again, by the second server.
    pid_of = {run_id: pid for run_id, *_, pid in runs}
    for custom_id, (_, run_id, _) in items.items():
        if custom_id not in answered_before:
            assert pid_of[run_id] == second.process.pid
    cut_off = {prompt_of[r] for r in interrupted}
    retried = {f"row-{i}" for i in range(REQUESTS) if _prompt(i) in cut_off}
    assert retried and all(items[c][2] >= 2 for c in retried), items
