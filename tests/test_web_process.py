"""The web process never loads native model code: that lives in runner processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_serving_and_installing_import_no_native_model_library(tmp_path):
    code = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "opsdash.settings"
import opsdash.asgi  # the whole web application, URLconf included
from django.urls import get_resolver
get_resolver().url_patterns
import opsdash.catalog.services, opsdash.catalog.views, opsdash.api
native = ("llama_cpp", "ctransformers", "gguf", "numpy")
print(json.dumps(sorted(m for m in native if m in sys.modules)))
"""
    env = {"OPSDASH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
