"""The backend contract: one protocol, the shared parameter and event types.

A backend turns a model file into a ``LoadedModel`` that tokenizes, renders chat messages and
streams token events. Backends live one per module (``inference.backends.llama_cpp``,
``inference.backends.ctransformers``) and import their native library only inside functions,
so importing this package, or asking the registry (``inference.backends``) for a backend,
never loads native code.

The streaming loop that both backends share (incremental UTF-8 decoding, stop sequences,
``max_tokens``, cancellation) lives here too, in ``stream_tokens``: the backends only supply
token ids and the bytes of each token.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from inference.errors import BackendError
from inference.formats.metadata import ModelMetadata

FinishReason = Literal["stop", "length", "cancelled"]

# Upper bounds that keep a typo ("max_tokens": 1e9) from becoming a runaway job. They are far
# above anything a small local model can use, so a real request never hits them.
MAX_TOKENS_LIMIT = 1_000_000
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 200

# What llama.cpp and ctransformers use for "pick a random seed".
SEED_LIMIT = 2**32 - 1


def _int_in(value: object, low: int, high: int) -> bool:
    # bool is an int subclass; True as a token count is always a caller bug.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_threads(threads: object) -> None:
    if threads is not None and not _int_in(threads, 1, 1024):
        raise BackendError(
            f"threads must be a whole number from 1 to 1024, or left unset; got {threads!r}."
        )


def _check_seed(seed: object) -> None:
    if seed is not None and not _int_in(seed, 0, SEED_LIMIT):
        raise BackendError(
            f"seed must be a whole number from 0 to {SEED_LIMIT}, or left unset for a random "
            f"seed; got {seed!r}."
        )


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """How to sample one completion. Invalid values raise ``BackendError`` with a sentence.

    ``temperature`` 0 means greedy decoding. ``top_k`` 0 means no top-k cut. ``seed`` None
    means a fresh random seed. ``stop`` sequences end the completion and are not part of the
    text. ``threads`` None keeps the number chosen at load time.
    """

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    threads: int | None = None

    def __post_init__(self) -> None:
        # JSON gives lists and a bare string is a common shorthand; keep the field a tuple so
        # the dataclass stays hashable and immutable.
        stop: Any = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
            raise BackendError(f"stop must be a list of strings; got {self.stop!r}.")
        object.__setattr__(self, "stop", tuple(stop))

        if not _int_in(self.max_tokens, 1, MAX_TOKENS_LIMIT):
            raise BackendError(
                f"max_tokens must be a whole number from 1 to {MAX_TOKENS_LIMIT}; "
                f"got {self.max_tokens!r}."
            )
        if not (_is_number(self.temperature) and 0.0 <= self.temperature <= 2.0):
            raise BackendError(
                f"temperature must be a number from 0 to 2 (0 picks the likeliest token); "
                f"got {self.temperature!r}."
            )
        if not (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise BackendError(f"top_p must be a number above 0 and at most 1; got {self.top_p!r}.")
        if not _int_in(self.top_k, 0, 1_000_000):
            raise BackendError(
                f"top_k must be a whole number from 0 (no limit) to 1000000; got {self.top_k!r}."
            )
        if not (_is_number(self.repeat_penalty) and 0.0 < self.repeat_penalty <= 10.0):
            raise BackendError(
                f"repeat_penalty must be a number above 0 and at most 10 (1 means no penalty); "
                f"got {self.repeat_penalty!r}."
            )
        _check_seed(self.seed)
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise BackendError(
                f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed; got {len(self.stop)}."
            )
        for sequence in self.stop:
            if not sequence or len(sequence) > MAX_STOP_LENGTH:
                raise BackendError(
                    f"Each stop sequence must be 1 to {MAX_STOP_LENGTH} characters long; "
                    f"got {sequence!r}."
                )
        _check_threads(self.threads)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load a model. Invalid values raise ``BackendError`` with a sentence.

    ``context_length`` None lets the backend choose (see each backend). ``gpu_layers`` -1 means
    every layer; a backend without GPU support ignores it and says so in ``notices``.
    ``model_type`` names the architecture of a legacy GGML file (ctransformers needs it:
    gpt2, gptj, gpt_neox, falcon, llama, mpt, starcoder, dolly-v2, replit).
    """

    context_length: int | None = None
    threads: int | None = None
    gpu_layers: int = 0
    model_type: str | None = None
    seed: int | None = None
    #: How many requests to decode together, each with ``context_length`` tokens of its own;
    #: a backend that decodes one at a time ignores it.
    parallel_sequences: int = 1

    def __post_init__(self) -> None:
        if not _int_in(self.parallel_sequences, 1, 256):
            raise BackendError(
                f"parallel_sequences must be a whole number from 1 to 256; "
                f"got {self.parallel_sequences!r}."
            )
        if self.context_length is not None and not _int_in(self.context_length, 16, 10_000_000):
            raise BackendError(
                f"context_length must be a whole number of at least 16 tokens, or left unset; "
                f"got {self.context_length!r}."
            )
        _check_threads(self.threads)
        if not _int_in(self.gpu_layers, -1, 1_000_000):
            raise BackendError(
                f"gpu_layers must be 0 or more, or -1 for every layer; got {self.gpu_layers!r}."
            )
        if self.model_type is not None and not (
            isinstance(self.model_type, str) and self.model_type.strip()
        ):
            raise BackendError(
                f"model_type must be an architecture name such as 'gpt2', or left unset; "
                f"got {self.model_type!r}."
            )
        _check_seed(self.seed)


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A piece of generated text.

    ``text`` is never empty and never ends inside a UTF-8 character: bytes of an unfinished
    character, or text that might be the start of a stop sequence, are held back and released
    with a later token. So one event usually carries one token, sometimes several.
    ``token_id`` is the id of the token whose arrival released the text.
    """

    text: str
    token_id: int | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of every generation.

    ``finish_reason``: ``stop`` (end-of-generation token or a stop sequence), ``length``
    (``max_tokens`` or the context window reached) or ``cancelled`` (``should_stop`` said so).
    Both counts come from the model's own tokenizer; ``completion_tokens`` counts the tokens
    sampled, including one that completed a stop sequence, not the end-of-generation token.
    """

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


