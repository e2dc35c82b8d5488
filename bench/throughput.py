"""Throughput with several sequences at once: llama.cpp's ceiling, OpsDash and its peer, one run.

SmolLM2-135M-Instruct on this machine, the same threads and the same context per sequence on
all three, measured back to back at 1, 4 and 8 sequences (clients):

1. ceiling: llama.cpp's own batched decode in a raw ``llama_decode`` loop in this process
   (llama-cpp-python's low-level API): one KV sequence per prompt, each prompt prefilled, then
   one token per sequence per step decoded together with its logits computed, no sampling (each
   sequence is fed one fixed token) and no HTTP. Aggregate tokens/s of the decode steps.
2. OpsDash: uvicorn serving ``opsdash.asgi:application`` (``OPSDASH_PARALLEL_SEQUENCES=8``), N
   concurrent streaming ``/v1/chat/completions`` clients (``openai.AsyncOpenAI``), each sending
   its requests one after another; aggregate tokens/s = completion tokens the server reported
   (``stream_options.include_usage``) over the wall time from the first request sent to the
   last answer ended. Distinct prompts that make the model talk, temperature 0.7, a seed per
   request, a fixed ``max_tokens``; a request that stops early at its end-of-text simply counts
   fewer tokens: nothing relies on how long the model keeps talking.
3. peer: llama-cpp-python's own server (``python -m llama_cpp.server``, same model, threads and
   n_ctx per sequence), the same clients. It decodes one request at a time. Started as
   bench/gateway.py starts it: through a launcher with ``use_extra_bufts = False`` on CPUs with
   AMX (llama.cpp's AMX buffer type crashes there, see ``inference/backends/llama_cpp.py``),
   ``--interrupt_requests False`` (else a new request aborts the one streaming). It has no
   ``include_usage``; it sends one chunk per token, so its chunks are its tokens.

Then a batch job: N requests (200) through the Batch API with the official client
(``files.create``, ``batches.create``, ``batches.retrieve`` until it ends, ``files.content``),
timed from ``batches.create`` to the poll that saw it end, against the same N requests sent one by
one to ``/v1/chat/completions`` by one client. Tokens/s of each, from the usage OpsDash reported.

Every step runs on the three sides one right after the other (the order rotating between
rounds), so the median of the per-round ratios is the figure least moved by other work on a
shared machine; totals are printed too. Goals (issue 14): at 1 client OpsDash >= 1.0x the peer;
at 4 and 8 clients >= 0.85x the ceiling; the batch job >= 0.85x the 8-sequence ceiling and
>= 1.3x one by one.

On a 2-core machine the ceiling has both cores to itself, while OpsDash's HTTP server and its
8 streaming clients run on the same two: with 2 batch threads (llama-cpp-python's default
here) OpsDash measured 0.66x / 0.54x the ceiling at 4 / 8, and with ``--batch-threads 1`` on
all three sides (a core left for the server and clients) 1.05x / 0.88x, at about the same
OpsDash tokens/s either way (AMD EPYC, 2026-12-02, ``--quick``).

    .venv/bin/python bench/throughput.py [--quick] [--threads 1] [--batch-threads 2]
        [--max-tokens 128] [--per-client 2]
        [--rounds 2] [--batch-requests 200] [--batch-max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gateway import PEER_ALIAS, PEER_LAUNCHER, free_port, manage, wait_until_up  # noqa: E402

SEQUENCES = (1, 4, 8)
CONTEXT_PER_SEQUENCE = 2048  # the peer's n_ctx; OpsDash's and the ceiling's per sequence
SUBJECTS = [
    "why the sky is blue",
    "how a bicycle stays upright",
    "the water cycle",
    "how bees make honey",
    "why the moon has phases",
    "how a refrigerator keeps food cold",
    "the life of a lighthouse keeper",
    "how bread rises",
    "why cats purr",
    "how volcanoes form",
    "the history of the printing press",
    "how a seed becomes a tree",
    "why leaves change colour in autumn",
    "how a train finds its way",
    "the daily routine of a baker",
    "how rainbows appear",
    "why we need sleep",
    "how a compass works",
    "the journey of a letter through the post",
    "how clouds float",
]
ASKS = [
    "Explain {} to a ten-year-old in a few paragraphs.",
    "Write a short story about {}.",
    "Give a detailed, friendly lesson on {}.",
    "Describe {} step by step.",
    "Write a blog post about {}.",
    "Tell me everything you know about {}.",
    "Write a school report on {}.",
    "Write a poem and then an explanation about {}.",
    "Explain {} as if you were a tour guide.",
    "List ten facts about {}, each with a sentence of explanation.",
]


def prompt(i: int) -> str:
    """The i-th of 200 distinct prompts that ask for a long answer."""
    return ASKS[(i // len(SUBJECTS)) % len(ASKS)].format(SUBJECTS[i % len(SUBJECTS)])


def chat_text(text: str) -> str:
    # SmolLM2's chat template for one user turn, so the ceiling prefills what the servers do.
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


# --- 1. the ceiling: raw llama_decode --------------------------------------------------------


class Ceiling:
    """SmolLM2 in a llama.cpp context with one KV sequence per prompt, decoded by hand."""

    def __init__(
        self, path: Path, *, threads: tuple[int, int], n_seq_max: int, kv_unified: bool
    ) -> None:
        import llama_cpp

        from inference.backends import llama_cpp as backend

        lib = llama_cpp.llama_cpp
        self.lib = lib
        backend._capture_native_log(llama_cpp)  # llama.cpp's log: errors only, as OpsDash's
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        self.avoid_amx = backend._cpu_has_amx(llama_cpp)
        if self.avoid_amx:
            model_params.use_extra_bufts = False  # as OpsDash's backend loads it
        self.model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx = CONTEXT_PER_SEQUENCE * n_seq_max
        params.n_seq_max = n_seq_max
        params.kv_unified = kv_unified
        params.n_batch = params.n_ubatch = 2048  # every prompt of a step prefilled in one batch
        # As OpsDash's runner and the peer: a step of one sequence runs on n_threads, a step of
        # several (a multi-token batch) on n_threads_batch.
        params.n_threads, params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the context")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_seq_max = n_seq_max
        self.batch = lib.llama_batch_init(params.n_batch, 0, n_seq_max)
        self.fixed_token = self.tokenize(" the")[-1]

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        room = len(data) + 8
        tokens = (self.lib.llama_token * room)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), tokens, room, True, True)
        if n < 0:
            raise RuntimeError(f"tokenizing {text!r} needed {-n} tokens")
        return list(tokens[:n])

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Put (token, position, sequence, logits) entries in the batch."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(entries)

    def _decode(self) -> None:
        status = self.lib.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def run(self, prompts: list[str], steps: int) -> tuple[int, float]:
        """(tokens, seconds) of ``steps`` decode steps of one token for each prompt's sequence."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        tokenized = [self.tokenize(chat_text(p)) for p in prompts]
        self._fill(
            [
                (token, pos, seq, pos == len(tokens) - 1)
                for seq, tokens in enumerate(tokenized)
                for pos, token in enumerate(tokens)
            ]
        )
        self._decode()
        start = time.perf_counter()
        for step in range(steps):
            self._fill(
                [
                    (self.fixed_token, len(tokens) + step, seq, True)
                    for seq, tokens in enumerate(tokenized)
                ]
            )
            self._decode()
        return steps * len(prompts), time.perf_counter() - start

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


