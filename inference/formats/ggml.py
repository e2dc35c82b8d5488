"""Reading legacy GGML files (magics ``ggml``, ``ggmf``, ``ggjt``), the formats before GGUF.

A legacy file does not say which model it holds, and each model family laid its header out
differently, so the admin names the model type and this module reads the header the way that
family's loader does (ctransformers vendors those loaders: ggml's examples for gpt2, gptj,
gpt_neox, dolly-v2, starcoder, mpt and replit; llama.cpp's for llama; ggllm.cpp's for falcon).

Every read is bounded by the file size; a header that does not fit raises ``FormatError``.
Framework-free: used by ``inference.formats.metadata`` only.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field

from inference.errors import FormatError

# The whole file, memory-mapped by the caller (bytes in tests).
Buffer = bytes | mmap.mmap

# The legacy model families, each with its hyper-parameter names in file order as its loader
# reads them (":f" marks a float32). These are the families ctransformers vendors loaders for,
# so this is also the list of model types it runs (``inference.backends.ctransformers``).
_HPARAMS: dict[str, tuple[str, ...]] = {
    "gpt2": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "ftype"),
    "gptj": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "ftype"),
    "gpt_neox": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "par_res", "ftype"),
    "falcon": ("n_vocab", "n_embd", "n_head", "n_head_kv", "n_layer", "n_falcon_type", "ftype"),
    "llama": ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype"),
    "mpt": (
        "d_model",
        "max_seq_len",
        "n_heads",
        "n_layers",
        "n_vocab",
        "alibi_bias_max:f",
        "clip_qkv:f",
        "ftype",
    ),
    "starcoder": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "ftype"),
    "dolly-v2": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "par_res", "ftype"),
    "replit": ("d_model", "max_seq_len", "n_heads", "n_layers", "n_vocab", "ftype"),
}

MODEL_TYPES: tuple[str, ...] = tuple(_HPARAMS)

# ctransformers compares model types with everything but letters and digits removed, and also
# accepts gpt_bigcode for starcoder; matching the same way accepts what it accepts.
_ALIASES = {re.sub(r"[^0-9a-z]", "", t): t for t in MODEL_TYPES} | {"gptbigcode": "starcoder"}

# gpt2, gptj and starcoder repeat n_vocab just before the vocabulary.
_VOCAB_COUNT_PREFIX = frozenset({"gpt2", "gptj", "starcoder"})
# llama.cpp and ggllm.cpp wrote their own container (scores in the vocabulary, ggjt alignment).
_LLAMA_STYLE = frozenset({"llama", "falcon"})
_ROLES = {
    "context_length": ("n_ctx", "max_seq_len"),
    "embedding_length": ("n_embd", "d_model"),
    "block_count": ("n_layer", "n_layers"),
    "head_count": ("n_head", "n_heads"),
    "head_count_kv": ("n_head_kv", "n_head", "n_heads"),
    "vocab_size": ("n_vocab",),
}
# ggml tensor types 0..15 as (block size, bytes per block) in the current quantization layout.
_TYPE_SIZES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
}
# Before quantization version 2 (ggjt v1/v2, and ftype < 2000 in ggml's examples) Q4_0, Q4_1 and
# Q8_0 stored their scales as f32, so their blocks were larger.
_OLD_TYPE_SIZES = _TYPE_SIZES | {2: (32, 20), 3: (32, 24), 8: (32, 36)}
_MAX_TENSORS = 100_000  # far above any real model; keeps the walk bounded on garbage input
_GENERIC_HPARAM_COUNT = 6


@dataclass(frozen=True)
class LegacyHeader:
    """What a legacy GGML header says, read with the layout of ``model_type``."""

    model_type: str | None
    hyperparameters: dict[str, int | float] = field(hash=False)
    vocab_size: int | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    ftype: int | None = None
    parameter_count: int | None = None
    tensor_count: int | None = None
    notes: tuple[str, ...] = ()


def normalize_model_type(model_type: str | None) -> str | None:
    """The canonical name (one of ``MODEL_TYPES``) for what an admin typed, or None if unknown."""
    if not model_type:
        return None
    return _ALIASES.get(re.sub(r"[^0-9a-z]", "", model_type.lower()))


class _Reader:
    """Bounded little-endian reads from the mapped file; running out means a FormatError."""

    def __init__(self, buf: Buffer, size: int, pos: int, model_type: str) -> None:
        self.buf, self.size, self.pos, self.model_type = buf, size, pos, model_type

    def take(self, n: int, what: str) -> int:
        if n < 0 or n > self.size - self.pos:
            raise FormatError(
                f"The file does not read as a {self.model_type} GGML model: {what} runs past "
                f"the end of the file (byte {self.size:,}). Check the model type, or whether "
                "the download was interrupted."
            )
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))


def read_legacy_header(
    buf: Buffer, size: int, *, kind: str, version: int | None, model_type: str | None
) -> LegacyHeader:
    """Read the header (and, where it can, the tensor list) of a legacy GGML file.

    ``buf`` is the whole file (a memory map), ``size`` its length, ``kind`` one of ggml, ggmf,
    ggjt. With no or an unknown ``model_type`` only the first six int32s are reported, unnamed.
    """
    start = 4 if kind == "ggml" else 8  # ggmf and ggjt put a uint32 version after the magic
    canonical = normalize_model_type(model_type)
    if canonical is None:
        return _generic_header(buf, size, start, model_type)
    if canonical not in _LLAMA_STYLE and kind != "ggml":
        raise FormatError(
            f"A {canonical} model in ggml's format starts with the 'ggml' magic, but this file "
            f"is {kind} (llama.cpp's format, used for llama and falcon models). "
            "Check the model type."
        )
    reader = _Reader(buf, size, start, canonical)
    names = _HPARAMS[canonical]
    fmt = "<" + "".join("f" if n.endswith(":f") else "i" for n in names)
    values = reader.unpack(fmt, "the header")
    hparams = {n.removesuffix(":f"): v for n, v in zip(names, values, strict=True)}
    roles = {role: _first(hparams, keys) for role, keys in _ROLES.items()}
    n_vocab = roles["vocab_size"] or 0
    raw_ftype = int(hparams["ftype"])
    # ggml's examples fold a quantization version into ftype (ftype + 1000 × version).
    qnt_version, ftype = (
        divmod(raw_ftype, 1000) if canonical not in _LLAMA_STYLE else (0, raw_ftype)
    )
    if not 0 < n_vocab <= (size - reader.pos) // 4:
        raise FormatError(
            f"The file does not read as a {canonical} GGML model: its header gives a "
            f"vocabulary of {n_vocab:,} tokens, which cannot fit in a {size:,}-byte file. "
            "Check the model type."
        )
    _skip_vocab(reader, canonical, kind, n_vocab)
    # llama.cpp moved to the current block layout with ggjt v3; ggml's examples with version 2.
    old_quants = version != 3 if canonical in _LLAMA_STYLE else qnt_version < 2
    parameter_count, tensor_count, notes = _walk_tensors(
        reader, aligned=kind == "ggjt", sizes=_OLD_TYPE_SIZES if old_quants else _TYPE_SIZES
    )
    return LegacyHeader(
        model_type=canonical,
        hyperparameters=hparams,
        vocab_size=n_vocab,
        context_length=roles["context_length"],
        embedding_length=roles["embedding_length"],
        block_count=roles["block_count"],
        head_count=roles["head_count"],
        head_count_kv=roles["head_count_kv"],
        ftype=ftype,
        parameter_count=parameter_count,
        tensor_count=tensor_count,
        notes=notes,
    )


def _first(hparams: dict[str, int | float], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in hparams:
            return int(hparams[key])
    return None


def _generic_header(buf: Buffer, size: int, start: int, model_type: str | None) -> LegacyHeader:
    reader = _Reader(buf, size, start, "legacy")
    values = reader.unpack(f"<{_GENERIC_HPARAM_COUNT}i", "the header")
    given = f"'{model_type}' is not a model type OpsDash knows" if model_type else "none was given"
    note = (
        "Legacy GGML files do not record their model type and " + given + ", so the header "
        "numbers are shown unnamed (hparam_0 to hparam_5). Name the model type (one of "
        + ", ".join(MODEL_TYPES)
        + ") to read them."
    )
    hparams: dict[str, int | float] = {f"hparam_{i}": v for i, v in enumerate(values)}
    return LegacyHeader(model_type=None, hyperparameters=hparams, notes=(note,))


def _skip_vocab(reader: _Reader, model_type: str, kind: str, n_vocab: int) -> None:
    if model_type in _VOCAB_COUNT_PREFIX:
        (repeated,) = reader.unpack("<i", "the vocabulary size")
        if repeated != n_vocab:
            raise FormatError(
                f"The file does not read as a {model_type} GGML model: the header says "
                f"{n_vocab:,} tokens but the vocabulary says {repeated:,}. Check the model type."
            )
    # replit stores a score per token; llama.cpp did too from ggmf on.
    has_scores = model_type == "replit" or (model_type in _LLAMA_STYLE and kind != "ggml")
    for _ in range(n_vocab):
        (length,) = reader.unpack("<I", "the vocabulary")
        reader.take(int(length) + (4 if has_scores else 0), "the vocabulary")


def _walk_tensors(
    reader: _Reader, *, aligned: bool, sizes: dict[int, tuple[int, int]]
) -> tuple[int | None, int | None, tuple[str, ...]]:
    """Count parameters by walking the tensor records; (None, None, note) if they do not parse."""
    parameters = count = 0
    while reader.pos < reader.size:
        if count >= _MAX_TENSORS or reader.size - reader.pos < 12:
            return None, None, (_unreadable(reader.pos),)
        n_dims, name_len, ttype = struct.unpack_from("<3i", reader.buf, reader.pos)
        if not 1 <= n_dims <= 4 or not 0 < name_len <= 1024 or ttype not in sizes:
            return None, None, (_unreadable(reader.pos),)
        reader.pos += 12
        dims = reader.unpack(f"<{n_dims}i", "a tensor header")
        name_at = reader.take(name_len, "a tensor name")
        name = bytes(reader.buf[name_at : name_at + name_len]).decode("utf-8", errors="replace")
        if aligned:
            reader.pos += -reader.pos % 32  # ggjt pads every tensor's data to 32 bytes
        elements = 1
        for dim in dims:
            elements *= int(dim)
        block, block_bytes = sizes[ttype]
        if elements <= 0 or elements % block:
            return None, None, (_unreadable(name_at),)
        end = reader.pos + elements // block * block_bytes
        if end > reader.size:
            raise FormatError(
                f"The file is truncated: the data of tensor '{name}' ends at byte {end:,} but "
                f"the file has only {reader.size:,} bytes. Was the download interrupted?"
            )
        reader.pos = end
        parameters += elements
        count += 1
    return parameters, count, ()


def _unreadable(at: int) -> str:
    return (
        f"The tensor list could not be read past byte {at:,}, so the parameter count is "
        "unknown. The file may be damaged, or the model type wrong."
    )