Event = TokenEvent | Finished
ShouldStop = Callable[[], bool]


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory. Not thread-safe: one generation at a time."""

    #: Things the user should know about how the model was loaded, as sentences
    #: (for example that GPU layers were ignored because the backend has no GPU support).
    notices: tuple[str, ...]

    @property
    def context_length(self) -> int:
        """How many tokens fit in the context window, prompt and completion together."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """The model's own token ids for ``text``, as ``generate`` would feed them."""
        ...

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        should_stop: ShouldStop | None = None,
    ) -> Iterator[Event]:
        """Stream ``TokenEvent``s, then exactly one ``Finished``.

        ``should_stop`` is called before each new token is computed; when it returns True the
        generation ends within one token with ``finish_reason="cancelled"``. A prompt that
        does not fit the context window raises ``BackendError``.
        """
        ...

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """Render chat messages into a prompt, ready for ``generate``.

        Uses the model's own chat template (GGUF ``tokenizer.chat_template``) when it has one,
        with the generation prompt added; otherwise ``FALLBACK_CHAT_TEMPLATE``.
        """
        ...

    def close(self) -> None:
        """Free the model's memory. Safe to call twice."""
        ...


#: What ``supports`` reads: ``inference.formats.read_metadata``'s answer, or a mapping with the
#: same keys (a model's metadata stored as JSON).
Metadata = ModelMetadata | Mapping[str, Any]


@runtime_checkable
class Backend(Protocol):
    """One inference library behind the common contract."""

    #: The registry's name for it (``LocalModel.backend``, ``ModelSpec.backend``).
    name: str
    #: How people write it, in sentences: "llama.cpp".
    title: str
    #: The file formats this backend is the default for (DESIGN.md: GGUF → llama_cpp, legacy
    #: GGML → ctransformers): the registry asks it first, and gives its reason when none can.
    default_for: frozenset[str]

    def supports(self, metadata: Metadata) -> str | None:
        """None when this backend can run a model with this metadata, else the reason why not.

        Backends read ``metadata`` through ``metadata_field``, so a mapping works as well.
        """
        ...

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        """Load the model file; raise ``BackendError`` with a sentence when that fails."""
        ...


def metadata_field(metadata: Metadata, name: str) -> Any:
    """Read ``name`` from metadata given as an object with attributes or as a mapping."""
    if isinstance(metadata, Mapping):
        return metadata.get(name)
    return getattr(metadata, name, None)


# --- chat templates --------------------------------------------------------------------------

