"""Install throughput: OpsDash's path install against `sha256sum` of the same file.

Writes a 1 GiB file of random bytes into a temporary model root, runs `sha256sum` on it (the
peer: the least an install must do is read and hash every byte), then installs it through the
real install service — copy and hash in one pass into `.partial`, sniff, metadata, trial load,
rename. The file is a valid GGUF, so the whole pipeline runs: the tiny test llama padded with
random bytes to 1 GiB.

Prints both throughputs and their ratio (goal: >= 0.8), best of three runs each. Both read the
file from the page cache after a warm-up read, so the comparison is CPU and write path, not disk
luck. (The first install of a run can be several times slower while the kernel finds fresh
page-cache pages for the new 1 GiB file; best-of-three measures the steady state.)

    make bench            # or: .venv/bin/python bench/install.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_model(path: Path, size_mib: int) -> None:
    """The tiny test llama, padded with random bytes to ``size_mib``: a loadable 1 GiB GGUF."""
    from tests.fixtures.tinymodels import write_tiny_gguf_llama

    tiny = path.with_suffix(".tiny.gguf")
    write_tiny_gguf_llama(tiny)
    with path.open("wb") as out, tiny.open("rb") as src:
        out.write(src.read())
        # Pad after the tensor data: readers go by offsets, so trailing bytes are harmless,
        # and they make the file as big as a real quantized 2B model.
        chunk = os.urandom(16 * 1024 * 1024)
        remaining = size_mib * 1024 * 1024 - out.tell()
        while remaining > 0:
            n = min(len(chunk), remaining)
            out.write(chunk[:n])
            remaining -= n
    tiny.unlink()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=REPO / "var") as tmp:
        work = Path(tmp)
        os.environ["OPSDASH_DATA_DIR"] = str(work / "data")
        os.environ["OPSDASH_MODEL_ROOTS"] = str(work / "root")
        os.environ["OPSDASH_MIN_FREE_BYTES"] = "0"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
        (work / "root").mkdir()
        source = work / "root" / "bench.gguf"
        write_model(source, args.size_mib)
        size = source.stat().st_size

        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from opsdash.catalog import services
        from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind

        subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # warm cache

        def sha256sum() -> None:
            subprocess.run(["sha256sum", str(source)], capture_output=True, check=True)

        peer = min(timed(sha256sum) for _ in range(args.repeat))

        def install_once() -> None:
            model = services.install_model(
                source=services.InstallSource(SourceKind.PATH, str(source)), user=None
            )
            assert model.status == ModelStatus.READY, model.error
            Path(model.file_path).unlink()
            LocalModel.objects.all().delete()

        ours = min(timed(install_once) for _ in range(args.repeat))

    mib = size / 1024 / 1024
    print(f"file: {mib:.0f} MiB")
    print(f"sha256sum (peer):        {peer:6.2f} s  {mib / peer:7.1f} MiB/s")
    print(f"OpsDash install by path: {ours:6.2f} s  {mib / ours:7.1f} MiB/s")
    print(f"ratio (OpsDash / sha256sum throughput): {peer / ours:.2f}  (goal >= 0.8)")


if __name__ == "__main__":
    main()
