"""What the repository holds: sources, not weights, caches or build output."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 2 * 1024 * 1024
# Third-party assets we serve ourselves (offline, no CDN) are the one exception, by path.
VENDORED = ("static/vendor/",)


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in listing.split("\0") if name]


def test_no_tracked_file_is_over_two_megabytes():
    files = tracked_files()
    assert "pyproject.toml" in files  # the listing really is this checkout's
    too_big = {
        name: (REPO / name).stat().st_size
        for name in files
        if not name.startswith(VENDORED)
        and (REPO / name).is_file()
        and (REPO / name).stat().st_size > LIMIT_BYTES
    }
    assert too_big == {}, f"tracked files over 2 MB (weights, caches, build output?): {too_big}"


def test_the_lock_file_is_tracked_and_build_output_is_not():
    files = tracked_files()
    assert "uv.lock" in files
    assert not [name for name in files if ".egg-info/" in name or name.startswith("cache/")]
