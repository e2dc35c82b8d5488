"""Fixtures for the inference tests: a way to run native code in a child process.

Native libraries can crash the process that loads them, so every test that loads a model does
it in a subprocess (``run_python``) and asserts on the JSON the child prints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

RunPython = Callable[..., Any]

# The model-file fixtures (smollm2_path, tiny_gguf_path, tiny_ggml_path) come from
# tests/conftest.py.


def _run_python(code: str, *args: str, timeout: float = 120.0) -> Any:
    """Run ``code`` in a fresh interpreter and return the JSON it prints on its last line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"The child process did not finish within {timeout} s.")
    stderr = done.stderr.decode("utf-8", errors="replace")[-2000:]
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        pytest.fail(f"The child process died with {name}. stderr:\n{stderr}")
    if done.returncode != 0:
        pytest.fail(f"The child process exited with {done.returncode}. stderr:\n{stderr}")
    lines = done.stdout.decode("utf-8").strip().splitlines()
    if not lines:
        pytest.fail(f"The child process printed nothing. stderr:\n{stderr}")
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def run_python() -> RunPython:
    """``run_python(code, *argv, timeout=120)`` → the JSON value the child printed last."""
    return _run_python