# --- 2 and 3. streaming clients against a server ---------------------------------------------


async def streamed_tokens(client: Any, model: str, text: str, seed: int, max_tokens: int) -> int:
    """Completion tokens of one streamed chat completion, as the server counts them."""
    usage_asked = model != PEER_ALIAS
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_tokens,
        temperature=0.7,
        seed=seed,
        stream=True,
        **({"stream_options": {"include_usage": True}} if usage_asked else {}),
    )
    chunks, usage = 0, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
    if usage_asked and usage is None:
        raise RuntimeError("OpsDash's stream ended without its usage chunk")
    return int(usage.completion_tokens) if usage is not None else chunks


async def clients(
    client: Any, model: str, n: int, *, per_client: int, max_tokens: int, round_: int
) -> tuple[int, float]:
    """(tokens, seconds) for ``n`` clients at once, each sending ``per_client`` requests."""

    async def one_client(c: int) -> int:
        total = 0
        for r in range(per_client):
            i = (round_ * 8 + c + r * n) % 200
            total += await streamed_tokens(client, model, prompt(i), 1000 + i, max_tokens)
        return total

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one_client(c) for c in range(n)))
    return sum(tokens), time.perf_counter() - start


# --- the table -------------------------------------------------------------------------------


@dataclass
class Cell:
    """One side at one width: tokens over seconds, summed over rounds, and each round's rate."""

    tokens: int = 0
    seconds: float = 0.0
    rates: list[float] = field(default_factory=list)

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds
        self.rates.append(tokens / seconds)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def ratios(a: Cell, b: Cell) -> tuple[float, float]:
    """(ratio of totals, median of the per-round ratios) of a over b."""
    pairs = [x / y for x, y in zip(a.rates, b.rates, strict=True)]
    return a.rate / b.rate, statistics.median(pairs)


