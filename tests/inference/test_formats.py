"""inference.formats: recognising model files, reading their metadata, refusing damaged ones.

The model files come from tests/conftest.py: ``tiny_gguf_path`` and ``tiny_ggml_path`` (written by
tests/fixtures/tinymodels.py) and ``smollm2_path``, the real demo model.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from inference.backends import choose_backend
from inference.backends.ctransformers import GGML_MODEL_TYPES
from inference.errors import FormatError
from inference.formats import (
    FileFormat,
    ModelMetadata,
    estimate_memory,
    fit_verdict,
    read_metadata,
    sniff,
)
from tests.fixtures.tinymodels import (
    TINY_GPT2_CONTEXT_LENGTH,
    TINY_LLAMA_BLOCK_COUNT,
    TINY_LLAMA_CONTEXT_LENGTH,
    TINY_LLAMA_EMBEDDING_LENGTH,
    TINY_LLAMA_HEAD_COUNT,
    TINY_LLAMA_HEAD_COUNT_KV,
    tiny_gpt2_parameter_count,
    tiny_gpt2_tensor_shapes,
    tiny_gpt2_vocab,
    tiny_llama_parameter_count,
    tiny_llama_tensor_shapes,
    tiny_llama_vocab,
)
from tests.inference.conftest import RunPython

GGML, GGMF, GGJT = 0x67676D6C, 0x67676D66, 0x67676A74
GIB = 1024**3


# --- helpers that build (mal)formed files byte by byte ---------------------------------------


def gguf_str(text: str | bytes, *, claimed: int | None = None, v1: bool = False) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<I" if v1 else "<Q", len(raw) if claimed is None else claimed) + raw


def kv_str(key: str, value: str, *, v1: bool = False) -> bytes:
    return gguf_str(key, v1=v1) + struct.pack("<I", 8) + gguf_str(value, v1=v1)


def kv_u32(key: str, value: int, *, v1: bool = False) -> bytes:
    return gguf_str(key, v1=v1) + struct.pack("<II", 4, value)


def gguf_file(
    path: Path, *, version: int = 3, n_tensors: int = 0, n_kv: int | None = None, body: bytes = b""
) -> Path:
    """A GGUF file whose counts say whatever the test needs; 1,024 bytes unless body is larger."""
    counts = struct.pack("<II" if version == 1 else "<QQ", n_tensors, n_kv or 0)
    raw = b"GGUF" + struct.pack("<I", version) + counts + body
    path.write_bytes(raw.ljust(1024, b"\0"))
    return path


def assert_sentence(error: FormatError, *phrases: str) -> None:
    """The reason is one or more plain sentences a person can read, naming the problem."""
    reason = error.reason
    assert reason == str(error)
    assert reason[0].isupper() and reason.rstrip().endswith((".", "?")), reason
    assert "Traceback" not in reason and "\n" not in reason, reason
    for phrase in phrases:
        assert phrase.lower() in reason.lower(), f"{phrase!r} not in {reason!r}"


def refusal(path: Path, **kwargs: str) -> FormatError:
    with pytest.raises(FormatError) as caught:
        read_metadata(path, **kwargs)
    return caught.value


# --- sniff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_it_recognises_each_gguf_version(tmp_path: Path, version: int) -> None:
    path = gguf_file(tmp_path / "m.gguf", version=version)
    assert sniff(path) == FileFormat("gguf", version)
    assert sniff(path).label == f"GGUF v{version}"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (struct.pack("<I6i", GGML, 1, 2, 3, 4, 5, 0), FileFormat("ggml", None)),
        (struct.pack("<II", GGMF, 1), FileFormat("ggmf", 1)),
        (struct.pack("<II", GGJT, 1), FileFormat("ggjt", 1)),
        (struct.pack("<II", GGJT, 2), FileFormat("ggjt", 2)),
        (struct.pack("<II", GGJT, 3), FileFormat("ggjt", 3)),
    ],
)
def test_it_recognises_each_legacy_ggml_magic(
    tmp_path: Path, head: bytes, expected: FileFormat
) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(head + bytes(64))
    assert sniff(path) == expected


def test_it_recognises_the_tiny_fixtures(tiny_gguf_path: Path, tiny_ggml_path: Path) -> None:
    assert sniff(tiny_gguf_path) == FileFormat("gguf", 3)
    assert sniff(tiny_ggml_path) == FileFormat("ggml", None)


def test_it_refuses_a_text_file_renamed_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("hello, this is not a model\n")
    with pytest.raises(FormatError) as caught:
        sniff(path)
    assert_sentence(caught.value, "not a model file", "'hell'", "text file", "GGUF")


def test_it_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert_sentence(refusal(path), "empty")


def test_it_refuses_a_file_shorter_than_any_magic(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GG")
    assert_sentence(refusal(path), "2 bytes", "too short")


def test_it_refuses_a_gguf_file_shorter_than_its_header(tmp_path: Path) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQ", 3, 1))
    assert_sentence(refusal(path), "16 bytes", "too short", "GGUF v3 header")


@pytest.mark.parametrize(("version", "hint"), [(4, "newer llama.cpp"), (0, "damaged")])
def test_it_refuses_an_unsupported_gguf_version(tmp_path: Path, version: int, hint: str) -> None:
    path = gguf_file(tmp_path / "m.gguf", version=version)
    error = refusal(path)
    assert_sentence(error, f"version {version}", "GGUF (v1–v3)", hint)


def test_it_refuses_a_big_endian_gguf_with_its_own_sentence(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    path.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + bytes(64))
    assert_sentence(refusal(path), "big-endian")


def test_it_refuses_a_ggjt_version_ggml_never_wrote(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<II", GGJT, 9) + bytes(64))
    assert_sentence(refusal(path), "ggjt", "version 9")


@pytest.mark.parametrize(
    ("head", "hint"),
    [
        (b"<!DOCTYPE html><html>", "web page"),
        (b"PK\x03\x04" + bytes(30), "zip archive"),
        (struct.pack("<Q", 100) + b'{"__metadata__": {}}', "safetensors"),
        (struct.pack("<I", 0x67676C61) + bytes(30), "LoRA adapter"),
        (bytes(range(200, 232)), "unknown binary format"),
    ],
)
def test_it_says_what_a_non_model_file_looks_like(tmp_path: Path, head: bytes, hint: str) -> None:
    path = tmp_path / "download.gguf"
    path.write_bytes(head)
    assert_sentence(refusal(path), hint)


def test_it_refuses_a_path_that_is_not_a_readable_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as caught:
        sniff(tmp_path / "missing.gguf")
    assert_sentence(caught.value, "missing.gguf", "no such file")
    with pytest.raises(FormatError):
        read_metadata(tmp_path)


# --- damaged GGUF headers ---------------------------------------------------------------------


def test_it_refuses_a_truncated_gguf(tmp_path: Path, tiny_gguf_path: Path) -> None:
    raw = tiny_gguf_path.read_bytes()
    path = tmp_path / "half.gguf"
    path.write_bytes(raw[: len(raw) // 2])
    error = refusal(path)
    assert_sentence(error, "truncated", f"only {len(raw) // 2:,} bytes", "interrupted")
    assert re.search(r"ends at byte [\d,]+", error.reason)


def test_it_refuses_a_gguf_cut_inside_its_header(tmp_path: Path, tiny_gguf_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_gguf_path.read_bytes()[:300])
    assert_sentence(refusal(path), "truncated", "only 276 bytes are left", "interrupted")


def test_it_refuses_a_header_claiming_2_to_the_60_tensors(tmp_path: Path) -> None:
    path = gguf_file(tmp_path / "m.gguf", n_tensors=2**60)
    error = refusal(path)
    assert_sentence(error, "damaged", f"claims {2**60} tensors", "only 1,024 bytes")


def test_it_refuses_a_header_claiming_2_to_the_60_key_values(tmp_path: Path) -> None:
    path = gguf_file(tmp_path / "m.gguf", n_kv=2**60)
    assert_sentence(refusal(path), "damaged", f"claims {2**60} key-values")


def test_it_refuses_a_key_claiming_a_2_to_the_40_byte_length(tmp_path: Path) -> None:
    body = gguf_str(b"general.name", claimed=2**40)
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=body)
    assert_sentence(refusal(path), "damaged", f"length of {2**40:,} bytes", "remain")


def test_it_refuses_a_string_value_claiming_a_2_to_the_40_byte_length(tmp_path: Path) -> None:
    body = gguf_str("general.name") + struct.pack("<I", 8) + gguf_str(b"x", claimed=2**40)
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=body)
    assert_sentence(refusal(path), "'general.name'", f"length of {2**40:,} bytes")


def test_it_refuses_an_array_claiming_more_items_than_the_file_holds(tmp_path: Path) -> None:
    body = gguf_str("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**40)
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=body)
    assert_sentence(refusal(path), "array 'tokenizer.ggml.scores'", f"{2**40:,} items")


def test_it_refuses_a_value_type_gguf_does_not_have(tmp_path: Path) -> None:
    body = gguf_str("general.name") + struct.pack("<I", 13) + bytes(8)
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=body)
    assert_sentence(refusal(path), "value type 13", "not a GGUF type")


def test_it_refuses_a_key_that_appears_twice(tmp_path: Path) -> None:
    body = kv_str("general.architecture", "llama") * 2
    path = gguf_file(tmp_path / "m.gguf", n_kv=2, body=body)
    assert_sentence(refusal(path), "'general.architecture' appears twice")


def test_it_refuses_a_tensor_with_more_than_four_dimensions(tmp_path: Path) -> None:
    info = gguf_str("w") + struct.pack("<I5QIQ", 5, 1, 1, 1, 1, 1, 0, 0)
    path = gguf_file(tmp_path / "m.gguf", n_tensors=1, body=info)
    assert_sentence(refusal(path), "'w'", "5 dimensions")


def test_it_refuses_a_tensor_type_ggml_does_not_have(tmp_path: Path) -> None:
    info = gguf_str("w") + struct.pack("<IQIQ", 1, 4, 999, 0)
    path = gguf_file(tmp_path / "m.gguf", n_tensors=1, body=info)
    assert_sentence(refusal(path), "'w'", "ggml type 999")


def test_it_refuses_a_tensor_claiming_data_beyond_any_real_file(tmp_path: Path) -> None:
    info = gguf_str("w") + struct.pack("<IQIQ", 1, 32, 0, 2**62)
    path = gguf_file(tmp_path / "m.gguf", n_tensors=1, body=info)
    assert_sentence(refusal(path), "damaged", "'w'", "far beyond any model file")


def test_it_refuses_a_gguf_lora_adapter_as_a_model(tmp_path: Path) -> None:
    body = kv_str("general.architecture", "llama") + kv_str("general.type", "adapter")
    path = gguf_file(tmp_path / "adapter.gguf", n_kv=2, body=body)
    assert_sentence(refusal(path), "LoRA adapter", "base model")


def test_it_refuses_an_alignment_that_is_not_a_power_of_two(tmp_path: Path) -> None:
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=kv_u32("general.alignment", 48))
    assert_sentence(refusal(path), "general.alignment", "power of two")


def test_it_refuses_a_key_that_is_not_utf8(tmp_path: Path) -> None:
    body = gguf_str(b"\xff\xfe") + struct.pack("<II", 4, 1)
    path = gguf_file(tmp_path / "m.gguf", n_kv=1, body=body)
    assert_sentence(refusal(path), "not UTF-8")


def test_damage_anywhere_in_a_real_file_is_only_ever_a_format_error(
    tmp_path: Path, tiny_gguf_path: Path
) -> None:
    """Cuts at every kind of boundary and random byte flips in the header: never a crash."""
    raw = tiny_gguf_path.read_bytes()
    rng = np.random.default_rng(1)
    header_end = raw.index(b"token_embd.weight") + 200
    variants = [raw[:cut] for cut in (9, 17, 25, 40, 100, 1000, header_end, len(raw) - 1)]
    for _ in range(150):
        damaged = bytearray(raw)
        for at in rng.integers(8, header_end, size=rng.integers(1, 4)):
            damaged[at] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    path = tmp_path / "damaged.gguf"
    refused = 0
    for variant in variants:
        path.write_bytes(variant)
        try:
            metadata = read_metadata(path)
        except FormatError as error:
            refused += 1
            assert_sentence(error)
        else:
            assert metadata.format == "gguf"
    assert refused >= 8  # at least every cut file


def test_importing_formats_loads_neither_django_nor_gguf(run_python: RunPython) -> None:
    """Choosing a backend on the web path must not pay for numpy, gguf or anything Django."""
    heavy = ("django", "opsdash", "gguf", "numpy", "llama_cpp", "ctransformers")
    code = (
        "import json, sys; import inference.formats; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    assert run_python(code) == []


# --- GGUF metadata ----------------------------------------------------------------------------


def test_it_reads_the_tiny_gguf_metadata(tiny_gguf_path: Path) -> None:
    metadata = read_metadata(tiny_gguf_path)
    assert metadata.format == "gguf"
    assert metadata.format_version == 3
    assert metadata.architecture == "llama"
    assert metadata.name == "tiny-llama"
    assert metadata.parameter_count == tiny_llama_parameter_count()
    assert metadata.parameter_count == sum(
        int(np.prod(shape)) for shape in tiny_llama_tensor_shapes().values()
    )
    assert metadata.quantization == "F32"
    assert metadata.context_length == TINY_LLAMA_CONTEXT_LENGTH
    assert metadata.embedding_length == TINY_LLAMA_EMBEDDING_LENGTH
    assert metadata.block_count == TINY_LLAMA_BLOCK_COUNT
    assert metadata.head_count == TINY_LLAMA_HEAD_COUNT
    assert metadata.head_count_kv == TINY_LLAMA_HEAD_COUNT_KV
    assert metadata.vocab_size == len(tiny_llama_vocab())
    assert metadata.tokenizer_model == "llama"
    assert metadata.chat_template and "add_generation_prompt" in metadata.chat_template
    assert metadata.size_bytes == tiny_gguf_path.stat().st_size
    assert metadata.tensor_count == len(tiny_llama_tensor_shapes())
    assert metadata.hyperparameters == {}


def test_metadata_as_dict_is_json_safe(tiny_gguf_path: Path, tiny_ggml_path: Path) -> None:
    for metadata in (read_metadata(tiny_gguf_path), read_metadata(tiny_ggml_path)):
        as_dict = metadata.as_dict()
        assert json.loads(json.dumps(as_dict)) == as_dict
        assert as_dict["size_bytes"] == metadata.size_bytes


def test_it_names_the_dominant_tensor_type_when_file_type_is_missing(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "nofiletype.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("big", np.zeros((64, 64), dtype=np.float16))
    writer.add_tensor("small", np.zeros((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    metadata = read_metadata(path)
    assert metadata.quantization == "F16"
    assert metadata.parameter_count == 64 * 64 + 8


def test_it_reads_a_gguf_v1_file_that_gguf_reader_refuses(tmp_path: Path) -> None:
    body = (
        kv_str("general.architecture", "llama", v1=True)
        + kv_str("general.name", "old-timer", v1=True)
        + kv_u32("llama.context_length", 2048, v1=True)
        + gguf_str("tokenizer.ggml.tokens", v1=True)
        + struct.pack("<III", 9, 8, 3)
        + b"".join(gguf_str(t, v1=True) for t in ("<unk>", "<s>", "</s>"))
        + gguf_str("w", v1=True)
        + struct.pack("<IIIIQ", 2, 4, 3, 0, 0)  # 2 dims (4, 3), f32, offset 0
    )
    path = tmp_path / "v1.gguf"
    raw = b"GGUF" + struct.pack("<III", 1, 1, 4) + body
    path.write_bytes(raw + bytes(-len(raw) % 32) + bytes(48))
    metadata = read_metadata(path)
    assert (metadata.format, metadata.format_version) == ("gguf", 1)
    assert metadata.architecture == "llama"
    assert metadata.name == "old-timer"
    assert metadata.context_length == 2048
    assert metadata.vocab_size == 3
    assert metadata.parameter_count == 12
    assert metadata.quantization == "F32"
    verdict = choose_backend(metadata)
    assert verdict.backend == "ctransformers"
    assert verdict.candidates == ("ctransformers",)
    pinned = choose_backend(metadata, pinned="llama_cpp")
    assert pinned.backend is None and "GGUF v1" in pinned.reason


def test_it_reads_the_smollm2_demo_model(smollm2_path: Path) -> None:
    metadata = read_metadata(smollm2_path)
    assert metadata.architecture == "llama"
    assert metadata.parameter_count is not None
    assert 130e6 <= metadata.parameter_count <= 140e6
    assert metadata.quantization == "Q4_1"
    assert metadata.context_length == 8192
    assert metadata.chat_template and "<|im_start|>" in metadata.chat_template
    assert metadata.vocab_size == 49152
    assert choose_backend(metadata).backend == "llama_cpp"


# --- legacy GGML metadata ---------------------------------------------------------------------


def test_it_reads_the_tiny_ggml_gpt2_metadata_with_its_model_type(tiny_ggml_path: Path) -> None:
    metadata = read_metadata(tiny_ggml_path, model_type="gpt2")
    assert (metadata.format, metadata.format_version) == ("ggml", None)
    assert metadata.architecture == "gpt2"
    assert metadata.hyperparameters == {
        "n_vocab": len(tiny_gpt2_vocab()),
        "n_ctx": TINY_GPT2_CONTEXT_LENGTH,
        "n_embd": 32,
        "n_head": 4,
        "n_layer": 2,
        "ftype": 0,
    }
    assert metadata.parameter_count == tiny_gpt2_parameter_count()
    assert metadata.tensor_count == len(tiny_gpt2_tensor_shapes())
    assert metadata.quantization == "F32"
    assert metadata.context_length == TINY_GPT2_CONTEXT_LENGTH
    assert metadata.vocab_size == len(tiny_gpt2_vocab())
    assert metadata.chat_template is None
    assert metadata.notes == ()


def test_it_accepts_model_types_spelled_the_way_ctransformers_does(tiny_ggml_path: Path) -> None:
    assert read_metadata(tiny_ggml_path, model_type=" GPT-2 ").architecture == "gpt2"


def test_without_a_model_type_it_shows_the_header_unnamed_and_says_so(tiny_ggml_path: Path) -> None:
    metadata = read_metadata(tiny_ggml_path)
    assert metadata.architecture is None
    assert list(metadata.hyperparameters) == [f"hparam_{i}" for i in range(6)]
    assert metadata.hyperparameters["hparam_0"] == len(tiny_gpt2_vocab())
    assert metadata.parameter_count is None
    assert len(metadata.notes) == 1 and "Name the model type" in metadata.notes[0]


def test_an_unknown_model_type_is_kept_so_the_verdict_can_name_it(tiny_ggml_path: Path) -> None:
    metadata = read_metadata(tiny_ggml_path, model_type="bloom")
    assert metadata.architecture == "bloom"
    assert "'bloom' is not a model type" in metadata.notes[0]
    verdict = choose_backend(metadata)
    assert verdict.backend is None and "'bloom'" in verdict.reason


def test_it_refuses_a_truncated_ggml_file(tmp_path: Path, tiny_ggml_path: Path) -> None:
    raw = tiny_ggml_path.read_bytes()
    path = tmp_path / "half.bin"
    path.write_bytes(raw[: len(raw) // 2])
    assert_sentence(refusal(path, model_type="gpt2"), "truncated", "interrupted")


def test_it_refuses_a_gpt2_model_type_for_a_llama_cpp_container(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<II7i", GGJT, 3, 10, 8, 2, 2, 1, 4, 0) + bytes(64))
    assert_sentence(refusal(path, model_type="gpt2"), "ggjt", "Check the model type")


def test_it_refuses_a_model_type_whose_layout_does_not_fit(
    tmp_path: Path, tiny_ggml_path: Path
) -> None:
    # Read as gpt_neox (two more header ints), the vocabulary starts mid-token: garbage lengths.
    error = refusal(tiny_ggml_path, model_type="gpt_neox")
    assert_sentence(error, "does not read as a gpt_neox GGML model", "model type")


def test_it_reads_a_ggjt_v3_llama_header_with_scores_and_alignment(tmp_path: Path) -> None:
    hparams = (5, 32, 256, 4, 1, 8, 2)  # n_vocab, n_embd, n_mult, n_head, n_layer, n_rot, ftype
    raw = bytearray(struct.pack("<II7i", GGJT, 3, *hparams))
    for token in (b"<unk>", b"<s>", b"</s>", b"a", b"b"):
        raw += struct.pack("<I", len(token)) + token + struct.pack("<f", -1.0)
    for name, ttype, dims, n_bytes in (
        (b"norm.weight", 0, (32,), 32 * 4),
        (b"tok_embeddings.weight", 2, (32, 5), 5 * 18),  # Q4_0: 18 bytes per 32 values
    ):
        raw += struct.pack(f"<3i{len(dims)}i", len(dims), len(name), ttype, *dims) + name
        raw += bytes(-len(raw) % 32) + bytes(n_bytes)
    path = tmp_path / "llama.ggjt.bin"
    path.write_bytes(bytes(raw))
    metadata = read_metadata(path, model_type="llama")
    assert (metadata.format, metadata.format_version) == ("ggjt", 3)
    assert metadata.hyperparameters["n_mult"] == 256
    assert metadata.quantization == "Q4_0"
    assert metadata.parameter_count == 32 + 32 * 5
    assert metadata.tensor_count == 2
    assert metadata.context_length is None  # llama.cpp's old files did not record it
    assert (metadata.embedding_length, metadata.head_count, metadata.head_count_kv) == (32, 4, 4)


# --- backend choice ---------------------------------------------------------------------------


def metadata_for(
    format: str = "gguf", architecture: str | None = "llama", **extra: object
) -> ModelMetadata:
    values: dict[str, object] = {
        "format": format,
        "format_version": 3 if format in ("gguf", "ggjt") else None,
        "architecture": architecture,
        "name": None,
        "parameter_count": 1000,
        "quantization": "Q4_0",
        "context_length": 4096,
        "embedding_length": 4096,
        "block_count": 32,
        "head_count": 32,
        "head_count_kv": 8,
        "vocab_size": 32000,
        "tokenizer_model": "llama",
        "chat_template": None,
        "size_bytes": 4 * GIB,
        "tensor_count": 10,
    }
    return ModelMetadata(**(values | extra))  # type: ignore[arg-type]


def test_gguf_goes_to_llama_cpp_with_both_backends_as_candidates_for_llama() -> None:
    verdict = choose_backend(metadata_for())
    assert verdict.backend == "llama_cpp"
    assert verdict.candidates == ("llama_cpp", "ctransformers")
    assert "llama" in verdict.reason


def test_gguf_of_any_other_architecture_goes_to_llama_cpp_alone() -> None:
    verdict = choose_backend(metadata_for(architecture="qwen2"))
    assert (verdict.backend, verdict.candidates) == ("llama_cpp", ("llama_cpp",))


@pytest.mark.parametrize("architecture", ["llama", "falcon"])
def test_gguf_pinned_to_ctransformers_runs_there_for_llama_and_falcon(architecture: str) -> None:
    verdict = choose_backend(metadata_for(architecture=architecture), pinned="ctransformers")
    assert verdict.backend == "ctransformers"


def test_gguf_pinned_to_ctransformers_is_refused_for_other_architectures() -> None:
    verdict = choose_backend(metadata_for(architecture="qwen2"), pinned="ctransformers")
    assert verdict.backend is None
    assert "only for llama and falcon" in verdict.reason and "qwen2" in verdict.reason


def test_gguf_pinned_to_llama_cpp_stays_there() -> None:
    assert choose_backend(metadata_for(), pinned="llama_cpp").backend == "llama_cpp"


def test_gguf_without_an_architecture_has_no_backend() -> None:
    verdict = choose_backend(metadata_for(architecture=None))
    assert verdict.backend is None and "general.architecture" in verdict.reason


@pytest.mark.parametrize("model_type", GGML_MODEL_TYPES)
@pytest.mark.parametrize("kind", ["ggml", "ggmf", "ggjt"])
def test_legacy_ggml_goes_to_ctransformers_for_its_model_types(kind: str, model_type: str) -> None:
    verdict = choose_backend(metadata_for(kind, model_type))
    assert (verdict.backend, verdict.candidates) == ("ctransformers", ("ctransformers",))


def test_legacy_ggml_without_a_model_type_asks_the_admin_to_name_it() -> None:
    verdict = choose_backend(metadata_for("ggjt", None))
    assert verdict.backend is None and verdict.candidates == ()
    assert "Name the model type" in verdict.reason and "usually llama" in verdict.reason
    assert all(t in verdict.reason for t in GGML_MODEL_TYPES)


def test_legacy_ggml_pinned_to_llama_cpp_is_refused() -> None:
    verdict = choose_backend(metadata_for("ggml", "gpt2"), pinned="llama_cpp")
    assert verdict.backend is None
    assert "llama.cpp dropped legacy GGML support in 2023; use ctransformers" in verdict.reason


def test_an_unknown_pinned_backend_is_refused() -> None:
    verdict = choose_backend(metadata_for(), pinned="vllm")
    assert verdict.backend is None and "'vllm'" in verdict.reason


def test_the_tiny_fixtures_get_their_backends(tiny_gguf_path: Path, tiny_ggml_path: Path) -> None:
    assert choose_backend(read_metadata(tiny_gguf_path)).backend == "llama_cpp"
    assert (
        choose_backend(read_metadata(tiny_ggml_path, model_type="gpt2")).backend == "ctransformers"
    )


# --- memory -----------------------------------------------------------------------------------


def test_memory_estimate_adds_weights_an_f16_kv_cache_and_overhead() -> None:
    estimate = estimate_memory(metadata_for())
    # 2 (K and V) × 32 layers × 4096 positions × (4096 × 8 / 32) values × 2 bytes = 512 MiB
    assert estimate.kv_cache_bytes == 512 * 1024**2
    assert estimate.weights_bytes == 4 * GIB
    assert 0 < estimate.overhead_bytes < GIB
    assert estimate.total_bytes == (
        estimate.weights_bytes + estimate.kv_cache_bytes + estimate.overhead_bytes
    )


def test_memory_estimate_follows_the_context_the_runner_will_use() -> None:
    full = estimate_memory(metadata_for())
    short = estimate_memory(metadata_for(), context_length=1024)
    assert short.kv_cache_bytes * 4 == full.kv_cache_bytes


def test_memory_estimate_without_attention_shape_counts_no_kv_cache(tiny_ggml_path: Path) -> None:
    estimate = estimate_memory(metadata_for("ggml", None, block_count=None))
    assert estimate.kv_cache_bytes == 0
    assert estimate_memory(read_metadata(tiny_ggml_path)).kv_cache_bytes == 0


@pytest.mark.parametrize(
    ("total", "available", "verdict"),
    [
        (70, 100, "fits"),
        (71, 100, "tight"),
        (100, 100, "tight"),
        (101, 100, "does not fit"),
        (1, 0, "does not fit"),
    ],
)
def test_fit_verdict_has_a_safety_margin(total: int, available: int, verdict: str) -> None:
    assert fit_verdict(total, available) == verdict
