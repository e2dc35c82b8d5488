"""A fleet for real: hub web processes (uvicorn) and agents (``manage.py agent``) as subprocesses
on a throwaway PostgreSQL and Redis (tests/fixtures/engines.py).

The tests talk to it the way an operator's scripts do: over HTTP with a personal API token, and
with signals (SIGKILL an agent = unplug the machine; SIGTERM a hub = restart it). Every process
runs in a process group of its own, so a kill reaches its runners too and nothing outlives the
fleet; each one's output goes to a log file in the fleet's folder, and a failing test prints the
tail of every log (tests/fleet/conftest.py).

Hubs share one data folder (one models folder and model root, as several uvicorn workers on one
machine would) and one fixed secret key, so a session or token works on every hub. Agents get
folders of their own and no database or Redis URL: all they know is the hub's address.
"""

from __future__ import annotations

import contextlib
import itertools
import json as jsonlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, TypeVar

from tests.fixtures.engines import Postgres, Redis, free_port

REPO = Path(__file__).resolve().parents[2]
MANAGE = REPO / "manage.py"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20
SECRET_KEY = "fleet-tests-shared-secret-key-" + "x" * 40
DEMO_PASSWORD = "fleet-tests-password"
LOG_TAIL_LINES = 40

T = TypeVar("T")
_fleet_numbers = itertools.count(1)


def _base_env() -> dict[str, str]:
    """This process's environment without any OPSDASH_* setting a developer may have exported,
    so each child is configured by the harness alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env["DJANGO_SETTINGS_MODULE"] = "opsdash.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env["OPSDASH_LOG_LEVEL"] = "INFO"
    return env


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log yet)"


# ------------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One child process in its own process group, its output appended to ``log_path``."""

    label: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert not self.alive, f"{self.label} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"\n----- start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.label} was never started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM to the process itself (its own shutdown ends its children), SIGKILL to the
        whole group after ``timeout`` or for whatever it left behind."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self._kill_group()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once: what pulling the plug does to a machine."""
        if self.process is None:
            return
        self._kill_group()

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)


