"""The ctransformers backend: legacy GGML files, and GGUF llama/falcon files of its era.

ctransformers 0.2.27 bundles a llama.cpp from autumn 2023, so modern GGUF files (for example
ones without a separate ``output.weight``, such as SmolLM2) fail to load here and belong to
the llama_cpp backend. ``ctransformers`` is imported inside ``load`` only.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterator
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
    stream_tokens,
)
from inference.errors import CONTEXT_FULL, BackendError
from inference.formats import ggml

if TYPE_CHECKING:
    import ctransformers

logger = logging.getLogger(__name__)

#: Model types ctransformers runs from legacy GGML files: exactly the families whose headers
#: ``inference.formats.ggml`` reads, since both follow the loaders ctransformers vendors.
GGML_MODEL_TYPES: tuple[str, ...] = ggml.MODEL_TYPES
#: GGUF architectures it runs: ctransformers 0.2.27 vendors a September 2023 llama.cpp, which
#: runs only these.
GGUF_ARCHITECTURES: tuple[str, ...] = ("llama", "falcon")

NOT_INSTALLED = (
    "ctransformers is not installed, so legacy GGML models cannot run; "
    "install it with `pip install ctransformers==0.2.27`."
)


@functools.cache
def _cpu_library() -> str:
    """The path of ctransformers' CPU library for this machine, worked out once per process.

    Left to itself, ctransformers probes the CPU with py-cpuinfo on every model load, which
    takes about a second each time. On Linux the kernel's flag list says the same at once;
    the choice below is the one ctransformers.lib.find_library makes from those flags.
    """
    from ctransformers.lib import find_library

    flags = _linux_cpu_flags()
    local_build = (Path(find_library.__code__.co_filename).parent / "lib" / "local").is_dir()
    if flags is None or local_build:
        return str(find_library())
    if "avx2" in flags:
        variant = "avx2"
    elif {"avx", "f16c"} <= flags:
        variant = "avx"
    else:
        variant = "basic"
    return str(find_library(variant))


def _linux_cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"GGUF"


class CTransformersBackend:
    """Runs legacy GGML files (and older GGUF llama/falcon files) through ctransformers."""

    name = "ctransformers"
    title = "ctransformers"
    default_for = frozenset({"ggml", "ggmf", "ggjt"})

    def supports(self, metadata: Metadata) -> str | None:
        file_format = metadata_field(metadata, "format")
        architecture = metadata_field(metadata, "architecture")
        if file_format == "gguf":
            if architecture in GGUF_ARCHITECTURES:
                return None
            return (
                f"ctransformers runs GGUF files only for llama and falcon models, and this one "
                f"is {architecture or 'of an unknown architecture'}; use the llama_cpp backend."
            )
        if file_format not in self.default_for:
            return "ctransformers cannot tell what kind of file this is."
        if ggml.normalize_model_type(architecture) is not None:
            return None
        # Legacy files do not name their model type; the admin does, at install time.
        usual = " ggjt files are usually llama models." if file_format != "ggml" else ""
        given = (
            f"'{architecture}' is not one ctransformers knows" if architecture else "none was given"
        )
        return (
            f"Legacy GGML files do not record their model type and {given}. Name the model "
            f"type (one of {', '.join(GGML_MODEL_TYPES)}).{usual}"
        )

    def load(self, path: Path, options: LoadOptions) -> CTransformersModel:
        try:
            from ctransformers import LLM, Config
        except ImportError:
            raise BackendError(NOT_INSTALLED) from None

        path = Path(path)
        if not path.is_file():
            raise BackendError(f"The model file {path} does not exist.")
        gguf = _is_gguf(path)
        model_type = options.model_type
        if model_type is None and not gguf:
            known = ", ".join(GGML_MODEL_TYPES)
            raise BackendError(
                f"{path.name} is a legacy GGML file, which does not say which architecture it "
                f"holds; choose its model type ({known})."
            )
        if model_type is not None and not gguf and model_type not in GGML_MODEL_TYPES:
            known = ", ".join(GGML_MODEL_TYPES)
            raise BackendError(
                f"ctransformers does not know the model type {model_type!r}; choose one of {known}."
            )

        notices: list[str] = []
        context_length = -1
        if options.context_length is not None:
            if gguf:
                context_length = options.context_length
            else:
                # The legacy loaders size their position-embedding tensors from this value and
                # then reject the file's own tensors (seen with gpt2), so legacy files always
                # run with the context length they were built with.
                notices.append(
                    "The context length setting was ignored: legacy GGML models run with the "
                    "context length stored in the file."
                )
        config = Config(
            context_length=context_length,
            threads=options.threads or -1,
            seed=-1 if options.seed is None else options.seed,
            gpu_layers=_gpu_layer_count(options.gpu_layers),
        )
        try:
            try:
                # "cuda" names ctransformers' CUDA build of its library.
                lib = "cuda" if config.gpu_layers > 0 else _cpu_library()
                llm = LLM(str(path), model_type, config=config, lib=lib)
            except OSError:
                # ctransformers loads a separate CUDA build of its library for gpu_layers > 0;
                # without CUDA runtime libraries that fails, and the CPU build still works.
                if config.gpu_layers == 0:
                    raise
                notices.append(
                    "GPU layers were ignored because ctransformers could not load its CUDA "
                    "library; the model runs on the CPU."
                )
                config.gpu_layers = 0
                llm = LLM(str(path), model_type, config=config, lib=_cpu_library())
        except (RuntimeError, ValueError, OSError) as exc:
            kind = "GGUF" if gguf else f"legacy GGML {model_type}"
            hint = (
                " ctransformers only reads GGUF files from 2023; newer ones run with the "
                "llama_cpp backend."
                if gguf
                else " Check that the model type matches the file."
            )
            raise BackendError(
                f"ctransformers could not load {path.name} as a {kind} model.{hint} ({exc})"
            ) from exc
        for notice in notices:
            logger.warning("%s: %s", path.name, notice)
        return CTransformersModel(llm, path=path, gguf=gguf, notices=tuple(notices))


def _gpu_layer_count(gpu_layers: int) -> int:
    # ctransformers has no "all layers" value; llama.cpp clamps a large count to the model's.
    return 1_000_000 if gpu_layers == -1 else gpu_layers


class CTransformersModel:
    """A model loaded in ctransformers. See ``LoadedModel`` for the contract."""

    def __init__(
        self,
        llm: ctransformers.LLM,
        *,
        path: Path,
        gguf: bool,
        notices: tuple[str, ...] = (),
    ) -> None:
        self._llm: ctransformers.LLM | None = llm
        self._path = path
        self._gguf = gguf
        self.notices = notices
        self._template_read = False
        self._chat_template: str | None = None
        self._bos_text = ""
        self._eos_text = ""

    @property
    def context_length(self) -> int:
        return int(self._require().context_length)

    def _require(self) -> ctransformers.LLM:
        if self._llm is None:
            raise BackendError("The model has been unloaded; load it again to use it.")
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        llm = self._require()
        encoded = text.encode("utf-8")
        # LLM.tokenize sizes its output buffer by len(text) characters, but a byte-level
        # tokenizer can return one token per UTF-8 byte, so non-ASCII text could overrun it.
        # Room for every byte, BOS and SentencePiece's leading space is always enough.
        capacity = len(encoded) + 8
        buffer = (ctypes.c_int * capacity)()
        add_bos = llm.model_type == "llama"  # as LLM.tokenize decides
        n = llm.ctransformers_llm_tokenize(encoded, add_bos, buffer)
        return list(buffer[:n])

    def _piece(self, token: int) -> bytes:
        piece: bytes | None = self._require().ctransformers_llm_detokenize(token)
        return piece or b""

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        should_stop: ShouldStop | None = None,
    ) -> Iterator[Event]:
        llm = self._require()
        tokens = self.tokenize(prompt)
        if not tokens:
            bos = llm.bos_token_id
            if bos < 0:
                raise BackendError("The prompt is empty; give the model some text to continue.")
            tokens = [bos]
        context = self.context_length
        room = context - len(tokens)
        if room < 1:
            raise BackendError(
                f"The prompt is {len(tokens)} tokens long but this model's context holds "
                f"{context} tokens; shorten the prompt.",
                code=CONTEXT_FULL,
            )
        return self._generate(llm, tokens, room, params, should_stop)

    def _generate(
        self,
        llm: ctransformers.LLM,
        tokens: list[int],
        room: int,
        params: GenerationParams,
        should_stop: ShouldStop | None,
    ) -> Iterator[Event]:
        greedy = params.temperature == 0
        # LLM.generate(reset=True) keeps the tokens the previous request shares with this one
        # and evaluates only the rest; start from nothing instead, so the same request gives
        # the same text whatever ran before it (see LlamaCppModel._forget for why it matters).
        llm._context.clear()
        native = llm.generate(
            tokens,
            # ctransformers divides logits by the temperature; greedy decoding is top-k 1.
            top_k=1 if greedy else (params.top_k or llm.vocab_size),
            top_p=params.top_p,
            temperature=1.0 if greedy else params.temperature,
            repetition_penalty=params.repeat_penalty,
            seed=params.seed,
            threads=params.threads,
            reset=True,
        )
        try:
            yield from stream_tokens(
                native,
                piece=self._piece,
                # LLM.generate ends by itself at the end-of-sequence token.
                is_end=lambda token: False,
                params=params,
                prompt_tokens=len(tokens),
                room=room,
                should_stop=should_stop,
            )
        except RuntimeError as exc:
            raise BackendError(f"ctransformers failed while generating: {exc}.") from exc

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        self._require()
        if not self._template_read:
            self._read_chat_template()
        return render_chat_template(
            self._chat_template, messages, bos_token=self._bos_text, eos_token=self._eos_text
        )

    def _read_chat_template(self) -> None:
        # ctransformers does not expose GGUF metadata, so read it with the gguf package;
        # legacy GGML files have no template and use the fallback.
        self._template_read = True
        if not self._gguf:
            return
        from gguf import GGUFReader

        reader = GGUFReader(self._path)

        def value(key: str) -> Any:
            field = reader.fields.get(key)
            return None if field is None else field.contents()

        template = value("tokenizer.chat_template")
        self._chat_template = template if isinstance(template, str) else None
        tokens = value("tokenizer.ggml.tokens") or []
        for key, attr in (("bos", "_bos_text"), ("eos", "_eos_text")):
            token_id = value(f"tokenizer.ggml.{key}_token_id")
            if isinstance(token_id, int) and 0 <= token_id < len(tokens):
                setattr(self, attr, tokens[token_id])

    def close(self) -> None:
        if self._llm is not None:
            # LLM.__del__ frees the native model only when the last reference goes; free it
            # now and clear the handle so __del__ does not free it twice.
            self._llm.ctransformers_llm_delete()
            self._llm._llm = None
            self._llm = None
