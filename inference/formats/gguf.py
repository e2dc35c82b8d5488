"""A bounded walk over a GGUF header, then ``gguf.GGUFReader`` once the walk finds it sound.

GGUFReader trusts the header: it answers damage with KeyError ("Duplicate ..."), IndexError,
ValueError or numpy errors, slices past the end of the file without noticing, and loops in Python
over every item a header claims. So this module first walks the header itself, reading nothing
that the file's size cannot hold, refusing counts and lengths the file cannot contain and value
types GGUF does not have; only then does the reader run, inside a try that turns anything it
still raises into ``FormatError``. GGUFReader reads only v2 and v3; v1 files are read by the walk.

Framework-free: used by ``inference.formats`` only. ``gguf`` (and numpy) are imported lazily.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any, NamedTuple

from inference.errors import FormatError

# GGUF value types: the struct format of each scalar; 8 is a string, 9 an array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_MAX_ARRAY_ITEMS = 1 << 20  # all arrays together; GGUFReader spends ~1 KB of memory per item
_KEPT_ARRAY_ITEMS = 1024  # numeric arrays this short (per-layer head counts) keep their values
_MAX_KEPT_STRING = 1 << 20  # longer strings are skipped, not read: no key needs them
# Claims up to these sizes occur in real files, so overrunning the file means it was cut short.
_PLAUSIBLE_COUNT = 1 << 20
_PLAUSIBLE_STRING = 1 << 24
_PLAUSIBLE_FILE = 1 << 50  # a petabyte


class Array(NamedTuple):
    """An array value: its length, and its items when it is short and numeric."""

    length: int
    items: tuple[Any, ...] | None


class TensorInfo(NamedTuple):
    name: str
    elements: int
    ggml_type: int
    n_bytes: int


class GGUFHeader(NamedTuple):
    """Key-values (strings, numbers, ``Array``) and tensors of a GGUF file with all its data."""

    values: dict[str, Any]
    tensors: list[TensorInfo]


def read_gguf_header(
    path: str | os.PathLike[str], buf: mmap.mmap, size: int, version: int
) -> GGUFHeader:
    """Validate and read a GGUF header; ``buf`` maps the whole file of ``size`` bytes."""
    walk = _Walk(buf, size, version)
    values, raw_tensors = walk.run()
    tensors = _check_tensor_data(raw_tensors, walk.data_start(values), size)
    if version >= 2:
        # The walk proved the header sound, so the reader can no longer be led astray.
        values = _values_from_reader(path)
    return GGUFHeader(values, tensors)


class _Walk:
    """A bounded walk over a GGUF header, refusing any count or length the file cannot hold."""

    def __init__(self, buf: mmap.mmap, size: int, version: int) -> None:
        self.buf, self.size, self.pos = buf, size, 8
        self.len_fmt = "<Q" if version >= 2 else "<I"  # v1 used 32-bit counts and lengths
        self.array_items = 0
        self.types: dict[str, int] = {}

    def run(self) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int]]]:
        n_tensors = self.length("the tensor count")
        n_kv = self.length("the key-value count")
        # The smallest possible tensor info and key-value, so a claim is checked in one step.
        len_bytes = struct.calcsize(self.len_fmt)
        for count, what, least in (
            (n_tensors, "tensors", len_bytes + 16),
            (n_kv, "key-values", len_bytes + 5),
        ):
            if count * least > self.size - self.pos:
                claim, said = f"it claims {count} {what}", f"{count:,} {what} follow"
                raise self.overrun(claim, said, plausible=count <= _PLAUSIBLE_COUNT)
        values: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self.name("a key")
            if key in values:
                raise FormatError(f"The GGUF header is damaged: the key '{key}' appears twice.")
            self.types[key] = vtype = self.unpack("<I", f"the type of '{key}'")
            values[key] = self.value(vtype, key, nested=False)
        tensors = []
        seen: set[str] = set()
        for _ in range(n_tensors):
            name = self.name("a tensor name")
            if name in seen:
                raise FormatError(f"The GGUF header is damaged: the tensor '{name}' appears twice.")
            seen.add(name)
            n_dims = self.unpack("<I", f"the shape of tensor '{name}'")
            if n_dims > 4:
                raise FormatError(
                    f"The GGUF header is damaged: the tensor '{name}' claims {n_dims} "
                    "dimensions; ggml tensors have at most 4."
                )
            dims = tuple(self.length(f"the shape of tensor '{name}'") for _ in range(n_dims))
            ttype = self.unpack("<I", f"the type of tensor '{name}'")
            offset = self.unpack("<Q", f"the offset of tensor '{name}'")
            tensors.append((name, dims, ttype, offset))
        return values, tensors

    def data_start(self, values: dict[str, Any]) -> int:
        alignment = values.get("general.alignment", 32)
        if (
            self.types.get("general.alignment", 4) != 4
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise FormatError(
                f"The GGUF header is damaged: general.alignment is {alignment!r}, "
                "not a power of two stored as uint32."
            )
        return int(self.pos + (-self.pos % alignment))

    def overrun(self, claim: str, said: str, *, plausible: bool) -> FormatError:
        """The error for a header claim that the rest of the file cannot hold.

        A real header cut short makes sensible claims; a damaged one makes absurd ones (2**60
        tensors), so the size of the claim decides which sentence helps the admin.
        """
        left = self.size - self.pos
        if plausible:
            return FormatError(
                f"The file is truncated: its GGUF header says {said}, but only {left:,} bytes "
                "are left in the file. Was the download interrupted?"
            )
        if claim.startswith("it claims"):
            return FormatError(
                f"The GGUF header is damaged: {claim} but the file is only {self.size:,} bytes."
            )
        return FormatError(
            f"The GGUF header is damaged: {claim} but only {left:,} bytes remain in the file."
        )

    def take(self, n: int, what: str) -> int:
        if n > self.size - self.pos:
            raise FormatError(
                f"The file is truncated: the GGUF header ends inside {what}, at byte "
                f"{self.size:,}. Was the download interrupted?"
            )
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def length(self, what: str) -> int:
        return int(self.unpack(self.len_fmt, what))

    def string(self, what: str) -> bytes | None:
        n = self.length(what)
        if n > self.size - self.pos:
            claim = f"{what} claims a length of {n:,} bytes"
            said = f"{what} is {n:,} bytes long"
            raise self.overrun(claim, said, plausible=n <= _PLAUSIBLE_STRING)
        start = self.take(n, what)
        return bytes(self.buf[start : start + n]) if n <= _MAX_KEPT_STRING else None

    def name(self, what: str) -> str:
        raw = self.string(what) or b""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(
                f"The GGUF header is damaged: {what} near byte {self.pos:,} is not UTF-8 text."
            ) from None

    def value(self, vtype: int, key: str, *, nested: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack("<" + _SCALARS[vtype], f"the value of '{key}'")
        if vtype == _STRING:
            raw = self.string(f"the value of '{key}'")
            return None if raw is None else raw.decode("utf-8", errors="replace")
        if vtype == _ARRAY and nested:
            raise FormatError(
                f"The GGUF header is damaged: the array '{key}' holds arrays, "
                "which llama.cpp does not read."
            )
        if vtype != _ARRAY:
            raise FormatError(
                f"The GGUF header is damaged: the key '{key}' has value type {vtype}, "
                "which is not a GGUF type."
            )
        item_type = self.unpack("<I", f"the value of '{key}'")
        n = self.length(f"the value of '{key}'")
        item_bytes = struct.calcsize("<" + _SCALARS.get(item_type, self.len_fmt[1:]))
        if n * item_bytes > self.size - self.pos:
            claim = f"the array '{key}' claims {n:,} items"
            said = f"the array '{key}' has {n:,} items"
            raise self.overrun(claim, said, plausible=n <= _MAX_ARRAY_ITEMS)
        self.array_items += n
        if self.array_items > _MAX_ARRAY_ITEMS:
            raise FormatError(
                f"The GGUF header holds more than {_MAX_ARRAY_ITEMS:,} array items in all "
                f"(the array '{key}' passes the limit), far beyond any real model's vocabulary."
            )
        if item_type in _SCALARS:
            fmt = f"<{n}{_SCALARS[item_type]}"
            start = self.take(n * item_bytes, f"the value of '{key}'")
            items = struct.unpack_from(fmt, self.buf, start) if n <= _KEPT_ARRAY_ITEMS else None
            return Array(n, items)
        for _ in range(n):
            if item_type == _STRING:
                self.string(f"an item of '{key}'")  # tokens and merges: skipped, not decoded
            else:
                self.value(item_type, key, nested=True)
        return Array(n, None)


def _check_tensor_data(
    tensors: list[tuple[str, tuple[int, ...], int, int]], data_start: int, size: int
) -> list[TensorInfo]:
    """Size each tensor; FormatError if a type is unknown, a shape impossible or data missing."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    out = []
    for name, dims, ttype, offset in tensors:
        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise FormatError(
                f"The tensor '{name}' uses ggml type {ttype}, which OpsDash does not know. "
                "The file may need a newer OpsDash."
            ) from None
        elements = 1
        for dim in dims:
            elements *= dim
        if dims and dims[0] % block:
            raise FormatError(
                f"The GGUF header is damaged: the tensor '{name}' has {dims[0]} columns, "
                f"not a multiple of its {block}-value blocks."
            )
        end = data_start + offset + elements // block * block_bytes
        if end > _PLAUSIBLE_FILE:
            raise FormatError(
                f"The GGUF header is damaged: the tensor '{name}' claims data up to byte "
                f"{end:,}, far beyond any model file."
            )
        if end > size:
            raise FormatError(
                f"The file is truncated: tensor data ends at byte {end:,} but the file has only "
                f"{size:,} bytes. Was the download interrupted?"
            )
        out.append(TensorInfo(name, elements, ttype, elements // block * block_bytes))
    return out


def _values_from_reader(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key-values, read by gguf.GGUFReader; any error it raises becomes a FormatError."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(path)
        values: dict[str, Any] = {}
        for key, fld in reader.fields.items():
            if key.startswith("GGUF.") or not fld.types:
                continue
            if fld.types[0] == GGUFValueType.ARRAY:
                numeric = len(fld.types) > 1 and fld.types[-1] not in (
                    GGUFValueType.STRING,
                    GGUFValueType.ARRAY,
                )
                items = fld.contents() if numeric and len(fld.data) <= _KEPT_ARRAY_ITEMS else None
                values[key] = Array(len(fld.data), tuple(items) if items is not None else None)
            elif fld.types[0] == GGUFValueType.STRING:
                values[key] = bytes(fld.parts[-1]).decode("utf-8", errors="replace")
            else:
                values[key] = fld.contents()
        return values
    except Exception as exc:  # the reader's errors are not meant for people; ours is
        raise FormatError(
            f"The GGUF file could not be read ({type(exc).__name__}: {exc}). "
            "It is probably damaged; try downloading it again."
        ) from exc