@dataclass
class Hub(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Agent(Process):
    name: str = ""
    data_dir: Path = Path()
    models_dir: Path = Path()
    model_root: Path = Path()
    hub_url: str = ""
    token: str = ""


# ------------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes
    url: str = ""  # where the request ended, after redirects

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON ({self.status}): {self.text[:500]}") from None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:300]!r}>"


def http(
    method: str,
    url: str,
    *,
    json: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Response:
    """One HTTP request; every status comes back as a Response (only a refused or dropped
    connection raises, as ``OSError``)."""
    data = None if json is None else jsonlib.dumps(json).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, answer.headers, answer.read(), answer.url)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers, exc.read(), exc.url)


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying ``what`` did not happen,
    with the last value or error seen. A connection refused while polling counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (OSError, AssertionError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s (last: {last!r})")
        time.sleep(interval)


# ------------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Hubs and agents around one PostgreSQL database and one Redis database of their own."""

    root: Path
    postgres: Postgres
    redis: Redis
    number: int = field(default_factory=lambda: next(_fleet_numbers))
    database_url: str = ""
    hubs: list[Hub] = field(default_factory=list)
    agents: dict[str, Agent] = field(default_factory=dict)
    admin_token: str = ""
    operator_token: str = ""

    # ---- set-up

    @property
    def redis_url(self) -> str:
        # A Redis database per fleet (0–15), so no fleet sees another's channel groups.
        return f"redis://127.0.0.1:{self.redis.port}/{self.number % 16}"

    @property
    def hub_dir(self) -> Path:
        return self.root / "hub"

    @property
    def hub_model_root(self) -> Path:
        """A folder admins may install from by path on the hub (OPSDASH_MODEL_ROOTS)."""
        return self.hub_dir / "roots"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def hub_env(self) -> dict[str, str]:
        env = _base_env()
        env.update(
            OPSDASH_DATABASE_URL=self.database_url,
            OPSDASH_REDIS_URL=self.redis_url,
            OPSDASH_SECRET_KEY=SECRET_KEY,
            OPSDASH_DATA_DIR=str(self.hub_dir),
            OPSDASH_MODELS_DIR=str(self.hub_dir / "models"),
            OPSDASH_MODEL_ROOTS=str(self.hub_model_root),
            OPSDASH_ALLOWED_HOSTS="127.0.0.1,localhost",
            OPSDASH_DEMO_PASSWORD=DEMO_PASSWORD,
            OPSDASH_NODE_NAME=f"hub-{self.number}",
        )
        return env

    def prepare(self) -> Fleet:
        """A fresh database, migrated, with the demo users and an API token for admin and
        operator; no process is running yet."""
        for folder in (self.hub_dir, self.hub_model_root, self.hub_dir / "models", self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.database_url = self.postgres.create_database()
        self.manage("migrate", "--no-input", timeout=240)
        self.manage("bootstrap", "--demo")
        self.admin_token = self.manage("create_token", "admin").stdout.strip().splitlines()[-1]
        self.operator_token = (
            self.manage("create_token", "operator").stdout.strip().splitlines()[-1]
        )
        return self

    def manage(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``manage.py ARGS`` as the hub runs it (its database, Redis and data folder)."""
        result = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env={**self.hub_env(), **(env or {})},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def create_node_token(self, label: str = "fleet-tests") -> str:
        """A node token from ``manage.py create_node_token`` (the secret is its last line)."""
        return self.manage("create_node_token", "--name", label).stdout.strip().splitlines()[-1]

    # ---- hubs

    def start_hubs(self, count: int) -> list[Hub]:
        new = [self.add_hub(wait=False) for _ in range(count)]
        for hub in new:
            self.wait_hub(hub)
        return new

    def add_hub(self, *, wait: bool = True) -> Hub:
        index = len(self.hubs)
        port = free_port()
        hub = Hub(
            label=f"hub{index}",
            argv=[
                sys.executable,
                "-m",
                "uvicorn",
                "opsdash.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "on",
                "--timeout-graceful-shutdown",
                "4",
            ],
            env=self.hub_env(),
            log_path=self.log_dir / f"hub{index}.log",
            port=port,
        )
        self.hubs.append(hub)
        hub.start()
        if wait:
            self.wait_hub(hub)
        return hub

    def wait_hub(self, hub: Hub, timeout: float = START_TIMEOUT_SECONDS) -> None:
        def healthy() -> bool:
            if not hub.alive:
                raise RuntimeError(f"{hub.label} exited ({hub.returncode}):\n{hub.tail()}")
            return http("GET", hub.url + "/healthz", timeout=2).status == 200

        wait_for(healthy, timeout=timeout, what=f"{hub.label} answering /healthz")

    def stop_hub(self, index: int) -> None:
        self.hubs[index].terminate()

    def kill_hub(self, index: int) -> None:
        self.hubs[index].kill()

    def restart_hub(self, index: int, *, kill: bool = False, down_seconds: float = 0) -> Hub:
        """Stop hub ``index`` (SIGTERM, or SIGKILL with ``kill``) and start it again on the
        same port, so agents pointed at it find it again."""
        hub = self.hubs[index]
        hub.kill() if kill else hub.terminate()
        time.sleep(down_seconds)
        hub.start()
        self.wait_hub(hub)
        return hub

    # ---- agents

    def start_agent(
        self,
        name: str,
        *,
        hub: int = 0,
        token: str | None = None,
        env: dict[str, str] | None = None,
        wait_connected: bool = False,
    ) -> Agent:
        """``manage.py agent`` for node ``name`` (its own data, models and model-root folders,
        no database or Redis URL), dialling hub ``hub``, enrolling with ``token`` (default: a
        new node token; ``""``: none, only the saved credential). Starting a known name again
        reuses its folders and its command line, as an operator restarting it would, so the
        agent comes back with its saved credential and models."""
        agent = self.agents.get(name)
        if agent is None:
            base = self.root / "nodes" / name
            agent = Agent(
                label=f"agent-{name}",
                argv=[],
                env={},
                log_path=self.log_dir / f"agent-{name}.log",
                name=name,
                data_dir=base / "data",
                models_dir=base / "models",
                model_root=base / "roots",
            )
            for folder in (agent.data_dir, agent.models_dir, agent.model_root):
                folder.mkdir(parents=True, exist_ok=True)
            self.agents[name] = agent
        agent.hub_url = self.hubs[hub].url
        if token is None:
            token = agent.token or self.create_node_token(f"for {name}")
        agent.token = token
        agent.argv = [sys.executable, str(MANAGE), "agent", "--hub", agent.hub_url, "--name", name]
        if token:
            agent.argv += ["--token", token]
        agent.env = _base_env()
        agent.env.update(
            OPSDASH_DATA_DIR=str(agent.data_dir),
            OPSDASH_MODELS_DIR=str(agent.models_dir),
            OPSDASH_MODEL_ROOTS=str(agent.model_root),
            OPSDASH_NODE_NAME=name,
            **(env or {}),
        )
        agent.start()
        if wait_connected:
            self.wait_node(name, timeout=START_TIMEOUT_SECONDS)
        return agent

    def kill_agent(self, name: str) -> None:
        self.agents[name].kill()

    def stop_agent(self, name: str) -> int | None:
        return self.agents[name].terminate()

    # ---- the API

    def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        hub: int = 0,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        """``METHOD path`` on hub ``hub`` as admin (or with ``token``)."""
        return http(
            method,
            self.hubs[hub].url + path,
            json=json,
            token=token if token is not None else self.admin_token,
            headers=headers,
            timeout=timeout,
        )

    def sign_in(self, username: str = "admin", *, hub: int = 0) -> str:
        """Sign in through hub ``hub``'s login page as a browser does; returns the ``Cookie``
        header (session and CSRF cookies), which every hub accepts: sessions live in PostgreSQL
        and the hubs share one secret key."""
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login = self.hubs[hub].url + "/accounts/login/"
        with opener.open(login, timeout=30) as page:
            form = page.read().decode()
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert found, f"no CSRF token on the login page: {form[:300]}"
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": found[1], "username": username, "password": DEMO_PASSWORD}
        ).encode()
        request = urllib.request.Request(login, data=body, headers={"Referer": login})
        with opener.open(request, timeout=30) as answer:
            assert "/accounts/login/" not in answer.url, f"sign-in as {username} was refused"
        cookies = {cookie.name: cookie.value for cookie in jar}
        assert "sessionid" in cookies, f"no session cookie after signing in: {sorted(cookies)}"
        return "; ".join(f"{name}={value}" for name, value in cookies.items())

    def nodes(self, *, hub: int = 0) -> dict[str, dict[str, Any]]:
        answer = self.api("GET", "/api/nodes", hub=hub)
        assert answer.status == 200, answer
        return {item["name"]: item for item in answer.json()["items"]}

    def wait_node(
        self, name: str, *, status: str | None = None, hub: int = 0, timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until hub ``hub`` lists node ``name`` (with ``status``, when given)."""

        def listed() -> dict[str, Any] | None:
            node = self.nodes(hub=hub).get(name)
            if node is None or (status is not None and node["status"] != status):
                return None
            return node

        state = f"with status {status}" if status else "at all"
        return wait_for(listed, timeout=timeout, what=f"node {name} listed {state} on hub{hub}")

    def approve(self, name: str, *, hub: int = 0) -> Response:
        answer = self.api("POST", f"/api/nodes/{name}/approve", hub=hub)
        assert answer.status == 200, answer
        return answer

    # ---- diagnostics and the end

    def processes(self) -> Iterator[Process]:
        yield from self.hubs
        yield from self.agents.values()

    def report(self) -> str:
        """The tail of every process's log, and the engines', for a failing test."""
        parts = []
        for proc in self.processes():
            state = "running" if proc.alive else f"exited {proc.returncode}"
            parts.append(f"===== {proc.label} ({state}) {proc.log_path}\n{proc.tail()}")
        parts.append(f"===== postgres\n{tail(self.postgres.log_path, 15)}")
        parts.append(f"===== redis\n{tail(self.redis.log_path, 15)}")
        return "\n".join(parts)

    def close(self) -> None:
        # Agents first, so none of them spends the hubs' shutdown reconnecting.
        for agent in self.agents.values():
            agent.terminate(timeout=10)
        for hub in self.hubs:
            hub.terminate(timeout=10)
