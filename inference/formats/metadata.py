"""Reading what a model file says about itself (architecture, size, quantization, context...).

Files come from admins (server path, upload, URL), so every read here is bounded by the file's
size and every malformed input raises ``FormatError`` with a sentence a person can act on: no
other exception type, no allocation sized by what a header claims.

GGUF headers are checked by ``inference.formats.gguf`` before ``gguf.GGUFReader`` reads them;
legacy GGML headers are read by ``inference.formats.ggml`` in the layout of the admin's model type.
``gguf`` (and numpy) are imported inside the functions that read files, so importing this
costs no heavy import.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from inference.errors import FormatError
from inference.formats import ggml
from inference.formats.gguf import Array, read_gguf_header
from inference.formats.sniff import FileFormat, FormatKind, sniff


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about itself; None where the file does not say."""

    format: FormatKind
    format_version: int | None
    architecture: str | None
    name: str | None
    parameter_count: int | None
    quantization: str | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    tokenizer_model: str | None
    chat_template: str | None
    size_bytes: int
    tensor_count: int | None
    hyperparameters: dict[str, int | float] = field(default_factory=dict, hash=False)
    notes: tuple[str, ...] = ()  # sentences for the admin about what could not be read

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe copy, field by field."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return out | {"hyperparameters": dict(self.hyperparameters), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """The inverse of ``as_dict`` (metadata stored as JSON); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["notes"] = tuple(values.get("notes") or ())
        values["hyperparameters"] = dict(values.get("hyperparameters") or {})
        return cls(**values)


def read_metadata(path: str | os.PathLike[str], *, model_type: str | None = None) -> ModelMetadata:
    """Read a model file's metadata with bounded reads; raise FormatError if it is malformed.

    ``model_type`` is the admin's name for a legacy GGML file's model family (gpt2, llama, …);
    GGUF files name their architecture themselves, so it is ignored for them.
    """
    fmt = sniff(path)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if fmt.kind == "gguf":
                return _read_gguf(path, buf, size, fmt)
            return _read_legacy(buf, size, fmt, model_type)
    except OSError as exc:
        raise FormatError(f"OpsDash cannot read {Path(path).name}: {exc.strerror}.") from exc
    except FormatError:
        raise
    except Exception as exc:  # a reading bug must still reach the admin as a sentence, not a 500
        raise FormatError(
            f"OpsDash could not read this model file ({type(exc).__name__}: {exc}). "
            "It is probably damaged; try downloading it again."
        ) from exc


def _read_legacy(
    buf: mmap.mmap, size: int, fmt: FileFormat, model_type: str | None
) -> ModelMetadata:
    h = ggml.read_legacy_header(
        buf, size, kind=fmt.kind, version=fmt.version, model_type=model_type
    )
    return ModelMetadata(
        format=fmt.kind,
        format_version=fmt.version,
        architecture=h.model_type or (model_type.strip() if model_type else None) or None,
        name=None,
        parameter_count=h.parameter_count,
        quantization=_file_type_label(h.ftype) if h.ftype is not None else None,
        context_length=h.context_length,
        embedding_length=h.embedding_length,
        block_count=h.block_count,
        head_count=h.head_count,
        head_count_kv=h.head_count_kv,
        vocab_size=h.vocab_size,
        tokenizer_model=None,
        chat_template=None,
        size_bytes=size,
        tensor_count=h.tensor_count,
        hyperparameters=h.hyperparameters,
        notes=h.notes,
    )


def _read_gguf(
    path: str | os.PathLike[str], buf: mmap.mmap, size: int, fmt: FileFormat
) -> ModelMetadata:
    assert fmt.version is not None
    values, tensors = read_gguf_header(path, buf, size, fmt.version)
    if values.get("general.type") == "adapter":
        # An adapter only loads on top of its base model; as a model it fails cryptically.
        raise FormatError(
            "This GGUF file is a LoRA adapter, not a model: it only runs on top of its base "
            "model. Install the base model instead."
        )
    arch = _str(values.get("general.architecture"))
    file_type = _int(values.get("general.file_type"))
    if file_type is not None:
        quantization: str | None = _file_type_label(file_type)
    elif tensors:  # older converters left the key out: name the type holding most bytes
        by_type: dict[int, int] = {}
        for t in tensors:
            by_type[t.ggml_type] = by_type.get(t.ggml_type, 0) + t.n_bytes
        quantization = _tensor_type_label(max(by_type, key=by_type.__getitem__))
    else:
        quantization = None
    tokens = values.get("tokenizer.ggml.tokens")
    head_count = _int(values.get(f"{arch}.attention.head_count"))
    return ModelMetadata(
        format="gguf",
        format_version=fmt.version,
        architecture=arch,
        name=_str(values.get("general.name")),
        parameter_count=sum(t.elements for t in tensors),
        quantization=quantization,
        context_length=_int(values.get(f"{arch}.context_length")),
        embedding_length=_int(values.get(f"{arch}.embedding_length")),
        block_count=_int(values.get(f"{arch}.block_count")),
        head_count=head_count,
        # llama.cpp's own default when the key is missing: no grouped-query attention.
        head_count_kv=_int(values.get(f"{arch}.attention.head_count_kv")) or head_count,
        vocab_size=_int(values.get(f"{arch}.vocab_size"))
        or (tokens.length if isinstance(tokens, Array) else None),
        tokenizer_model=_str(values.get("tokenizer.ggml.model")),
        chat_template=_str(values.get("tokenizer.chat_template")),
        size_bytes=size,
        tensor_count=len(tensors),
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Array) and value.items and all(isinstance(v, int) for v in value.items):
        return int(max(value.items))  # per-layer values: the largest sizes memory safely
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _file_type_label(file_type: int) -> str:
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        # 4 was MOSTLY_Q4_1_SOME_F16 in 2023 GGML files; gguf no longer lists it.
        return {4: "Q4_1_SOME_F16"}.get(file_type, f"file type {file_type}")
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _tensor_type_label(ttype: int) -> str:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(ttype).name
