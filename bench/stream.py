"""Streaming throughput: the playground websocket against a direct llama-cpp-python call.

The same prompt, seed and max tokens on SmolLM2-135M-Instruct, measured twice in one run:

1. direct: ``llama_cpp.Llama.create_completion(stream=True)`` in this process (with the same
   load options the llama.cpp backend uses, AMX workaround included);
2. OpsDash: a real uvicorn server in a child process, a real websocket client signed in as an
   operator, the run streamed through ``/ws/playground/`` (runner process, supervisor,
   consumer, JSON frames).

Both report decode tokens per second (first token to last); the ratio is OpsDash / direct
(goal >= 0.97). The same is then done on the tiny test model, whose tokens take microseconds,
to show the per-token overhead of the whole path in microseconds.

    make bench            # or: .venv/bin/python bench/stream.py
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PASSWORD = "bench-password-123"
PROMPT = "The three most useful things to know about running language models locally are"


def direct_rate(path: Path, *, max_tokens: int, seed: int) -> tuple[int, float]:
    """(tokens, decode seconds) for a direct llama-cpp-python streaming completion."""
    import llama_cpp

    from inference.backends import llama_cpp as backend

    avoid_amx = backend._cpu_has_amx(llama_cpp)
    ctx = backend._without_extra_buffer_types(llama_cpp) if avoid_amx else contextlib.nullcontext()
    with ctx:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=backend.DEFAULT_CONTEXT_LENGTH, seed=seed, verbose=False
        )
    stamps = []
    for chunk in llm.create_completion(
        PROMPT, max_tokens=max_tokens, temperature=0, seed=seed, stream=True
    ):
        if chunk["choices"][0]["text"]:  # the last chunk only carries the finish reason
            stamps.append(time.perf_counter())
    llm.close()
    return len(stamps), stamps[-1] - stamps[0]


def backend_rate(path: Path, *, max_tokens: int, seed: int) -> tuple[int, float]:
    """(tokens, decode seconds) for OpsDash's llama.cpp backend called in this process."""
    from inference.backends import get_backend
    from inference.backends.base import GenerationParams, LoadOptions, TokenEvent

    model = get_backend("llama_cpp").load(path, LoadOptions(seed=seed))
    params = GenerationParams(max_tokens=max_tokens, temperature=0, seed=seed)
    stamps = [
        time.perf_counter() for e in model.generate(PROMPT, params) if isinstance(e, TokenEvent)
    ]
    model.close()
    return len(stamps), stamps[-1] - stamps[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def session_cookie(base: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/accounts/login/")
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode(
        {"username": "operator", "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    opener.open(
        urllib.request.Request(
            f"{base}/accounts/login/", data=body, headers={"Referer": f"{base}/accounts/login/"}
        )
    )
    return "; ".join(f"{c.name}={c.value}" for c in jar)


async def websocket_rate(
    base: str, cookie: str, model_id: int, *, max_tokens: int, seed: int
) -> tuple[int, float]:
    """(tokens, decode seconds) for a run streamed through /ws/playground/."""
    import websockets

    url = base.replace("http://", "ws://") + "/ws/playground/"
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "run",
                    "model": model_id,
                    "prompt": PROMPT,
                    "params": {"max_tokens": max_tokens, "temperature": 0, "seed": seed},
                }
            )
        )
        first = last = 0.0
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "token":
                last = time.perf_counter()
                first = first or last
            elif message["type"] == "done":
                assert message["status"] == "ok", message
                return message["usage"]["completion_tokens"], last - first
            elif message["type"] == "error":
                raise RuntimeError(message["reason"])


def main() -> None:
    from opsdash.catalog.demo import fetch_demo_model
    from tests.fixtures.tinymodels import write_tiny_gguf_llama

    smol = fetch_demo_model(REPO / ".cache" / "demo")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "root").mkdir()
        tiny = write_tiny_gguf_llama(work / "root" / "tiny.gguf")
        os.link(smol, work / "root" / smol.name)
        env = os.environ | {
            "OPSDASH_DATA_DIR": str(work / "data"),
            "OPSDASH_MODEL_ROOTS": str(work / "root"),
            "OPSDASH_DEMO_PASSWORD": PASSWORD,
            "OPSDASH_MIN_FREE_BYTES": "0",
        }
        manage(env, "migrate", "-v0")
        manage(env, "bootstrap", "--demo")
        manage(env, "install_model", str(work / "root" / smol.name), "--name", "smol")
        manage(env, "install_model", str(tiny), "--name", "tiny")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "uvicorn"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "opsdash.asgi:application",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{base}/healthz", timeout=1)
                    break
                time.sleep(0.1)
            cookie = session_cookie(base)
            results = {}
            for label, path, model_id, max_tokens in (
                ("SmolLM2", smol, 1, 128),
                ("tiny", tiny, 2, 200),
            ):
                # Warm both paths once (model load, page cache), then measure best of three.
                asyncio.run(websocket_rate(base, cookie, model_id, max_tokens=8, seed=1))
                direct_rate(path, max_tokens=8, seed=1)
                ws_best = min(
                    (
                        asyncio.run(
                            websocket_rate(base, cookie, model_id, max_tokens=max_tokens, seed=7)
                        )
                        for _ in range(3)
                    ),
                    key=lambda r: r[1] / max(r[0] - 1, 1),
                )
                d_best = min(
                    (direct_rate(path, max_tokens=max_tokens, seed=7) for _ in range(3)),
                    key=lambda r: r[1] / max(r[0] - 1, 1),
                )
                b_best = min(
                    (backend_rate(path, max_tokens=max_tokens, seed=7) for _ in range(3)),
                    key=lambda r: r[1] / max(r[0] - 1, 1),
                )
                results[label] = (d_best, ws_best, b_best)
        finally:
            server.terminate()
            server.wait(10)

    (dn, dt), (wn, wt), _ = results["SmolLM2"]
    direct_tps, ws_tps = (dn - 1) / dt, (wn - 1) / wt
    print(f"SmolLM2-135M-Instruct Q4_1, {dn} tokens, temperature 0, same seed")
    print(f"  direct llama-cpp-python (peer): {direct_tps:8.1f} tok/s")
    print(f"  OpsDash /ws/playground/:        {ws_tps:8.1f} tok/s ({wn} tokens)")
    print(f"  ratio (OpsDash / direct): {ws_tps / direct_tps:.3f}  (goal >= 0.97)")
    (dn, dt), (wn, wt), (bn, bt) = results["tiny"]
    per_direct, per_ws, per_backend = (t / (n - 1) * 1e6 for n, t in ((dn, dt), (wn, wt), (bn, bt)))
    print(f"tiny test llama, {wn} tokens (a token costs microseconds, so overhead shows)")
    print(f"  llama-cpp-python create_completion(stream=True): {per_direct:7.1f} µs/token")
    print(f"  OpsDash backend in-process:                      {per_backend:7.1f} µs/token")
    print(f"  OpsDash through runner + websocket:              {per_ws:7.1f} µs/token")
    print(
        f"  per-token overhead of runner process + supervisor + websocket: "
        f"{per_ws - per_backend:6.1f} µs"
    )


if __name__ == "__main__":
    main()
