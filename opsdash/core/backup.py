"""Backups: one dated ``.tar.gz`` with a consistent copy of the database, and its restore.

What a backup holds: ``database/`` (SQLite: a copy made with SQLite's online backup API, one
step under one read transaction, so it is a snapshot even while runs are being written;
PostgreSQL: ``pg_dump --format=custom`` of an exported snapshot), ``manifest.json`` (version,
engine, applied migrations, the settings that change what the figures mean, the model files with
their sha256 and size, and the row count of every table, all read from that same snapshot) and
the secret key file. The price book, workflows, API keys and tokens are rows of the database
(keys and tokens as hashes), so they come with it. The secret key is included because signed
links (password set/reset) and sessions are signed with it: without it every link mailed before
the restore fails. Model files are not copied (tens of GB each, and they never change): restore
checks each one by sha256 where the catalog says it lies and names the missing ones.

The catalog's and runs' tables are read by name through the app registry, not imported: core is
below every app (they import it), and backup is the one feature that reads the whole database.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from opsdash.core import audit
from opsdash.core.errors import Code, Refusal

FORMAT = 1  # manifest.json's layout; a backup of a later format is refused
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/opsdash.sqlite3"
PG_MEMBER = "database/opsdash.pgdump"
SECRET_MEMBER = "secret_key"
NAME_FORMAT = "opsdash-backup-%Y%m%d-%H%M%S"
# Rows that say a database is in use: restoring over them needs --force.
IN_USE_TABLES = {"auth_user": "users", "catalog_localmodel": "models", "runs_run": "runs"}
HASH_CHUNK = 4 * 1024**2


class BackupRefused(Refusal):
    """A backup or restore that cannot go ahead; ``reason`` says what to do."""


def opsdash_version() -> str:
    try:
        return version("opsdash")
    except PackageNotFoundError:
        return "0"


def _major(text: str) -> int:
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _sqlite_path() -> Path:
    return Path(str(settings.DATABASES[DEFAULT_DB_ALIAS]["NAME"]))


def _engine() -> str:
    vendor = connections[DEFAULT_DB_ALIAS].vendor
    if vendor not in {"sqlite", "postgresql"}:
        raise BackupRefused(f"Backups support SQLite and PostgreSQL, not {vendor}.")
    return vendor


def _settings() -> dict[str, Any]:
    """The settings that change what restored figures mean (days, costs, node names)."""
    return {
        "TIME_ZONE": settings.TIME_ZONE,
        "REPORT_TIME_ZONE": settings.REPORT_TIME_ZONE,
        "ELECTRICITY_USD_PER_KWH": str(settings.ELECTRICITY_USD_PER_KWH),
        "MODELS_DIR": str(settings.MODELS_DIR),
        "NODE_NAME": settings.NODE_NAME,
        "FLEET": settings.FLEET,
    }


# ---- reading facts out of a snapshot (a DB-API cursor of sqlite3 or psycopg)


def _table_names(cursor: Any, engine: str) -> list[str]:
    if engine == "sqlite":
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    else:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return sorted(str(row[0]) for row in cursor.fetchall())


def _row_counts(cursor: Any, engine: str) -> dict[str, int]:
    counts = {}
    for table in _table_names(cursor, engine):
        quoted = '"' + table.replace('"', '""') + '"'
        cursor.execute(f"SELECT COUNT(*) FROM {quoted}")  # names from the catalog
        counts[table] = int(cursor.fetchone()[0])
    return counts


def _migrations(cursor: Any) -> dict[str, list[str]]:
    cursor.execute("SELECT app, name FROM django_migrations ORDER BY app, id")
    applied: dict[str, list[str]] = {}
    for app, name in cursor.fetchall():
        applied.setdefault(str(app), []).append(str(name))
    return applied


def _model_files(cursor: Any) -> list[dict[str, Any]]:
    """Catalog rows that have a file on disk (ready or retired), as the snapshot has them."""
    table = apps.get_model("catalog", "LocalModel")._meta.db_table
    cursor.execute(
        f"SELECT id, name, status, file_path, sha256, size_bytes FROM {table} "
        "WHERE status IN ('ready', 'retired') AND file_path <> '' ORDER BY id"
    )
    keys = ("id", "name", "status", "file_path", "sha256", "size_bytes")
    return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]


def _facts(cursor: Any, engine: str) -> dict[str, Any]:
    return {
        "migrations": _migrations(cursor),
        "model_files": _model_files(cursor),
        "row_counts": _row_counts(cursor, engine),
    }


# ---- backup


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: dict[str, Any]


def _pg_env() -> dict[str, str]:
    """libpq's variables for the configured database: the password never appears in argv."""
    db = settings.DATABASES[DEFAULT_DB_ALIAS]
    # Other libpq variables (PGSSLMODE …) stay: psycopg reads them too, so both connect alike.
    env = dict(os.environ)
    pairs = {
        "PGHOST": db.get("HOST"),
        "PGPORT": db.get("PORT"),
        "PGUSER": db.get("USER"),
        "PGPASSWORD": db.get("PASSWORD"),
        "PGDATABASE": db.get("NAME"),
    }
    env.update({k: str(v) for k, v in pairs.items() if v})
    return env


