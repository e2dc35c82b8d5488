"""How much memory a loaded model holds, and whether that fits what a machine has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inference.formats.metadata import ModelMetadata

FitVerdict = Literal["fits", "tight", "does not fit"]

_OVERHEAD_BYTES = 128 * 1024 * 1024  # a runner process plus llama.cpp's compute buffers


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model is expected to hold.

    ``kv_cache_bytes`` is the cache of all ``parallel_sequences`` together, each sequence
    holding ``context_length`` tokens of its own.
    """

    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    total_bytes: int
    context_length: int | None = None
    parallel_sequences: int = 1


def estimate_memory(
    metadata: ModelMetadata, *, context_length: int | None = None, parallel_sequences: int = 1
) -> MemoryEstimate:
    """Estimate the memory a loaded model holds: weights, f16 KV cache, and a fixed overhead.

    ``context_length`` is the context one request may use (default: the model's own);
    ``parallel_sequences`` how many requests the runner decodes together. Each gets a window
    of its own (the runner allocates ``context_length × parallel_sequences`` positions), so the
    KV cache grows with it while the weights are shared.
    """
    if parallel_sequences < 1:
        raise ValueError(f"parallel_sequences must be at least 1; got {parallel_sequences!r}.")
    weights = metadata.size_bytes  # llama.cpp maps the tensor data, which is nearly all the file
    ctx = context_length or metadata.context_length
    layers, embd, heads = metadata.block_count, metadata.embedding_length, metadata.head_count
    kv_cache = 0
    if ctx and layers and embd and heads:
        kv_heads = metadata.head_count_kv or heads
        # K and V, per layer and position, kv_heads × head size values, 2 bytes each (f16).
        kv_cache = 2 * layers * ctx * (embd * kv_heads // heads) * 2 * parallel_sequences
    return MemoryEstimate(
        weights_bytes=weights,
        kv_cache_bytes=kv_cache,
        overhead_bytes=_OVERHEAD_BYTES,
        total_bytes=weights + kv_cache + _OVERHEAD_BYTES,
        context_length=ctx or None,
        parallel_sequences=parallel_sequences,
    )


def fit_verdict(total_bytes: int, available_bytes: int) -> FitVerdict:
    """Say whether a model fits in the memory available: within 70% fits, within 100% is tight."""
    if total_bytes * 10 <= available_bytes * 7:
        return "fits"
    if total_bytes <= available_bytes:
        return "tight"
    return "does not fit"
