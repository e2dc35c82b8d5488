"""The llama.cpp backend (llama-cpp-python): every GGUF architecture llama.cpp knows.

``llama_cpp`` is imported inside ``load`` only, so this module is cheap to import anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.backends.base import (
    Event,
    GenerationParams,
    LoadOptions,
    Metadata,
    ShouldStop,
    metadata_field,
    render_chat_template,
)
from inference.backends.llama_cpp_batch import BatchDecoder
from inference.errors import CONTEXT_FULL, BackendError, InferenceError

if TYPE_CHECKING:
    import llama_cpp

    from inference.formats import ModelMetadata

logger = logging.getLogger(__name__)

#: Context window used when ``LoadOptions.context_length`` is unset. Small enough that the KV
#: cache of a typical 7B model stays a few hundred MB; callers who know the model's trained
#: context and the memory budget pass their own.
DEFAULT_CONTEXT_LENGTH = 2048

#: ...except that a model whose KV cache for its whole trained context fits in this many bytes
#: gets that whole context: it costs next to nothing, and small long-context models are made
#: for it. (SmolLM2-135M at 8192 tokens needs 180 MiB, a 7B model at 2048 already 1 GiB.)
SMALL_KV_CACHE_BYTES = 32 * 2**20

NOT_INSTALLED = (
    "llama-cpp-python is not installed, so GGUF models cannot run; "
    "install it with `pip install llama-cpp-python`."
)


# ggml's log levels (ggml.h): WARN is 3, ERROR 4. llama-cpp-python 0.3.x maps them to an older
# numbering, so with verbose=False it hides errors and prints warnings; hence our own callback.
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5

#: Recent native log lines as (level, text), newest last; bounded so a chatty model cannot grow it.
_native_log: deque[tuple[int, str]] = deque(maxlen=64)
_log_callback: Any = None  # the ctypes callback must stay referenced for as long as it is set


def _capture_native_log(llama_cpp: Any) -> None:
    """Route llama.cpp's log through ``_native_log``; print only errors, to stderr.

    Load errors are the reason a person needs ("unknown model architecture: 'foo'"), but
    llama-cpp-python sends its loader's output to /dev/null when verbose=False; capturing the
    log callback keeps that text for the ``BackendError``.
    """
    global _log_callback
    if _log_callback is not None:
        return
    last_level = [_GGML_LOG_ERROR]

    def callback(level: int, text: bytes | None, user_data: Any) -> None:
        if level == _GGML_LOG_CONT:
            level = last_level[0]
        last_level[0] = level
        message = (text or b"").decode("utf-8", errors="replace")
        _native_log.append((level, message))
        if level == _GGML_LOG_ERROR:
            sys.stderr.write(message)

    native_callback = llama_cpp.llama_log_callback(callback)  # a ctypes function pointer
    llama_cpp.llama_log_set(native_callback, ctypes.c_void_p(0))
    _log_callback = native_callback


def _first_native_error() -> str | None:
    for level, message in _native_log:
        if level == _GGML_LOG_ERROR and message.strip():
            # Drop the C function name ("gguf_init_from_reader: ") and keep what went wrong.
            return re.sub(r"^\w+: ", "", message.strip())
    return None


class LlamaCppBackend:
    """Runs GGUF files through llama-cpp-python."""

    name = "llama_cpp"
    title = "llama.cpp"
    default_for = frozenset({"gguf"})

    def supports(self, metadata: Metadata) -> str | None:
        file_format = metadata_field(metadata, "format")
        if file_format in ("ggml", "ggmf", "ggjt"):
            return (
                "llama.cpp dropped legacy GGML support in 2023; use ctransformers, "
                "or convert the file to GGUF."
            )
        if file_format != "gguf":
            described = file_format or "of unknown format"
            return f"llama.cpp reads only GGUF files and this one is {described}."
        if metadata_field(metadata, "format_version") == 1:
            return (
                "llama.cpp no longer reads GGUF v1 files; convert the file to a current "
                "GGUF version, or run it with the ctransformers backend."
            )
        if not metadata_field(metadata, "architecture"):
            return (
                "The GGUF file names no architecture (general.architecture), so no backend "
                "can load it."
            )
        # Which architectures llama.cpp knows depends on the installed build; the trial
        # load at install time is the real test, so any later GGUF is accepted here.
        return None

    def load(self, path: Path, options: LoadOptions) -> LlamaCppModel:
        try:
            import llama_cpp
        except ImportError:
            raise BackendError(NOT_INSTALLED) from None

        path = Path(path)
        if not path.is_file():
            raise BackendError(f"The model file {path} does not exist.")

        notices: list[str] = []
        gpu_layers = options.gpu_layers
        if gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
            notices.append(
                "GPU layers were ignored because this llama-cpp-python build has no GPU "
                "support; the model runs on the CPU."
            )
            gpu_layers = 0
        parallel = options.parallel_sequences
        per_sequence = options.context_length or default_context_length(path)
        avoid_amx = _cpu_has_amx(llama_cpp)
        if avoid_amx:
            logger.info("AMX CPU: loading %s without llama.cpp's extra buffer types", path.name)
        _capture_native_log(llama_cpp)
        _native_log.clear()
        try:
            with contextlib.ExitStack() as stack:
                if avoid_amx:
                    stack.enter_context(_without_extra_buffer_types(llama_cpp))
                stack.enter_context(_with_sequences(llama_cpp, parallel))
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    # One stream of this many cells per sequence (_with_sequences).
                    n_ctx=per_sequence * parallel,
                    n_threads=options.threads,
                    n_threads_batch=options.threads,
                    n_gpu_layers=gpu_layers,
                    # Keeps llama.cpp's load banner off stderr; _capture_native_log keeps errors.
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            detail = _first_native_error() or str(exc)
            raise BackendError(
                f"llama.cpp could not load {path.name} ({detail}). The file may be damaged, or "
                "use an architecture or feature this build of llama.cpp does not know."
            ) from exc
        for notice in notices:
            logger.warning("%s: %s", path.name, notice)
        return LlamaCppModel(
            llm, seed=options.seed, notices=tuple(notices), parallel_sequences=parallel
        )


def default_context_length(path: Path) -> int:
    """The context a model gets when none is asked for: ``DEFAULT_CONTEXT_LENGTH`` tokens, or
    its whole trained context when that is longer and its KV cache stays within
    ``SMALL_KV_CACHE_BYTES``."""
    from inference.formats import read_metadata

    try:
        metadata = read_metadata(path)
    except InferenceError:
        return DEFAULT_CONTEXT_LENGTH  # llama.cpp's own load error will say what is wrong
    return context_length_for(metadata)


def context_length_for(metadata: ModelMetadata) -> int:
    """``default_context_length`` from a model's metadata (the catalogue keeps it, so the run
    path need not read the file)."""
    from inference.formats import estimate_memory

    trained = metadata.context_length or 0
    if trained <= DEFAULT_CONTEXT_LENGTH:
        return DEFAULT_CONTEXT_LENGTH
    kv_bytes = estimate_memory(metadata, context_length=trained).kv_cache_bytes
    return trained if 0 < kv_bytes <= SMALL_KV_CACHE_BYTES else DEFAULT_CONTEXT_LENGTH


def _cpu_has_amx(llama_cpp: Any) -> bool:
    info: bytes = llama_cpp.llama_print_system_info()
    return b"AMX_INT8 = 1" in info


@contextlib.contextmanager
def _without_extra_buffer_types(llama_cpp: Any) -> Iterator[None]:
    """Load with llama.cpp's extra CPU buffer types (AMX, repacked weights) turned off.

    Why: on CPUs with AMX, llama.cpp puts quantized weights in its AMX buffer type, and its
    AMX matrix multiply crashes (SIGSEGV) on the first multi-token batch
    (ggml-org/llama.cpp#20824, still open); seen here with SmolLM2 Q4_1 on a Xeon with
    AMX_INT8. Plain CPU buffers are slower to process long prompts but correct.
    llama_cpp.Llama has no argument for ``use_extra_bufts``, so the default-params function
    it calls is wrapped for the duration of the constructor.
    """
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def default_params() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = default_params
    try:
        yield
    finally:
        module.llama_model_default_params = original


@contextlib.contextmanager
def _with_sequences(llama_cpp: Any, parallel: int) -> Iterator[None]:
    """Create the context with ``parallel`` KV sequences, each a stream of its own.

    ``kv_unified=False`` gives every sequence ``n_ctx / parallel`` cells that only it uses, so
    a sequence attends over the same cells it would have alone and one long request cannot
    take another's room. Why not one unified cache: attention over a cache shared with other
    sequences (masked) rounds differently from attention alone; measured with SmolLM2 Q4_1,
    35 of 50 greedy answers changed when decoded 8 at a time in a unified cache, none with a
    stream each (``bench/batch_consistency.py``). The price: llama.cpp decodes only a
    contiguous run of stream ids in one micro-batch, so ``BatchDecoder`` hands out the lowest
    free id. llama_cpp.Llama has no argument for either setting, so (as for the AMX
    workaround) the default-params function it calls is wrapped while it runs.
    """
    module = llama_cpp.llama_cpp
    original = module.llama_context_default_params

    def default_params() -> Any:
        params = original()
        params.n_seq_max = parallel
        params.kv_unified = False
        return params

    module.llama_context_default_params = default_params
    try:
        yield
    finally:
        module.llama_context_default_params = original


class LlamaCppModel:
    """A GGUF model loaded in llama.cpp. See ``LoadedModel`` for the contract.

    Every generation goes through its ``BatchDecoder`` (``decoder``): ``generate`` is one
    sequence decoded alone; the runner opens several at once.
    """

    def __init__(
        self,
        llm: llama_cpp.Llama,
        *,
        seed: int | None = None,
        notices: tuple[str, ...] = (),
        parallel_sequences: int = 1,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._llm: llama_cpp.Llama | None = llm
        self.notices = notices
        self.parallel_sequences = parallel_sequences
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._bos = llm.token_bos()
        self._chat_template: str | None = llm.metadata.get("tokenizer.chat_template")
        self._formatter: Any = None
        # llama.cpp pads the context it allocates (to a multiple of 256), so n_ctx() can be
        # larger than asked; llama_cpp.Llama's token buffer has exactly the size asked for.
        total = min(llm.n_ctx(), len(llm.input_ids))
        self._context_length = total // parallel_sequences
        self._decoder: BatchDecoder | None = BatchDecoder(
            lib=llama_cpp,
            llm=llm,
            parallel=parallel_sequences,
            default_seed=seed,
            piece=self._piece,
            is_end=self._is_end,
            threads=(llm.n_threads, llm.n_threads_batch),
        )

    @property
    def context_length(self) -> int:
        """How many tokens fit for one request: prompt and completion together."""
        self._require()
        return self._context_length

    @property
    def decoder(self) -> BatchDecoder:
        self._require()
        assert self._decoder is not None
        return self._decoder

    def _require(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise BackendError("The model has been unloaded; load it again to use it.")
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        llm = self._require()
        # special=True so chat-template markers such as <|im_start|> become their single
        # control tokens, as llama-cpp-python does for prompts.
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        # add_bos=True adds BOS only when the model asks for one; a chat template that writes
        # {{ bos_token }} itself would then give two, which hurts output quality.
        if len(tokens) >= 2 and tokens[0] == tokens[1] == self._bos:
            tokens = tokens[1:]
        return tokens

    def _piece(self, token: int) -> bytes:
        # Llama.detokenize uses a fixed 32-byte buffer and silently truncates longer pieces
        # (llama_token_to_piece returns minus the size it needs); ask again with enough room.
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def _is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def prepare(self, prompt: str) -> tuple[list[int], int]:
        """The prompt's tokens and how many tokens are left for the completion; a prompt that
        does not fit raises ``BackendError`` (code ``CONTEXT_FULL``)."""
        self._require()
        tokens = self.tokenize(prompt)
        if not tokens:
            if self._bos < 0:
                raise BackendError("The prompt is empty; give the model some text to continue.")
            tokens = [self._bos]
        context = self.context_length
        room = context - len(tokens)
        if room < 1:
            raise BackendError(
                f"The prompt is {len(tokens)} tokens long but this model was loaded with a "
                f"context of {context} tokens; shorten the prompt or load the model with a "
                "larger context length.",
                code=CONTEXT_FULL,
            )
        return tokens, room

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        should_stop: ShouldStop | None = None,
    ) -> Iterator[Event]:
        tokens, room = self.prepare(prompt)
        return self._generate(tokens, room, params, should_stop)

    def _generate(
        self,
        tokens: list[int],
        room: int,
        params: GenerationParams,
        should_stop: ShouldStop | None,
    ) -> Iterator[Event]:
        decoder = self.decoder
        sequence = decoder.open(tokens, params, room=room)
        try:
            events = _decoded(lambda: decoder.prefill(sequence))
            while True:
                yield from events
                if sequence.finished:
                    return
                if should_stop is not None and should_stop():
                    yield from decoder.cancel(sequence)
                    return
                events = _decoded(lambda: dict(decoder.step())[sequence])
        finally:
            decoder.close(sequence)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        self._require()
        if not self._chat_template:
            return render_chat_template(None, messages)
        if self._formatter is None:
            # The library's own formatter, so prompts match what llama-cpp-python's chat
            # completion would send for this model.
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            try:
                self._formatter = Jinja2ChatFormatter(
                    template=self._chat_template,
                    eos_token=self._token_text(self._require().token_eos()),
                    bos_token=self._token_text(self._bos),
                )
            except Exception as exc:  # a template that does not even parse
                raise BackendError(f"The model's chat template is not valid: {exc}.") from exc
        try:
            prompt: str = self._formatter(messages=messages).prompt
            return prompt
        except Exception as exc:  # jinja2 errors and raise_exception() in the template
            raise BackendError(f"The model's chat template could not be rendered: {exc}.") from exc

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close_all()
            self._decoder = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def _decoded(work: Callable[[], list[Event]]) -> list[Event]:
    try:
        return work()
    except RuntimeError as exc:
        raise BackendError(f"llama.cpp failed while generating: {exc}.") from exc
