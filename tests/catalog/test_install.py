"""Installing from a server path: the whole pipeline, and every way it must refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from opsdash.catalog import services
from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
from opsdash.core.models import AuditEntry
from tests.catalog.helpers import gguf_header, model_files, partial_files, place

pytestmark = pytest.mark.django_db


def install(path: Path, admin: User | None = None, **options: str) -> LocalModel:
    source = services.InstallSource(SourceKind.PATH, str(path), **options)
    return services.install_model(source=source, user=admin)


def test_it_installs_the_tiny_gguf_with_its_metadata(admin, model_root, tiny_gguf_path):
    model = install(place(tiny_gguf_path, model_root), admin)

    assert model.status == ModelStatus.READY, model.error
    assert (model.format, model.architecture, model.quantization) == ("gguf", "llama", "F32")
    assert model.backend == "llama_cpp"
    assert model.parameter_count and model.parameter_count > 1000
    assert model.context_length and model.vocab_size
    assert len(model.sha256) == 64
    assert Path(model.file_path).parent == settings.MODELS_DIR
    assert Path(model.file_path).read_bytes() == tiny_gguf_path.read_bytes()
    assert model.trial_seconds is not None and model.trial_seconds > 0
    assert partial_files(settings.MODELS_DIR) == []
    trail = AuditEntry.objects.filter(target_type="model", target_id=str(model.pk))
    assert list(trail.values_list("action", "outcome")) == [
        ("model.install", "ok"),
        ("model.install.start", "ok"),
    ]


def test_it_installs_a_legacy_ggml_file_when_told_its_model_type(admin, model_root, tiny_ggml_path):
    model = install(place(tiny_ggml_path, model_root), admin, model_type="gpt2")

    assert model.status == ModelStatus.READY, model.error
    assert (model.format, model.backend, model.model_type) == ("ggml", "ctransformers", "gpt2")
    assert model.metadata["hyperparameters"]["n_layer"] >= 1


def test_a_legacy_ggml_file_without_a_model_type_fails_with_what_to_do(
    admin, model_root, tiny_ggml_path
):
    model = install(place(tiny_ggml_path, model_root), admin)

    assert model.status == ModelStatus.FAILED
    assert "model type" in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_it_refuses_a_file_whose_sha256_is_already_installed(admin, model_root, tiny_gguf_path):
    first = install(place(tiny_gguf_path, model_root), admin)
    second = install(place(tiny_gguf_path, model_root, "copy.gguf"), admin)

    assert second.status == ModelStatus.FAILED
    assert "already installed" in second.error and f"/models/{first.pk}/" in second.error
    assert model_files(settings.MODELS_DIR) == [Path(first.file_path)]


def test_an_expected_sha256_that_is_already_installed_is_refused_before_copying(
    admin, model_root, tiny_gguf_path
):
    first = install(place(tiny_gguf_path, model_root), admin)
    with pytest.raises(services.InstallRefused, match="already installed"):
        install(
            place(tiny_gguf_path, model_root, "again.gguf"), admin, expected_sha256=first.sha256
        )


def test_a_wrong_expected_sha256_fails_and_keeps_nothing(admin, model_root, tiny_gguf_path):
    model = install(place(tiny_gguf_path, model_root), admin, expected_sha256="0" * 64)

    assert model.status == ModelStatus.FAILED
    assert "not the expected" in model.error and "0" * 64 in model.error
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("hello, I am a text file\n" * 20), "not a model file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: gguf_header(p, tensors=2**60, tail=b"\0" * 1024), "tensors"),
        (lambda p: gguf_header(p, kvs=2**60, tail=b"\0" * 1024), "key"),
        # one key-value whose key claims to be 2**40 bytes long
        (lambda p: gguf_header(p, kvs=1, tail=(2**40).to_bytes(8, "little") + b"k" * 64), "bytes"),
    ],
    ids=["text-file", "empty", "2^60-tensors", "2^60-kvs", "2^40-byte-string"],
)
def test_malformed_files_fail_with_a_readable_reason(admin, model_root, make, words):
    path = model_root / "bad.gguf"
    make(path)
    model = install(path, admin)

    assert model.status == ModelStatus.FAILED
    assert words in model.error.lower(), model.error
    assert model.error.endswith((".", ")", "?")), "a sentence, not an exception repr"
    assert partial_files(settings.MODELS_DIR) == [] and model_files(settings.MODELS_DIR) == []


def test_a_truncated_gguf_fails_as_truncated(admin, model_root, tiny_gguf_path):
    data = tiny_gguf_path.read_bytes()
    (model_root / "half.gguf").write_bytes(data[: len(data) // 2])
    model = install(model_root / "half.gguf", admin)

    assert model.status == ModelStatus.FAILED
    assert "truncated" in model.error.lower()


def test_a_file_the_backend_cannot_load_fails_at_the_trial_load(admin, model_root, tiny_gguf_path):
    # A valid header whose tensor data is garbage of the right size: only loading can tell.
    data = bytearray(tiny_gguf_path.read_bytes())
    text_at = data.find(b"llama")  # corrupt the architecture name: llama.cpp will refuse it
    data[text_at : text_at + 5] = b"zzzzz"
    (model_root / "odd.gguf").write_bytes(bytes(data))
    model = install(model_root / "odd.gguf", admin)

    assert model.status == ModelStatus.FAILED
    assert "trial load" in model.error or "architecture" in model.error.lower()
    assert model_files(settings.MODELS_DIR) == []


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("/etc/passwd", "outside the folders"),
        ("{root}/../{outside}", "'..'"),
        ("relative/model.gguf", "not absolute"),
        ("{root}/missing.gguf", "no file"),
    ],
    ids=["outside", "dot-dot", "relative", "missing"],
)
def test_server_paths_outside_the_roots_are_refused(admin, model_root, tmp_path, location, words):
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(b"GGUF")
    path = location.format(root=model_root, outside=outside.name)
    with pytest.raises(services.InstallRefused, match=words):
        install(Path(path) if path.startswith("/") else path, admin)  # type: ignore[arg-type]
    assert not LocalModel.objects.exists()
    assert AuditEntry.objects.get().outcome == "refused"


def test_a_symlink_that_leaves_the_roots_is_refused(admin, model_root, tmp_path, tiny_gguf_path):
    outside = place(tiny_gguf_path, tmp_path)
    (model_root / "link.gguf").symlink_to(outside)
    with pytest.raises(services.InstallRefused, match="link that leads outside"):
        install(model_root / "link.gguf", admin)


def test_path_installs_are_off_until_roots_are_configured(admin, settings, tiny_gguf_path):
    settings.MODEL_ROOTS = []
    with pytest.raises(services.InstallRefused, match="OPSDASH_MODEL_ROOTS"):
        install(tiny_gguf_path, admin)


def test_an_unknown_model_type_is_refused(admin, model_root, tiny_ggml_path):
    with pytest.raises(services.InstallRefused, match="Unknown model type"):
        install(place(tiny_ggml_path, model_root), admin, model_type="gpt5")


def test_it_refuses_up_front_when_the_disk_cannot_hold_the_file(
    admin, settings, model_root, tiny_gguf_path
):
    settings.MIN_FREE_BYTES = 2**62  # more than any disk has free
    model = install(place(tiny_gguf_path, model_root), admin)

    assert model.status == ModelStatus.FAILED
    assert "Not enough disk space" in model.error and "OPSDASH_MIN_FREE_BYTES" in model.error


def test_a_restart_fails_interrupted_installs_and_removes_their_partial_files(admin):
    dead = LocalModel.objects.create(
        name="x",
        slug="x",
        source_kind=SourceKind.URL,
        source_ref="http://example.invalid/x",
        install_host=os.uname().nodename,
        install_pid=2**22 + 12345,  # no such process
    )
    leftover = services.new_partial_path()
    leftover.write_bytes(b"half a model")

    assert services.recover_interrupted_installs() == 1

    dead.refresh_from_db()
    assert dead.status == ModelStatus.FAILED and "interrupted" in dead.error
    assert not leftover.exists()


def test_a_nul_byte_in_a_path_is_refused_with_a_sentence_by_every_entry_point(
    admin, as_admin, model_root
):
    from django.core.management import CommandError, call_command

    path = f"{model_root}/model\x00.gguf"
    with pytest.raises(services.InstallRefused, match="NUL byte"):
        install(path, admin)  # type: ignore[arg-type]

    page = as_admin.post("/models/install/", {"source": "path", "path": path})
    assert page.status_code == 400
    assert "NUL byte" in page.content.decode()

    with pytest.raises(CommandError, match="NUL byte"):
        call_command("install_model", path)
    assert not LocalModel.objects.exists()
    refusals = AuditEntry.objects.filter(outcome="refused")
    assert refusals.count() == 3
    assert all("\x00" not in entry.detail for entry in refusals), "no NUL reaches the database"
