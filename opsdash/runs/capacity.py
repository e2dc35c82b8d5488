"""How many requests a model's runner decodes together, and the memory that takes.

One place for the figure the run path loads a model with (``services.model_spec``), the node
a placement tells (``fleet.placements.placement_spec``), the Batch API worker's concurrency
and the model page's "will it fit" verdict, so none of them can disagree.

A llama.cpp runner decodes up to ``OPSDASH_PARALLEL_SEQUENCES`` requests in one batch, each
with a context window of its own, so its KV cache is that many times one request's; where
that would not fit ``OPSDASH_MEMORY_BUDGET_BYTES`` it gets fewer sequences, down to one.
ctransformers decodes one request at a time.

Kept free of the run path's imports (supervisor, fleet routing) because ``fleet.placements``,
which the run path imports, needs it too.
"""

from __future__ import annotations

from django.conf import settings

from inference import formats
from inference.backends.llama_cpp import context_length_for
from opsdash.catalog.models import LocalModel

#: The backend that decodes several sequences together; every other one runs one at a time.
BATCHING_BACKEND = "llama_cpp"
#: ``LoadOptions`` refuses more (inference.backends.base).
MAX_PARALLEL_SEQUENCES = 256


def _metadata(model: LocalModel) -> formats.ModelMetadata | None:
    if not model.metadata:
        return None
    try:
        return formats.ModelMetadata.from_dict(model.metadata)
    except (TypeError, ValueError, KeyError):
        return None


def sequence_context_length(model: LocalModel) -> int | None:
    """The context one request gets when the run path loads ``model`` (it sets none itself):
    for llama.cpp the backend's own rule, from the stored metadata
    (``llama_cpp.context_length_for``); other backends use the model's trained context."""
    metadata = _metadata(model)
    if metadata is None:
        return None
    if model.backend != BATCHING_BACKEND:
        return metadata.context_length or None
    return context_length_for(metadata)


def memory_estimate(
    model: LocalModel, *, parallel_sequences: int | None = None
) -> formats.MemoryEstimate | None:
    """The memory ``model`` holds loaded with ``parallel_sequences`` (default: what it gets,
    ``parallel_sequences(model)``) at the context the runner gives each; None without
    metadata to estimate from."""
    metadata = _metadata(model)
    if metadata is None:
        return None
    n = parallel_sequences if parallel_sequences is not None else _parallel(model, metadata)
    return formats.estimate_memory(
        metadata, context_length=sequence_context_length(model), parallel_sequences=n
    )


def parallel_sequences(model: LocalModel) -> int:
    """How many requests ``model``'s runner decodes together: ``OPSDASH_PARALLEL_SEQUENCES``
    for a llama.cpp model, fewer (down to 1) while its memory estimate with that many
    sequences exceeds ``OPSDASH_MEMORY_BUDGET_BYTES``; 1 for ctransformers."""
    return _parallel(model, _metadata(model))


def _parallel(model: LocalModel, metadata: formats.ModelMetadata | None) -> int:
    if model.backend != BATCHING_BACKEND:
        return 1
    wanted = min(int(settings.PARALLEL_SEQUENCES), MAX_PARALLEL_SEQUENCES)
    if metadata is None:
        return wanted  # nothing to estimate from: the runner's own budget check decides
    context = sequence_context_length(model)
    for n in range(wanted, 1, -1):
        estimate = formats.estimate_memory(metadata, context_length=context, parallel_sequences=n)
        if estimate.total_bytes <= settings.MEMORY_BUDGET_BYTES:
            return n
    return 1


def estimated_bytes(model: LocalModel, *, parallel_sequences: int) -> int:
    """What the supervisor's budget counts for ``model`` until its runner's RSS is measured:
    the estimate with its parallel sequences, or the file's size without metadata."""
    estimate = memory_estimate(model, parallel_sequences=parallel_sequences)
    return estimate.total_bytes if estimate is not None else model.size_bytes or 0


def decoding_sentence(model: LocalModel) -> str:
    """What the model page says about how many requests ``model`` serves at once."""
    if model.backend and model.backend != BATCHING_BACKEND:
        return f"{model.backend} runs one request at a time; others wait in the queue."
    n, wanted = parallel_sequences(model), int(settings.PARALLEL_SEQUENCES)
    if n < min(wanted, MAX_PARALLEL_SEQUENCES):
        return (
            f"Decodes up to {n} request{'s' if n != 1 else ''} together: "
            f"OPSDASH_PARALLEL_SEQUENCES asks for {wanted}, but the KV cache for more would "
            "not fit OPSDASH_MEMORY_BUDGET_BYTES; others wait in the queue."
        )
    if n == 1:
        return "Decodes one request at a time (OPSDASH_PARALLEL_SEQUENCES is 1)."
    return f"Decodes up to {n} requests together (OPSDASH_PARALLEL_SEQUENCES)."
