"""Model file formats: recognise a file, read its metadata, estimate the memory it needs.

``sniff`` (magic bytes), ``read_metadata`` (bounded header reads), ``estimate_memory``; every
malformed input raises ``FormatError`` with a readable reason. The modules: ``sniff`` (first
bytes), ``gguf`` (the GGUF header walk), ``ggml`` (legacy GGML headers), ``metadata`` (what a
file says about itself), ``memory`` (the estimate). Framework-free, and light to import: the
``gguf`` package and numpy load only inside the functions that read files.
"""

from __future__ import annotations

from inference.errors import FormatError
from inference.formats.memory import FitVerdict, MemoryEstimate, estimate_memory, fit_verdict
from inference.formats.metadata import (
    CTRANSFORMERS_GGUF_ARCHITECTURES,
    CTRANSFORMERS_MODEL_TYPES,
    BackendName,
    BackendVerdict,
    ModelMetadata,
    choose_backend,
    read_metadata,
)
from inference.formats.sniff import FileFormat, FormatKind, sniff

__all__ = [
    "CTRANSFORMERS_GGUF_ARCHITECTURES",
    "CTRANSFORMERS_MODEL_TYPES",
    "BackendName",
    "BackendVerdict",
    "FileFormat",
    "FitVerdict",
    "FormatError",
    "FormatKind",
    "MemoryEstimate",
    "ModelMetadata",
    "choose_backend",
    "estimate_memory",
    "fit_verdict",
    "read_metadata",
    "sniff",
]
