"""Several requests decoded together in one llama.cpp context: llama.cpp's parallel slots.

The context is created with ``n_seq_max`` KV sequences of ``context_length`` tokens each
(llama.cpp's non-unified KV cache: one stream per sequence, so a sequence attends over exactly
the cells it would have alone; see ``_with_sequences`` in ``llama_cpp``). A ``Sequence`` is
one request: its prompt is decoded alone,
in chunks of ``n_batch`` tokens, the way llama-cpp-python does it; after that, every
``step()`` decodes the next token of every open sequence in one ``llama_decode`` call and
samples each from its own logits with its own sampler chain (its own parameters and seed).

The sampler chain is llama-cpp-python's (``Llama._init_sampler``): penalties over the last
64 tokens, then greedy at temperature 0, else top-k, typical (1.0), top-p, min-p (0.05),
temperature and a seeded draw. So a sequence decoded alone writes what ``llama_cpp.Llama``
writes for the same request, and the tests hold it to that.

Batched matrix kernels may round differently from one-row ones, so a greedy answer can
differ between alone and batched; ``bench/batch_consistency.py`` measures how often.

Not thread-safe: one thread (the runner's worker) drives a decoder.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.backends.base import (
    Event,
    GenerationParams,
    TokenStream,
)
from inference.errors import BackendError

#: llama-cpp-python's ``last_n_tokens_size`` default: how many recent tokens the repeat
#: penalty looks at.
PENALTY_LAST_N = 64
#: llama-cpp-python's defaults for the parameters OpsDash does not expose.
MIN_P = 0.05
TYPICAL_P = 1.0


@dataclass(eq=False)
class Sequence:
    """One request being decoded: its KV sequence ``seq_id``, its sampler and its stream."""

    seq_id: int
    prompt: list[int]
    params: GenerationParams
    seed: int
    stream: TokenStream
    sampler: Any
    #: Tokens of this sequence in the KV cache.
    n_past: int = 0
    #: Sampled, fed to the stream, not yet decoded: what the next step decodes.
    next_token: int | None = None
    #: CPU seconds of this process attributed to the sequence (its share of each decode).
    cpu_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.stream.finished is not None


class BatchDecoder:
    """Opens, steps and closes up to ``parallel`` sequences of one llama.cpp context."""

    def __init__(
        self,
        *,
        lib: Any,
        llm: Any,
        parallel: int,
        default_seed: int | None,
        piece: Callable[[int], bytes],
        is_end: Callable[[int], bool],
        threads: tuple[int, int],
    ) -> None:
        self._lib = lib
        self._llm = llm
        self._ctx = llm.ctx
        self.parallel = parallel
        self._default_seed = default_seed
        self._piece = piece
        self._is_end = is_end
        self._threads = threads
        self._n_batch = max(int(llm.n_batch), 1)
        self._n_vocab = int(llm.n_vocab())
        self.open_sequences: list[Sequence] = []
        self._batch = lib.llama_batch_init(max(self._n_batch, parallel), 0, 1)
        self._closed = False

    @property
    def free_slots(self) -> int:
        return self.parallel - len(self.open_sequences)

    # --- one sequence --------------------------------------------------------------------------

    def open(self, prompt: list[int], params: GenerationParams, *, room: int) -> Sequence:
        """Take a free KV sequence for a request. ``room``: context tokens left after the prompt.

        A request without a seed gets a random one here, kept on the sequence, so that redoing
        it (after it was set back to make room) writes the same text.
        """
        taken = {s.seq_id for s in self.open_sequences}
        free = [seq_id for seq_id in range(self.parallel) if seq_id not in taken]
        if not free:
            raise BackendError("Every parallel sequence of this model is in use.")
        seed = params.seed if params.seed is not None else self._default_seed
        if seed is None:
            seed = random.getrandbits(32)
        seq_id = free[0]  # the lowest: see ``step``
        self._clear(seq_id)
        sequence = Sequence(
            seq_id=seq_id,
            prompt=prompt,
            params=params,
            seed=seed,
            stream=TokenStream(
                piece=self._piece,
                is_end=self._is_end,
                params=params,
                prompt_tokens=len(prompt),
                room=room,
            ),
            sampler=self._sampler(params, seed),
        )
        self.open_sequences.append(sequence)
        return sequence

    def prefill(self, sequence: Sequence) -> list[Event]:
        """Decode the sequence's prompt (alone, in ``n_batch`` chunks) and sample its first
        token: the events that token gives."""
        cpu = time.process_time()
        self._set_threads(sequence.params.threads)
        prompt = sequence.prompt
        for start in range(0, len(prompt), self._n_batch):
            chunk = prompt[start : start + self._n_batch]
            self._fill([(token, start + i, sequence.seq_id) for i, token in enumerate(chunk)])
            self._decode()
        sequence.n_past = len(prompt)
        token = self._lib.llama_sampler_sample(sequence.sampler, self._ctx, -1)
        sequence.cpu_seconds += time.process_time() - cpu
        return self._feed(sequence, token)

    def cancel(self, sequence: Sequence) -> list[Event]:
        return sequence.stream.finish("cancelled")

    def close(self, sequence: Sequence) -> None:
        """Give the sequence's KV cells and slot back."""
        if sequence not in self.open_sequences:
            return
        self.open_sequences.remove(sequence)
        self._lib.llama_sampler_free(sequence.sampler)
        sequence.sampler = None
        self._clear(sequence.seq_id)

    # --- all of them -----------------------------------------------------------------------------

    def step(self) -> list[tuple[Sequence, list[Event]]]:
        """Decode the next token of every open, unfinished sequence in one batch, sample each
        one's following token, and return each sequence's events."""
        # In order of their KV stream: llama.cpp decodes one contiguous, ascending run of
        # streams per micro-batch, so out of order they would go one by one (measured: 8
        # sequences at 60 tokens/s instead of 140 on 2 cores). ``open`` hands out the lowest
        # free stream to keep the run contiguous.
        ready = sorted(
            (s for s in self.open_sequences if not s.finished and s.next_token is not None),
            key=lambda s: s.seq_id,
        )
        if not ready:
            return []
        cpu = time.process_time()
        threads = ready[0].params.threads if len(ready) == 1 else None
        self._set_threads(threads)
        self._fill([(s.next_token, s.n_past, s.seq_id) for s in ready])  # type: ignore[misc]
        self._decode()
        results = []
        for index, sequence in enumerate(ready):
            sequence.n_past += 1
            token = self._lib.llama_sampler_sample(sequence.sampler, self._ctx, index)
            results.append((sequence, self._feed(sequence, token)))
        share = (time.process_time() - cpu) / len(ready)
        for sequence in ready:
            sequence.cpu_seconds += share
        return results

    def close_all(self) -> None:
        for sequence in list(self.open_sequences):
            self.close(sequence)
        if not self._closed:
            self._lib.llama_batch_free(self._batch)
            self._closed = True

    # --- llama.cpp ------------------------------------------------------------------------------

    def _feed(self, sequence: Sequence, token: int) -> list[Event]:
        events = sequence.stream.feed(token)
        sequence.next_token = None if sequence.finished else token
        return events

    def _sampler(self, params: GenerationParams, seed: int) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        add(
            lib.llama_sampler_init_penalties(
                self._n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0
            )
        )
        if params.temperature == 0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(params.top_k))
            add(lib.llama_sampler_init_typical(TYPICAL_P, 1))
            add(lib.llama_sampler_init_top_p(params.top_p, 1))
            add(lib.llama_sampler_init_min_p(MIN_P, 1))
            add(lib.llama_sampler_init_temp(params.temperature))
            add(lib.llama_sampler_init_dist(seed))
        return chain

    def _fill(self, entries: list[tuple[int, int, int]]) -> None:
        """Put (token, position, sequence) entries in the batch; logits for each decode-step
        token, and for only the last of a prompt chunk (entries all of one sequence)."""
        batch = self._batch
        one_sequence = len({seq for _, _, seq in entries}) == 1 and len(entries) > 1
        for i, (token, position, seq) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = not one_sequence
        batch.logits[len(entries) - 1] = True
        batch.n_tokens = len(entries)

    def _decode(self) -> None:
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            reason = (
                "there was no room left in its context cache"
                if status == 1
                else f"llama_decode returned {status}"
            )
            raise BackendError(f"llama.cpp failed while generating: {reason}.")

    def _clear(self, seq_id: int) -> None:
        memory = self._lib.llama_get_memory(self._ctx)
        if memory is not None:
            self._lib.llama_memory_seq_rm(memory, seq_id, -1, -1)

    def _set_threads(self, threads: int | None) -> None:
        if threads is not None:
            self._lib.llama_set_n_threads(self._ctx, threads, threads)
        else:
            self._lib.llama_set_n_threads(self._ctx, *self._threads)
