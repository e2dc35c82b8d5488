"""The /v1 gateway against llama-cpp-python's own OpenAI server, on SmolLM2, in one run.

Both servers run at once on this machine, each with the SmolLM2-135M-Instruct GGUF loaded; the
same OpenAI client code (``openai.AsyncOpenAI``, streaming chat completions, temperature 0, the
same prompts and max_tokens) is pointed at each in turn:

1. OpsDash: uvicorn serving ``opsdash.asgi:application`` from a temporary data dir, the model
   installed with ``manage.py install_model`` and a key made with ``create_api_key``; each call
   is a run in the ledger, generated in the model's runner process.
2. Peer: ``python -m llama_cpp.server`` (llama-cpp-python's ``server`` extra: FastAPI, uvicorn).

Two modes: sequential (one client, prompts one after another, the two servers alternating) and
4 concurrent clients (both servers queue requests to one model). Reported per server:
time to first token (from sending the request to the first text) and tokens per second
(completion tokens over the whole time of the requests). Ratios are OpsDash / peer; the goal is
throughput >= 1.0x and TTFT <= 1.1x.

Fairness: same n_ctx (2048), same threads (llama-cpp-python's defaults, which OpsDash's backend
keeps: cpu_count // 2 for decoding, cpu_count for prompts; passed to the peer explicitly).
The peer's ``interrupt_requests`` is turned off: by default a new request aborts the one in
flight, which would cut the concurrent clients' answers short. On CPUs with AMX, llama.cpp's
AMX buffer type crashes on multi-token prompts (see ``inference/backends/llama_cpp.py``,
``_without_extra_buffer_types``) and the stock peer dies with SIGSEGV on its first request;
llama.cpp reads no environment variable to turn that off, so the peer is started through a
three-line launcher that sets the same ``use_extra_bufts = False`` OpsDash's backend sets, and
then runs ``llama_cpp.server`` unchanged. Which of the two the peer got is printed.

    .venv/bin/python bench/gateway.py [--max-tokens 96] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some tips for staying focused while working from home.",
    "Describe how a bicycle works to a ten-year-old.",
    "What are the main differences between a lake and a sea?",
    "Give me a recipe for a simple vegetable soup.",
    "Why do cats purr? Answer in a short paragraph.",
    "Summarise the water cycle for a school report.",
]

PEER_ALIAS = "peer"

# Runs llama_cpp.server with llama.cpp's extra buffer types off, as OpsDash's backend loads it.
PEER_LAUNCHER = """
import runpy, sys
import llama_cpp.llama_cpp as lib
_default = lib.llama_model_default_params
def _params():
    params = _default()
    params.use_extra_bufts = False
    return params
