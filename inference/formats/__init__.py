"""Model file formats: recognise a file, read its metadata, estimate the memory it needs.

``sniff`` (magic bytes), ``read_metadata`` (bounded header reads), ``estimate_memory``,
``LEGACY_MODEL_TYPES`` (the legacy GGML families whose headers it reads); every
malformed input raises ``FormatError`` with a readable reason. The modules: ``sniff`` (first
bytes), ``gguf`` (the GGUF header walk), ``ggml`` (legacy GGML headers), ``metadata`` (what a
file says about itself), ``memory`` (the estimate). Framework-free, and light to import: the
``gguf`` package and numpy load only inside the functions that read files.
"""

from __future__ import annotations

from inference.errors import FormatError
from inference.formats.ggml import MODEL_TYPES as LEGACY_MODEL_TYPES
from inference.formats.memory import FitVerdict, MemoryEstimate, estimate_memory, fit_verdict
from inference.formats.metadata import (
    ModelMetadata,
    read_metadata,
)
from inference.formats.sniff import FileFormat, FormatKind, sniff

__all__ = [
    "LEGACY_MODEL_TYPES",
    "FileFormat",
    "FitVerdict",
    "FormatError",
    "FormatKind",
    "MemoryEstimate",
    "ModelMetadata",
    "estimate_memory",
    "fit_verdict",
    "read_metadata",
    "sniff",
]