def _run_pg(tool: str, args: list[str], what: str) -> None:
    binary = shutil.which(tool)
    if binary is None:
        raise BackupRefused(
            f"{tool} is not installed; it {what}. Install PostgreSQL's client tools "
            "(Debian: apt-get install postgresql-client) in the version of the server or newer.",
            code=Code.UNAVAILABLE,
        )
    done = subprocess.run([binary, *args], env=_pg_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupRefused(
            f"{tool} failed ({done.returncode}): {done.stderr.strip()[-1500:]}",
            code=Code.UNAVAILABLE,
        )


def _snapshot_sqlite(work: Path) -> tuple[Path, dict[str, Any]]:
    source_path = _sqlite_path()
    copy = work / "opsdash.sqlite3"
    source = sqlite3.connect(source_path, timeout=20)
    target = sqlite3.connect(copy)
    try:
        # pages=-1: the whole database in one step, under one read transaction: a snapshot.
        # WAL lets writers go on meanwhile; a multi-step copy would restart on every write.
        source.backup(target, pages=-1)
        target.commit()
        facts = _facts(target.cursor(), "sqlite")
    finally:
        target.close()
        source.close()
    return copy, facts


def _snapshot_postgres(work: Path) -> tuple[Path, dict[str, Any]]:
    dump = work / "opsdash.pgdump"
    connection = connections[DEFAULT_DB_ALIAS]
    with transaction.atomic(), connection.cursor() as cursor:
        # One snapshot for the counts, the manifest's facts and pg_dump (--snapshot), so the
        # manifest describes exactly the dump it comes with.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        facts = _facts(cursor, "postgresql")
        _run_pg(
            "pg_dump",
            ["--format=custom", f"--snapshot={snapshot}", f"--file={dump}"],
            "writes the database's dump",
        )
    return dump, facts


def _unique_path(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.tar.gz"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{number}.tar.gz"
        number += 1
    return path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o600
    tar.addfile(info, io.BytesIO(data))


def create_backup(*, output_dir: Path | None = None, now: datetime | None = None) -> Backup:
    """Write ``opsdash-backup-YYYYmmdd-HHMMSS.tar.gz`` (UTC) into ``output_dir`` (default
    ``DATA_DIR/backups``), readable by its owner only (it holds the secret key)."""
    engine = _engine()
    now = now or datetime.now(UTC)
    folder = Path(output_dir or settings.DATA_DIR / "backups").expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise BackupRefused(f"Cannot create the backup folder {folder}: {exc.strerror}.") from None
    # The work folder sits next to the result: a large database is not copied through /tmp.
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=folder) as work_name:
        work = Path(work_name)
        database, facts = (_snapshot_sqlite if engine == "sqlite" else _snapshot_postgres)(work)
        secret = Path(settings.DATA_DIR) / "secret_key"
        manifest = {
            "format": FORMAT,
            "opsdash_version": opsdash_version(),
            "created_at": now.isoformat(),
            "engine": engine,
            "database": SQLITE_MEMBER if engine == "sqlite" else PG_MEMBER,
            # Configured by OPSDASH_SECRET_KEY(_FILE) instead: it stays with that configuration.
            "secret_key": secret.exists() and not os.environ.get("OPSDASH_SECRET_KEY"),
            "settings": _settings(),
            **facts,
        }
        partial = work / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode(), now.timestamp())
            tar.add(database, arcname=str(manifest["database"]))
            if manifest["secret_key"]:
                _add_bytes(tar, SECRET_MEMBER, secret.read_bytes(), now.timestamp())
        os.chmod(partial, 0o600)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        path = _unique_path(folder, now.strftime(NAME_FORMAT))
        os.replace(partial, path)
    audit.record(
        actor=None,
        action="backup.created",
        target=audit.Target(type="backup", label=path.name),
        detail={"path": str(path), "engine": engine, "runs": facts["row_counts"].get("runs_run")},
    )
    return Backup(path=path, manifest=manifest)


