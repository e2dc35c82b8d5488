"""Recognising a model file from its first bytes: GGUF v1-v3 or legacy GGML (ggml, ggmf, ggjt).

Only the first 64 bytes are read; anything else raises ``FormatError`` saying what the file
looks like instead (a zip archive, a web page, a Git LFS pointer...).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.errors import FormatError

FormatKind = Literal["gguf", "ggml", "ggmf", "ggjt"]

_LEGACY_MAGICS: dict[int, FormatKind] = {0x67676D6C: "ggml", 0x67676D66: "ggmf", 0x67676A74: "ggjt"}
_LEGACY_VERSIONS = {"ggmf": (1,), "ggjt": (1, 2, 3)}
_GGUF_HEADER_BYTES = {1: 16, 2: 24, 3: 24}  # magic, version, tensor and key-value counts
_ACCEPTED = "OpsDash reads GGUF (v1–v3) and legacy GGML files."


@dataclass(frozen=True)
class FileFormat:
    """A model file's container format, from its first bytes."""

    kind: FormatKind
    version: int | None

    @property
    def label(self) -> str:
        """How people write it: "GGUF v3", "GGJT v3", "GGML"."""
        return self.kind.upper() + (f" v{self.version}" if self.version is not None else "")


def sniff(path: str | os.PathLike[str]) -> FileFormat:
    """Recognise a model file from its magic bytes, or raise FormatError saying what it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise FormatError(f"OpsDash cannot read {Path(path).name}: {exc.strerror}.") from exc
    return _sniff_bytes(head, os.path.getsize(path))


def _sniff_bytes(head: bytes, size: int) -> FileFormat:
    if size == 0:
        raise FormatError("The file is empty (0 bytes). Was the upload or download interrupted?")
    if size < 4:
        raise FormatError(f"The file is only {size} bytes long, too short to be a model file.")
    if head[:4] == b"GGUF":
        return _sniff_gguf(head, size)
    (magic,) = struct.unpack_from("<I", head)
    kind = _LEGACY_MAGICS.get(magic)
    if kind is None:
        raise FormatError(_not_a_model(head))
    if kind == "ggml":
        return FileFormat("ggml", None)
    if size < 8:
        raise FormatError(f"The file is only {size} bytes long, too short for a {kind} header.")
    (version,) = struct.unpack_from("<I", head, 4)
    if version not in _LEGACY_VERSIONS[kind]:
        raise FormatError(
            f"This {kind} file says it is version {version}, which ggml never wrote "
            f"({kind} versions: {', '.join(map(str, _LEGACY_VERSIONS[kind]))}). "
            "The header is damaged."
        )
    return FileFormat(kind, version)


def _sniff_gguf(head: bytes, size: int) -> FileFormat:
    if size < 8:
        raise FormatError(f"The file is only {size} bytes long, too short for a GGUF header.")
    (version,) = struct.unpack_from("<I", head, 4)
    if version & 0xFFFF == 0 and 1 <= version >> 24 <= 3:
        raise FormatError(
            "This is a big-endian GGUF file (made for s390x and similar machines); "
            "OpsDash reads little-endian GGUF files. Download the little-endian version."
        )
    if version not in _GGUF_HEADER_BYTES:
        hint = (
            "It may come from a newer llama.cpp than OpsDash knows."
            if version > 3
            else "No GGUF writer makes that version: the header is damaged."
        )
        raise FormatError(f"This GGUF file says it is version {version}; {_ACCEPTED} {hint}")
    if size < _GGUF_HEADER_BYTES[version]:
        raise FormatError(
            f"The file is only {size} bytes long, too short for a GGUF v{version} header "
            f"({_GGUF_HEADER_BYTES[version]} bytes). Was the download interrupted?"
        )
    return FileFormat("gguf", version)


def _not_a_model(head: bytes) -> str:
    shown = repr(head[:4])[1:]
    if head[:4] == b"algg":  # 'ggla' as a little-endian uint32, like the other ggml magics
        return "This is a LoRA adapter in the legacy GGML format, not a model. " + _ACCEPTED
    if head[:2] == b"PK":
        hint = "a zip archive, such as a PyTorch checkpoint? Convert it to GGUF first"
    elif head[8:10] == b'{"':
        hint = "a safetensors file? Convert it to GGUF first"
    elif head.lstrip()[:1] == b"<":
        hint = "a web page? The URL may lead to a download page rather than the file"
    elif head.startswith(b"version https://git-lfs"):
        hint = "a Git LFS pointer? Fetch the real file with git lfs pull"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head[:4]):
        hint = "a text file?"
    else:
        hint = "an unknown binary format"
    return f"This is not a model file: it starts with bytes {shown} ({hint}). {_ACCEPTED}"
