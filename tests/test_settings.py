"""Settings helpers refuse malformed values instead of silently using a default."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from opsdash.env import envbool, envbytes, envdecimal, envint, envlist, envsecret


def test_values_are_read_and_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSDASH_X_BOOL", "Yes")
    monkeypatch.setenv("OPSDASH_X_INT", "42")
    monkeypatch.setenv("OPSDASH_X_SIZE", "1.5G")
    monkeypatch.setenv("OPSDASH_X_PRICE", "0.125")
    monkeypatch.setenv("OPSDASH_X_LIST", "a, b,,c")
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    monkeypatch.setenv("OPSDASH_X_SECRET_FILE", str(secret_file))

    assert envbool("OPSDASH_X_BOOL", False) is True
    assert envint("OPSDASH_X_INT", 0) == 42
    assert envbytes("OPSDASH_X_SIZE", 0) == int(1.5 * 1024**3)
    assert envdecimal("OPSDASH_X_PRICE", "0") == Decimal("0.125")
    assert envlist("OPSDASH_X_LIST", []) == ["a", "b", "c"]
    assert envsecret("OPSDASH_X_SECRET") == "s3cret"
    assert envint("OPSDASH_X_UNSET", 7) == 7


@pytest.mark.parametrize(
    ("reader", "value"),
    [
        (lambda: envbool("OPSDASH_X", False), "maybe"),
        (lambda: envint("OPSDASH_X", 0), "ten"),
        (lambda: envint("OPSDASH_X", 0, minimum=1), "0"),
        (lambda: envbytes("OPSDASH_X", 0), "lots"),
        (lambda: envdecimal("OPSDASH_X", "0"), "-1"),
        (lambda: envdecimal("OPSDASH_X", "0"), "NaN"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(monkeypatch, reader, value):
    monkeypatch.setenv("OPSDASH_X", value)
    with pytest.raises(ImproperlyConfigured, match="OPSDASH_X"):
        reader()


def test_a_secret_given_twice_is_refused(monkeypatch):
    monkeypatch.setenv("OPSDASH_X", "a")
    monkeypatch.setenv("OPSDASH_X_FILE", "/nonexistent")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        envsecret("OPSDASH_X")


def test_a_bad_setting_stops_django_from_starting(tmp_path):
    import subprocess
    import sys

    env = {"OPSDASH_DATA_DIR": str(tmp_path), "OPSDASH_PORT": "eighty", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "OPSDASH_PORT must be a whole number" in done.stderr