# ---- reading a backup


def _known_migrations() -> set[tuple[str, str]]:
    from django.db.migrations.loader import MigrationLoader

    return set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)


@contextmanager
def _open(path: Path) -> Iterator[tarfile.TarFile]:
    if not path.is_file():
        raise BackupRefused(f"There is no file {path}.", code=Code.NOT_FOUND)
    try:
        # Closed by the with below; only opening is refused here.
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError):
        raise BackupRefused(
            f"{path.name} is not an OpsDash backup: it is not a .tar.gz file. Give the file "
            "`manage.py backup` printed."
        ) from None
    with tar:
        yield tar


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    try:
        info = tar.getmember(name)
    except KeyError:
        return None
    return info if info.isfile() else None


def _damaged(path: Path, exc: BaseException) -> str:
    return (
        f"{path.name} is damaged ({exc or type(exc).__name__}): it ends early or was changed; "
        "nothing was restored. Restore another backup."
    )


def read_manifest(*, path: Path) -> dict[str, Any]:
    """The backup's manifest, once it is known this code can restore it; else a refusal."""
    with _open(path) as tar:
        try:
            # Reading the member list walks the whole archive: a cut file fails here.
            info = _member(tar, MANIFEST)
            raw = tar.extractfile(info).read() if info else None  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise BackupRefused(_damaged(path, exc)) from None
        if raw is None:
            raise BackupRefused(
                f"{path.name} is not an OpsDash backup: it has no readable {MANIFEST}."
            )
        try:
            manifest = json.loads(raw)
            ours, theirs = opsdash_version(), str(manifest["opsdash_version"])
            fmt, engine, database = (
                int(manifest["format"]),
                manifest["engine"],
                manifest["database"],
            )
            migrations = manifest["migrations"]
        except (ValueError, KeyError, TypeError):
            raise BackupRefused(
                f"{path.name} is not an OpsDash backup: its {MANIFEST} is not one."
            ) from None
        if _major(theirs) > _major(ours) or fmt > FORMAT:
            raise BackupRefused(
                f"{path.name} was made by OpsDash {theirs}, a newer major version than this "
                f"one ({ours}): upgrade OpsDash to {_major(theirs)}.x, then restore."
            )
        unknown = {(a, n) for a, names in migrations.items() for n in names} - (_known_migrations())
        if unknown:
            sample = ", ".join(f"{a}.{n}" for a, n in sorted(unknown)[:3])
            raise BackupRefused(
                f"{path.name} was made by a newer OpsDash ({theirs}): its database has "
                f"migrations this version does not know ({sample}). Upgrade OpsDash, then "
                "restore."
            )
        if engine not in {"sqlite", "postgresql"} or _member(tar, database) is None:
            raise BackupRefused(f"{path.name} is incomplete: it holds no database file.")
    return dict(manifest)