#: Used when a model carries no chat template of its own (legacy GGML files, some base models).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def render_chat_template(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` with a Hugging Face style Jinja chat template.

    This mirrors ``llama_cpp.llama_chat_format.Jinja2ChatFormatter`` (sandboxed environment,
    ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, Transformers' ``tojson``,
    ``raise_exception``, ``strftime_now``) so a model renders the same prompt whichever backend
    runs it. A template that fails to render raises ``BackendError``.
    """
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - jinja2 comes with llama-cpp-python
        raise BackendError(
            "jinja2 is not installed, so chat templates cannot be rendered; "
            "install it with `pip install jinja2`."
        ) from None

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = tojson
    try:
        compiled = environment.from_string(template or FALLBACK_CHAT_TEMPLATE)
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=True,
            raise_exception=raise_exception,
            strftime_now=lambda fmt: datetime.now().strftime(fmt),
        )
    except jinja2.TemplateError as exc:
        raise BackendError(f"The model's chat template could not be rendered: {exc}.") from exc


# --- the shared streaming loop ---------------------------------------------------------------


@dataclass(slots=True)
class _StopScanner:
    """Holds back text that might still become a stop sequence."""

    stop: tuple[str, ...]
    pending: str = ""
    _longest: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._longest = max((len(s) for s in self.stop), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to emit now, whether a stop sequence was hit)."""
        self.pending += text
        if not self.stop:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out = self.pending[: min(hits)]
            self.pending = ""
            return out, True
        # Keep the longest tail that is a prefix of some stop sequence; everything before it
        # can never become part of a match (see the invariant in the module tests).
        keep = 0
        for size in range(min(len(self.pending), self._longest - 1), 0, -1):
            tail = self.pending[-size:]
            if any(s.startswith(tail) for s in self.stop):
                keep = size
                break
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class TokenStream:
    """Token ids in, ``TokenEvent``s and one ``Finished`` out: the push form of
    ``stream_tokens``, for a caller that samples the tokens itself (the llama.cpp batch
    decoder feeds several streams, one token each per step).

    ``feed`` takes each sampled token and ends the stream (``finished`` set, ``Finished``
    the last event returned) at an end-of-generation token, a stop sequence or the limit
    (``max_tokens``, or ``room``: how many tokens still fit in the context window). ``finish``
    ends it for another reason (a cancel), releasing the text held back.
    """

    def __init__(
        self,
        *,
        piece: Callable[[int], bytes],
        is_end: Callable[[int], bool],
        params: GenerationParams,
        prompt_tokens: int,
        room: int | None = None,
    ) -> None:
        self.limit = params.max_tokens if room is None else min(params.max_tokens, max(room, 0))
        self.prompt_tokens = prompt_tokens
        self.generated = 0
        self.finished: Finished | None = None
        self._piece = piece
        self._is_end = is_end
        # An incremental decoder joins characters split across tokens; "replace" turns bytes
        # that never form a character into U+FFFD instead of dropping text or raising.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._scanner = _StopScanner(params.stop)
        self._last_token: int | None = None

    def feed(self, token: int) -> list[Event]:
        if self.finished is not None:
            return []
        if self._is_end(token):
            return self.finish("stop")
        self.generated += 1
        self._last_token = token
        text, hit = self._scanner.feed(self._decoder.decode(self._piece(token)))
        events: list[Event] = [TokenEvent(text=text, token_id=token)] if text else []
        if hit:
            self.finished = Finished("stop", self.prompt_tokens, self.generated)
            events.append(self.finished)
        elif self.generated >= self.limit:
            events.extend(self.finish("length"))
        return events

    def finish(self, reason: FinishReason) -> list[Event]:
        if self.finished is not None:
            return []
        # Release what was held back: a tail that never became a stop sequence, and bytes
        # that never completed a character (as U+FFFD, so the loss is visible).
        tail, hit = self._scanner.feed(self._decoder.decode(b"", final=True))
        tail += self._scanner.flush()
        events: list[Event] = [TokenEvent(text=tail, token_id=self._last_token)] if tail else []
        self.finished = Finished("stop" if hit else reason, self.prompt_tokens, self.generated)
        events.append(self.finished)
        return events


def stream_tokens(
    tokens: Iterable[int],
    *,
    piece: Callable[[int], bytes],
    is_end: Callable[[int], bool],
    params: GenerationParams,
    prompt_tokens: int,
    room: int | None = None,
    should_stop: ShouldStop | None = None,
) -> Iterator[Event]:
    """Turn a native stream of token ids into ``TokenEvent``s and one ``Finished``.

    ``tokens`` must be lazy: the next token is computed only when asked for, so checking
    ``should_stop`` before each ``next()`` cancels within one token. ``piece`` gives a token's
    raw bytes (a token may hold part of a UTF-8 character); ``is_end`` says whether it ends
    the generation. ``room`` is how many tokens still fit in the context window.
    """
    stream = TokenStream(
        piece=piece, is_end=is_end, params=params, prompt_tokens=prompt_tokens, room=room
    )
    iterator = iter(tokens)
    try:
        while stream.finished is None:
            if stream.generated >= stream.limit:
                events = stream.finish("length")
            elif should_stop is not None and should_stop():
                events = stream.finish("cancelled")
            else:
                token = next(iterator, None)
                events = stream.finish("stop") if token is None else stream.feed(token)
            yield from events
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