def verdict(value: float, goal: float) -> str:
    return f"(goal >= {goal:g}: {'met' if value >= goal else 'NOT met'})"


# --- the batch job ---------------------------------------------------------------------------


def batch_bodies(model: str, count: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "seed": 5000 + i,
        }
        for i in range(count)
    ]


async def one_by_one(client: Any, bodies: list[dict[str, Any]]) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = 0
    for body in bodies:
        answer = await client.chat.completions.create(**body)
        tokens += answer.usage.completion_tokens
    return tokens, time.perf_counter() - start


def batch_job(client: Any, bodies: list[dict[str, Any]]) -> tuple[int, float, int, int]:
    """(tokens, seconds, ok, failed) of the bodies run through the Batch API."""
    lines = [
        json.dumps(
            {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}
        )
        for i, b in enumerate(bodies)
    ]
    upload = client.files.create(
        file=("throughput.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    start = time.perf_counter()
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    shown = -1.0
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.25)
        batch = client.batches.retrieve(batch.id)
        elapsed = time.perf_counter() - start
        if elapsed - shown >= 15:
            counts = batch.request_counts
            done = f"{counts.completed} done, {counts.failed} failed" if counts else "no counts"
            print(f"    {elapsed:5.0f} s: {batch.status}, {done} of {len(bodies)}", flush=True)
            shown = elapsed
    seconds = time.perf_counter() - start
    if batch.status != "completed":
        raise RuntimeError(f"the batch ended {batch.status}: {batch.errors}")
    tokens = ok = failed = 0
    if batch.output_file_id:
        for line in client.files.content(batch.output_file_id).text.splitlines():
            if not line.strip():
                continue
            response = json.loads(line)["response"]
            if response and response["status_code"] == 200:
                ok += 1
                tokens += response["body"]["usage"]["completion_tokens"]
            else:
                failed += 1
    if batch.error_file_id:
        errors = [e for e in client.files.content(batch.error_file_id).text.splitlines() if e]
        failed += len(errors)
        for line in errors[:3]:
            print(f"    error line: {line[:300]}")
    return tokens, seconds, ok, failed


# --- the run ---------------------------------------------------------------------------------


def start_servers(
    work: Path,
    smol: Path,
    threads: tuple[int, int],
    avoid_amx: bool,
    started: list[subprocess.Popen[bytes]],
) -> tuple[str, str, str]:
    """OpsDash and the peer started on free ports (each added to ``started`` at once, for the
    caller to stop whatever happens): (ours_url, peer_url, key)."""
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
        "OPSDASH_PARALLEL_SEQUENCES": "8",
        "OPSDASH_QUEUE_DEPTH": "32",
    }
    manage(env, "migrate", "-v0")
    manage(env, "install_model", str(placed), "--name", "SmolLM2-135M-Instruct")
    key = manage(env, "create_api_key", "playground", "--name", "bench").strip().splitlines()[-1]
    ours_port, peer_port = free_port(), free_port()
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    log = (work / "opsdash.log").open("wb")
    ours = subprocess.Popen(
        [uvicorn, "--host", "127.0.0.1", "--port", str(ours_port), "--log-level", "warning"]
        + ["opsdash.asgi:application"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started.append(ours)
    peer = subprocess.Popen(
        [
            *(
                [sys.executable, "-c", PEER_LAUNCHER]
                if avoid_amx
                else [sys.executable, "-m", "llama_cpp.server"]
            ),
            *("--model", str(smol), "--model_alias", PEER_ALIAS),
            *("--host", "127.0.0.1", "--port", str(peer_port)),
            *("--n_ctx", str(CONTEXT_PER_SEQUENCE)),
            *("--n_threads", str(threads[0]), "--n_threads_batch", str(threads[1])),
            *("--interrupt_requests", "False", "--verbose", "False"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(peer)
    wait_until_up(f"http://127.0.0.1:{ours_port}/healthz", ours)
    wait_until_up(f"http://127.0.0.1:{peer_port}/v1/models", peer)
    return f"http://127.0.0.1:{ours_port}/v1", f"http://127.0.0.1:{peer_port}/v1", key


def measure(args: argparse.Namespace, smol: Path, work: Path) -> None:
    import openai

    threads = (args.threads, args.batch_threads)
    ceiling = Ceiling(smol, threads=threads, n_seq_max=8, kv_unified=args.kv_unified)
    started: list[subprocess.Popen[bytes]] = []
    try:
        ours_url, peer_url, key = start_servers(work, smol, threads, ceiling.avoid_amx, started)
        models = urllib.request.Request(
            f"{ours_url}/models", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(models) as answer:
            model = json.load(answer)["data"][0]["id"]
        print(
            f"SmolLM2-135M-Instruct Q4_1 ({smol.name}); {os.cpu_count()} CPUs; {args.threads} "
            f"decode / {args.batch_threads} batch threads on all three; n_ctx "
            f"{CONTEXT_PER_SEQUENCE} per sequence; max_tokens {args.max_tokens}, temperature 0.7, "
            f"a seed per request; {args.per_client} request(s) per client per round, "
            f"{args.rounds} round(s)"
        )
        launcher = " through the use_extra_bufts = False launcher (AMX CPU)"
        print(
            f"Peer: llama_cpp.server{launcher if ceiling.avoid_amx else ''}; "
            f"--interrupt_requests False. Ceiling: kv_unified {args.kv_unified}"
        )
        ceiling_8 = asyncio.run(sides_table(args, ceiling, model, ours_url, key, peer_url))
        ceiling.close()

        bodies = batch_bodies(model, args.batch_requests, args.batch_max_tokens)
        print(
            f"\nBatch job: {len(bodies)} chat requests, max_tokens {args.batch_max_tokens}, "
            "temperature 0.7, a seed each"
        )
        sync = openai.OpenAI(base_url=ours_url, api_key=key, max_retries=0, timeout=600)
        b_tokens, b_seconds, b_ok, b_failed = batch_job(sync, bodies)
        print(f"  Batch API: {b_ok} ok, {b_failed} failed, {b_tokens} tokens in {b_seconds:.1f} s")
        aclient = openai.AsyncOpenAI(base_url=ours_url, api_key=key, max_retries=0, timeout=600)
        s_tokens, s_seconds = asyncio.run(one_by_one(aclient, bodies))
        print(f"  one by one: {s_tokens} tokens in {s_seconds:.1f} s")
        batch_rate, seq_rate = b_tokens / b_seconds, s_tokens / s_seconds
        print(f"\n  {'':34}{'tokens/s':>10}")
        print(f"  {'Batch API (' + str(len(bodies)) + ' requests)':34}{batch_rate:10.1f}")
        print(f"  {'one by one, one client':34}{seq_rate:10.1f}")
        print(f"  {'ceiling, 8 sequences':34}{ceiling_8:10.1f}")
        r = batch_rate / ceiling_8
        print(f"  batch / ceiling at 8:   {r:6.3f} {verdict(r, 0.85)}")
        r = batch_rate / seq_rate
        print(f"  batch / one by one:     {r:6.3f} {verdict(r, 1.3)}")
        for name, process in zip(("OpsDash", "The peer"), started, strict=True):
            if process.poll() is not None:
                print(f"{name} exited with status {process.returncode} during the run.")
    finally:
        for process in started:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


async def sides_table(
    args: argparse.Namespace, ceiling: Ceiling, model: str, ours_url: str, key: str, peer_url: str
) -> float:
    """Print the three sides' table and ratios; the 8-sequence ceiling, for the batch job's."""
    import openai

    ours = openai.AsyncOpenAI(base_url=ours_url, api_key=key, max_retries=0, timeout=600)
    peer = openai.AsyncOpenAI(base_url=peer_url, api_key="unused", max_retries=0, timeout=600)
    # Warm both servers (OpsDash's first request loads its runner) and the ceiling.
    await streamed_tokens(ours, model, "Hello!", 1, 8)
    await streamed_tokens(peer, PEER_ALIAS, "Hello!", 1, 8)
    ceiling.run([prompt(0)], 8)

    cells = {(side, n): Cell() for side in ("ceiling", "ours", "peer") for n in SEQUENCES}
    per = args.per_client
    for round_ in range(args.rounds):
        for n in SEQUENCES:
            order = ["ceiling", "ours", "peer"]
            order = order[round_ % 3 :] + order[: round_ % 3]
            for side in order:
                if side == "ceiling":
                    prompts = [prompt(round_ * 8 + c) for c in range(n)]
                    # As many tokens per sequence as each client asks for over its requests.
                    tokens, seconds = await asyncio.to_thread(
                        ceiling.run, prompts, args.max_tokens * per
                    )
                else:
                    client, name = (ours, model) if side == "ours" else (peer, PEER_ALIAS)
                    tokens, seconds = await clients(
                        client, name, n, per_client=per, max_tokens=args.max_tokens, round_=round_
                    )
                cells[side, n].add(tokens, seconds)
                print(
                    f"  round {round_ + 1}, {n} at once, {side:7}: {tokens:5d} tokens in "
                    f"{seconds:6.1f} s = {tokens / seconds:6.1f} tok/s",
                    flush=True,
                )
    await ours.close()
    await peer.close()

    labels = {
        "ceiling": "ceiling: raw llama_decode",
        "ours": "OpsDash /v1, streaming clients",
        "peer": "peer: llama_cpp.server",
    }
    print(f"\nAggregate tokens/s{'':18}" + "".join(f"{f'{n} at once':>12}" for n in SEQUENCES))
    for side, label in labels.items():
        print(f"  {label:34}" + "".join(f"{cells[side, n].rate:12.1f}" for n in SEQUENCES))
    goals: list[tuple[str, Callable[[], tuple[float, float]], float]] = [
        ("OpsDash / peer at 1", lambda: ratios(cells["ours", 1], cells["peer", 1]), 1.0),
        ("OpsDash / ceiling at 4", lambda: ratios(cells["ours", 4], cells["ceiling", 4]), 0.85),
        ("OpsDash / ceiling at 8", lambda: ratios(cells["ours", 8], cells["ceiling", 8]), 0.85),
        ("OpsDash / peer at 4", lambda: ratios(cells["ours", 4], cells["peer", 4]), 0.0),
        ("OpsDash / peer at 8", lambda: ratios(cells["ours", 8], cells["peer", 8]), 0.0),
        ("ceiling 4 / ceiling 1", lambda: ratios(cells["ceiling", 4], cells["ceiling", 1]), 0.0),
        ("ceiling 8 / ceiling 1", lambda: ratios(cells["ceiling", 8], cells["ceiling", 1]), 0.0),
    ]
    print("Ratios (totals; median of the per-round ratios)")
    for label, compute, goal in goals:
        total, median = compute()
        note = verdict(median, goal) if goal else "(what batching is worth here)"
        if label.startswith("OpsDash / peer at ") and label != "OpsDash / peer at 1":
            note = "(no goal: ahead by what batching is worth)"
        print(f"  {label:24} {total:6.3f}; {median:6.3f}  {note}")
    return cells["ceiling", 8].rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24-request batch, 64 tokens, 1 round")
    cpus = os.cpu_count() or 1
    # llama-cpp-python's defaults, which OpsDash's runner keeps (no threads set on the model):
    # one sequence decodes on half the CPUs, a multi-token batch (a prompt, or a step of several
    # sequences) on all of them. The ceiling and the peer get the same.
    parser.add_argument("--threads", type=int, default=max(cpus // 2, 1), help="decode threads")
    parser.add_argument("--batch-threads", type=int, default=cpus, help="batch threads")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-client", type=int, default=2, help="requests per client per round")
    parser.add_argument("--batch-requests", type=int, default=200)
    parser.add_argument("--batch-max-tokens", type=int, default=64)
    parser.add_argument(
        "--kv-unified",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the ceiling's sequences share one KV stream (OpsDash's runner gives each its own)",
    )
    args = parser.parse_args()
    if args.quick:
        args.max_tokens, args.rounds, args.per_client = 64, 1, 1
        args.batch_requests, args.batch_max_tokens = 24, 64

    from opsdash.catalog.demo import fetch_demo_model

    smol = fetch_demo_model(REPO / ".cache" / "demo")
    # A SIGTERM (timeout, Ctrl-C in a pipeline) still stops both servers and removes the data.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        measure(args, smol, Path(tmp))


if __name__ == "__main__":
    main()
