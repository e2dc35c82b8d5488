"""Small builders shared by the catalog tests."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from opsdash.catalog.models import LocalModel


def place(source: Path, root: Path, name: str | None = None) -> Path:
    """Copy a fixture into the model root, as an admin would."""
    target = root / (name or source.name)
    shutil.copyfile(source, target)
    return target


def gguf_header(path: Path, *, tensors: int = 0, kvs: int = 0, tail: bytes = b"") -> Path:
    """A GGUF v3 header with the given counts and nothing (or ``tail``) after it."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs) + tail)
    return path


def partial_files(models_dir: Path) -> list[Path]:
    folder = models_dir / ".partial"
    return list(folder.iterdir()) if folder.exists() else []


def model_files(models_dir: Path) -> list[Path]:
    return [p for p in models_dir.iterdir() if p.is_file()]


def fresh(model: LocalModel) -> LocalModel:
    model.refresh_from_db()
    return model