# ---- restore


@dataclass
class ModelFileCheck:
    """A catalog file that is not where the catalog says, or not the bytes it recorded."""

    name: str
    path: str
    sha256: str
    problem: str  # "missing" or "mismatch"


@dataclass
class Restored:
    manifest: dict[str, Any]
    applied_migrations: list[str] = field(default_factory=list)
    models_ok: int = 0
    model_problems: list[ModelFileCheck] = field(default_factory=list)
    settings_changed: list[str] = field(default_factory=list)
    secret_key: str = ""
    runs_in_flight: int = 0


def _in_use(cursor: Any, engine: str) -> dict[str, int]:
    present = set(_table_names(cursor, engine))
    found = {}
    for table, label in IN_USE_TABLES.items():
        if table in present:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")  # fixed names
            count = int(cursor.fetchone()[0])
            if count:
                found[label] = count
    return found


def _data_in_target(engine: str) -> dict[str, int]:
    if engine == "sqlite":
        name = _sqlite_path()
        if not name.exists():
            return {}
        with closing(sqlite3.connect(name, timeout=20)) as conn:
            return _in_use(conn.cursor(), engine)
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        return _in_use(cursor, engine)


def _place_sqlite(extracted: Path) -> None:
    """Swap the database file; its old WAL would be replayed onto the new file, so it goes."""
    name = _sqlite_path()
    connections.close_all()
    staged = name.with_name(name.name + ".restoring")
    shutil.copyfile(extracted, staged)
    with staged.open("rb") as handle:
        os.fsync(handle.fileno())
    for suffix in ("-wal", "-shm"):
        name.with_name(name.name + suffix).unlink(missing_ok=True)
    os.replace(staged, name)