lib.llama_model_default_params = _params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class Result:
    tokens: int
    ttft: float  # seconds from sending the request to the first text
    total: float  # seconds from sending the request to the last chunk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with status {process.returncode} while starting")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:g} s")


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py *args``' output; a failure raises with the end of what the command said."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        command = " ".join(args)
        raise RuntimeError(f"manage.py {command}: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    return done.stdout


def amx_cpu() -> bool:
    import llama_cpp

    from inference.backends import llama_cpp as backend

    return backend._cpu_has_amx(llama_cpp)


async def one_request(client, model: str, prompt: str, max_tokens: int) -> Result:  # type: ignore[no-untyped-def]
    """One streamed chat completion; tokens as the server counts them when it says.

    The peer has no ``stream_options.include_usage``, and sends one chunk per token, so its
    chunks are its token count. OpsDash may join tokens that pile up into one chunk, so its
    final usage chunk gives the count.
    """
    usage_asked = model != PEER_ALIAS
    sent = time.perf_counter()
    first = last = 0.0
    chunks, usage = 0, None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        seed=7,
        stream=True,
        **({"stream_options": {"include_usage": True}} if usage_asked else {}),
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            chunks += 1
    tokens = usage.completion_tokens if usage is not None else chunks
    return Result(tokens=tokens, ttft=first - sent, total=last - sent)


async def sequential(client, model: str, prompts: list[str], max_tokens: int) -> list[Result]:  # type: ignore[no-untyped-def]
    return [await one_request(client, model, p, max_tokens) for p in prompts]


async def concurrent(
    client, model: str, prompts: list[str], max_tokens: int
) -> tuple[list[Result], float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    results = await asyncio.gather(*(one_request(client, model, p, max_tokens) for p in prompts))
    return list(results), time.perf_counter() - start


@dataclass
class Tally:
    """One server's results in one mode: every request's TTFT, tokens over seconds."""

    tokens: int = 0
    seconds: float = 0.0
    ttfts: list[float] | None = None

    def add(self, results: list[Result], seconds: float | None = None) -> tuple[float, float]:
        """Add a step (one request, or one concurrent batch); its (tokens/s, mean TTFT)."""
        self.ttfts = (self.ttfts or []) + [r.ttft for r in results]
        tokens = sum(r.tokens for r in results)
        seconds = seconds if seconds is not None else sum(r.total for r in results)
        self.tokens += tokens
        self.seconds += seconds
        return tokens / seconds, statistics.fmean(r.ttft for r in results)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_ms(self) -> float:
        return statistics.median(self.ttfts or [0.0]) * 1000


@dataclass
class Mode:
    """Both servers in one mode, and the ratios of each step measured back to back."""

    ours: Tally
    peer: Tally
    rate_ratios: list[float]
    ttft_ratios: list[float]

    def step(self, ours: tuple[float, float], peer: tuple[float, float]) -> None:
        self.rate_ratios.append(ours[0] / peer[0])
        self.ttft_ratios.append(ours[1] / peer[1])


def report(title: str, mode: Mode) -> None:
    ours, peer = mode.ours, mode.peer
    print(title)
    print(f"  {'':30}{'tokens/s':>10}{'TTFT median':>14}{'tokens':>8}")
    print(f"  {'OpsDash /v1':30}{ours.rate:10.1f}{ours.ttft_ms:11.0f} ms{ours.tokens:8d}")
    print(
        f"  {'llama_cpp.server (peer)':30}{peer.rate:10.1f}{peer.ttft_ms:11.0f} ms{peer.tokens:8d}"
    )
    print(
        f"  ratio OpsDash / peer, totals:          throughput {ours.rate / peer.rate:.3f} "
        f"(goal >= 1.0), TTFT {ours.ttft_ms / peer.ttft_ms:.3f} (goal <= 1.1)"
    )
    # Each step ran on both servers one right after the other, so the median of those ratios
    # is the figure least moved by other work on the machine.
    print(
        f"  ratio OpsDash / peer, median of pairs: throughput "
        f"{statistics.median(mode.rate_ratios):.3f}, TTFT {statistics.median(mode.ttft_ratios):.3f}"
    )


async def measure(
    ours_url: str, key: str, model: str, peer_url: str, *, max_tokens: int, rounds: int
) -> None:
    import openai

    ours = openai.AsyncOpenAI(base_url=ours_url, api_key=key, max_retries=0, timeout=600)
    peer = openai.AsyncOpenAI(base_url=peer_url, api_key="unused", max_retries=0, timeout=600)
    sides = {"ours": (ours, model), "peer": (peer, PEER_ALIAS)}
    # Warm both: the first request loads OpsDash's runner; both fill their page caches.
    for client, name in sides.values():
        await one_request(client, name, "Hello!", 8)

    seq = Mode(Tally(), Tally(), [], [])
    for i in range(rounds):
        for j, prompt in enumerate(PROMPTS):
            first, second = ("ours", "peer") if (i + j) % 2 == 0 else ("peer", "ours")
            steps = {}
            for side in (first, second):
                client, name = sides[side]
                tally = seq.ours if side == "ours" else seq.peer
                steps[side] = tally.add(await sequential(client, name, [prompt], max_tokens))
            seq.step(steps["ours"], steps["peer"])

    conc = Mode(Tally(), Tally(), [], [])
    for i in range(rounds):
        for k, batch in enumerate((PROMPTS[:4], PROMPTS[4:])):
            first, second = ("ours", "peer") if (i + k) % 2 == 0 else ("peer", "ours")
            steps = {}
            for side in (first, second):
                client, name = sides[side]
                tally = conc.ours if side == "ours" else conc.peer
                results, wall = await concurrent(client, name, batch, max_tokens)
                steps[side] = tally.add(results, wall)
            conc.step(steps["ours"], steps["peer"])

    print()
    report(f"Sequential: one client, {len(PROMPTS) * rounds} requests per server", seq)
    print()
    report(
        f"Concurrent: 4 clients at once, {len(PROMPTS) * rounds} requests per server "
        "(TTFT includes waiting for the model)",
        conc,
    )
    await ours.close()
    await peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from opsdash.catalog.demo import fetch_demo_model

    smol = fetch_demo_model(REPO / ".cache" / "demo")
    cpus = os.cpu_count() or 1
    threads, batch_threads = max(cpus // 2, 1), cpus
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "root").mkdir()
        placed = work / "root" / smol.name
        try:
            os.link(smol, placed)
        except OSError:
            shutil.copyfile(smol, placed)
        env = os.environ | {
            "OPSDASH_DATA_DIR": str(work / "data"),
            "OPSDASH_MODEL_ROOTS": str(work / "root"),
            "OPSDASH_MIN_FREE_BYTES": "0",
            "OPSDASH_QUEUE_DEPTH": "8",
        }
        manage(env, "migrate", "-v0")
        manage(env, "install_model", str(placed), "--name", "SmolLM2-135M-Instruct")
        key = (
            manage(env, "create_api_key", "playground", "--name", "bench").strip().splitlines()[-1]
        )

        ours_port, peer_port = free_port(), free_port()
        uvicorn = str(Path(sys.executable).parent / "uvicorn")
        ours = subprocess.Popen(
            [uvicorn, "--host", "127.0.0.1", "--port", str(ours_port), "--log-level", "warning"]
            + ["opsdash.asgi:application"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        workaround = amx_cpu()
        peer_command = [
            *(
                [sys.executable, "-c", PEER_LAUNCHER]
                if workaround
                else [sys.executable, "-m", "llama_cpp.server"]
            ),
            "--model",
            str(smol),
            "--model_alias",
            PEER_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(peer_port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(batch_threads),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ]
        peer = subprocess.Popen(
            peer_command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until_up(f"http://127.0.0.1:{ours_port}/healthz", ours)
            wait_until_up(f"http://127.0.0.1:{peer_port}/v1/models", peer)
            models = urllib.request.Request(
                f"http://127.0.0.1:{ours_port}/v1/models",
                headers={"Authorization": f"Bearer {key}"},
            )
            with urllib.request.urlopen(models) as answer:
                model = json.load(answer)["data"][0]["id"]
            print(f"SmolLM2-135M-Instruct Q4_1 ({smol.name}); {cpus} CPUs")
            print(
                f"Both: n_ctx 2048, {threads} decode / {batch_threads} prompt threads, "
                f"temperature 0, seed 7, max_tokens {args.max_tokens}, streaming chat completions"
            )
            print(
                "Peer: llama_cpp.server "
                + (
                    "through a launcher with use_extra_bufts = False (this CPU has AMX; the stock "
                    "server segfaults on its first multi-token prompt)"
                    if workaround
                    else "as installed"
                )
                + "; --interrupt_requests False"
            )
            asyncio.run(
                measure(
                    f"http://127.0.0.1:{ours_port}/v1",
                    key,
                    model,
                    f"http://127.0.0.1:{peer_port}/v1",
                    max_tokens=args.max_tokens,
                    rounds=args.rounds,
                )
            )
            if peer.poll() is not None:
                print(f"The peer exited with status {peer.returncode} during the run.")
            ledger = sqlite3.connect(work / "data" / "opsdash.sqlite3")
            runner_ttfts = [
                row[0]
                for row in ledger.execute(
                    "SELECT ttft_ms FROM runs_run WHERE source = 'gateway' AND status = 'ok' "
                    "ORDER BY id LIMIT -1 OFFSET 1"  # the warm-up loaded the model
                )
            ]
            print(
                f"\nOpsDash's ledger: {len(runner_ttfts)} runs; the runner's own TTFT "
                "(request sent to the model process → first text back) median "
                f"{statistics.median(runner_ttfts):.0f} ms over all modes; the rest of the "
                "OpsDash TTFT is HTTP, Django, the key check and the run row."
            )
        finally:
            for process in (ours, peer):
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)


if __name__ == "__main__":
    main()
