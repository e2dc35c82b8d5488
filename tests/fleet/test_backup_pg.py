"""Backup and restore on PostgreSQL: ``pg_dump`` of an exported snapshot while a writer process
finalizes runs, ``pg_restore`` into a fresh database, the same ledger and savings totals.

The same scenario as tests/core/test_backup.py (its helpers), against the engines fixture's
real PostgreSQL server; the URL carries a password so the libpq environment path is the one used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.test_backup import (
    RUNS_BEFORE_BACKUP,
    backup_while_writing,
    child_env,
    figures,
    manage,
)
from tests.fixtures.engines import Postgres

pytestmark = pytest.mark.fleet


def _with_password(url: str) -> str:
    # Trust auth on loopback accepts any password; it still travels through PGPASSWORD.
    return url.replace("postgresql://opsdash@", "postgresql://opsdash:s3cret%20pw@", 1)


def test_a_postgres_backup_made_while_runs_were_written_restores_the_same_figures(
    postgres_server: Postgres, tmp_path: Path
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source_env = child_env(
        source, OPSDASH_DATABASE_URL=_with_password(postgres_server.create_database("bksrc"))
    )
    target_env = child_env(
        target, OPSDASH_DATABASE_URL=_with_password(postgres_server.create_database("bkdst"))
    )
    manage(source, "migrate", "--no-input", env=source_env)
    made = backup_while_writing(source, source_env, output=source / "out")
    assert made.backup.name.startswith("opsdash-backup-") and made.backup.is_file()

    result = manage(target, "restore", str(made.backup), env=target_env)
    assert "Restoring the postgresql database" in result.stdout
    after = figures(target, env=target_env)
    snapshot = after["ledger"]["last"]
    assert RUNS_BEFORE_BACKUP <= snapshot < made.written
    assert after["ledger"]["runs"] == snapshot
    before = figures(source, upto=snapshot, env=source_env)
    assert after["ledger"] == before["ledger"]
    assert after["costs"] == before["costs"] and after["costs"]["avoided"] > 0
    savings = after["savings"]
    assert (savings["runs"], savings["prompt_tokens"], savings["completion_tokens"]) == (
        snapshot,
        before["ledger"]["prompt"],
        before["ledger"]["completion"],
    )
    assert (savings["avoided_nusd"], savings["local_nusd"], savings["net_nusd"]) == (
        before["costs"]["avoided"],
        before["costs"]["local"],
        before["costs"]["net"],
    )

    again = manage(target, "restore", str(made.backup), env=target_env, check=False)
    assert again.returncode == 1 and "The database already holds data (3 models, " in again.stderr
    manage(target, "restore", "--force", str(made.backup), env=target_env)
    assert figures(target, env=target_env)["ledger"] == after["ledger"]

    elsewhere = manage(tmp_path / "sqlite", "restore", str(made.backup), check=False)
    assert elsewhere.returncode == 1
    assert (
        "holds a PostgreSQL database and the configured database is SQLite: restore it where "
        "OpsDash runs on PostgreSQL." in elsewhere.stderr
    )