def _check_counts(expected: dict[str, int], actual: dict[str, int], path: Path) -> None:
    differ = sorted(t for t, n in expected.items() if actual.get(t) != n)
    if differ:
        sample = ", ".join(f"{t} {actual.get(t)} of {expected[t]}" for t in differ[:3])
        raise BackupRefused(
            f"The restored database does not match {path.name}'s manifest ({sample} rows): the "
            "file is damaged or incomplete. Restore another backup.",
            code=Code.CONFLICT,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_files(
    *, on_progress: Callable[[str], None] | None = None
) -> tuple[int, list[ModelFileCheck]]:
    """Every ready or retired model's file, checked by size then sha256 (the catalog's)."""
    local_model = apps.get_model("catalog", "LocalModel")
    ok, problems = 0, []
    rows = local_model.objects.filter(status__in=["ready", "retired"]).exclude(file_path="")
    for model in rows.order_by("pk"):
        path = Path(model.file_path)
        problem = ""
        if not path.is_file():
            problem = "missing"
        else:
            if on_progress:
                on_progress(f"Checking {model.name} ({path}) by sha256 …")
            size_ok = model.size_bytes is None or path.stat().st_size == model.size_bytes
            if not size_ok or (model.sha256 and _sha256(path) != model.sha256):
                problem = "mismatch"
        if problem:
            problems.append(ModelFileCheck(model.name, str(path), model.sha256, problem))
        else:
            ok += 1
    return ok, problems


def _extract(path: Path, manifest: dict[str, Any], work: Path) -> tuple[Path, bytes | None]:
    """The database file and the secret key, read out of the archive (a truncated one is
    refused here, before anything is replaced)."""
    extracted = work / "database"
    try:
        with _open(path) as tar:
            source = tar.extractfile(manifest["database"])
            assert source is not None  # read_manifest checked it is a file
            with source, extracted.open("wb") as out:
                shutil.copyfileobj(source, out, HASH_CHUNK)
            info = _member(tar, SECRET_MEMBER)
            secret = tar.extractfile(info).read() if info else None  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BackupRefused(_damaged(path, exc)) from None
    return extracted, secret


def restore_backup(
    *, path: Path, force: bool = False, on_progress: Callable[[str], None] | None = None
) -> Restored:
    """Restore ``path`` into the configured database and data folder.

    Refused when the database already holds users, models or runs (unless ``force``), when the
    engines differ, or when the backup is not one this version can read. Afterwards the schema
    is migrated forward and each model file is checked; the catalog rows stay either way.
    """
    say = on_progress or (lambda _line: None)
    path = Path(path).expanduser().resolve()
    manifest = read_manifest(path=path)
    engine = _engine()
    if manifest["engine"] != engine:
        configured = "PostgreSQL (OPSDASH_DATABASE_URL)" if engine == "postgresql" else "SQLite"
        held = "PostgreSQL" if manifest["engine"] == "postgresql" else "SQLite"
        raise BackupRefused(
            f"{path.name} holds a {held} database and the configured database is {configured}: "
            f"restore it where OpsDash runs on {held}.",
            code=Code.CONFLICT,
        )
    in_use = _data_in_target(engine)
    if in_use and not force:
        held = ", ".join(f"{n} {label}" for label, n in in_use.items())
        raise BackupRefused(
            f"The database already holds data ({held}); restore replaces all of it. Restore "
            "into an empty data folder (OPSDASH_DATA_DIR), or pass --force to replace it.",
            code=Code.CONFLICT,
        )
    result = Restored(manifest=manifest)
    data_dir = Path(settings.DATA_DIR)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as work_name:
        work = Path(work_name)
        extracted, secret = _extract(path, manifest, work)
        say(f"Restoring the {engine} database from {path.name} …")
        if engine == "sqlite":
            with closing(sqlite3.connect(extracted)) as conn:
                _check_counts(manifest["row_counts"], _row_counts(conn.cursor(), engine), path)
            _place_sqlite(extracted)
        else:
            connections.close_all()
            _run_pg(
                "pg_restore",
                [
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    f"--dbname={settings.DATABASES['default']['NAME']}",
                    str(extracted),
                ],
                "reads the database's dump back",
            )
            with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
                counts = _row_counts(cursor, engine)
            _check_counts(manifest["row_counts"], counts, path)
    result.secret_key = _restore_secret(secret, data_dir)
    result.applied_migrations = _migrate_forward()
    for name, value in manifest.get("settings", {}).items():
        if name in _settings() and _settings()[name] != value:
            result.settings_changed.append(f"{name} was {value!r}, is now {_settings()[name]!r}")
    run = apps.get_model("runs", "Run")
    result.runs_in_flight = run.objects.filter(status="running").count()
    result.models_ok, result.model_problems = verify_model_files(on_progress=say)
    audit.record(
        actor=None,
        action="backup.restored",
        target=audit.Target(type="backup", label=path.name),
        detail={
            "created_at": manifest.get("created_at"),
            "migrations_applied": len(result.applied_migrations),
            "model_files_missing": [p.name for p in result.model_problems],
        },
    )
    return result


def _restore_secret(secret: bytes | None, data_dir: Path) -> str:
    if secret is None:
        return "not in the backup (it was set by OPSDASH_SECRET_KEY): keep that setting"
    key_file = data_dir / "secret_key"
    key_file.unlink(missing_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_bytes(secret)
    if os.environ.get("OPSDASH_SECRET_KEY") or os.environ.get("OPSDASH_SECRET_KEY_FILE"):
        return (
            f"restored to {key_file}, but OPSDASH_SECRET_KEY is set and wins: links signed "
            "before the backup work only if it holds the same key"
        )
    return f"restored to {key_file}"


def _migrate_forward() -> list[str]:
    """Apply the migrations this version has and the backup's database lacks."""
    from django.core.management import call_command
    from django.db.migrations.recorder import MigrationRecorder

    connections.close_all()
    connection = connections[DEFAULT_DB_ALIAS]
    before = set(MigrationRecorder(connection).applied_migrations())
    call_command("migrate", interactive=False, verbosity=0)
    after = set(MigrationRecorder(connection).applied_migrations())
    return [f"{app}.{name}" for app, name in sorted(after - before)]
