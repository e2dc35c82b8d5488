"""``manage.py backup`` and ``restore`` for real: subprocesses on data folders of their own.

The source folder is migrated, then a writer process finalizes runs (priced, so savings rollups
move too) while the backup is taken; the backup is restored into a fresh folder and the ledger
and the savings totals there must equal the source's as of the snapshot, to the token and the
nano-dollar. The snapshot is a prefix of the writer's runs (each run is one transaction), so
"as of the snapshot" is the source's runs up to the last id the restored database holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import selectors
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opsdash.core.backup import BackupRefused, create_backup, read_manifest

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^opsdash-backup-\d{8}-\d{6}\.tar\.gz$")
RUNS_BEFORE_BACKUP = 25
RUNS_AFTER_BACKUP = 15
# The source is one migration behind, so the restore has something to migrate forward: the
# gateway's batch tables, a leaf nothing else depends on. (Rolling back runs or savings would
# drop columns the writer's pricing needs: every run would log a failed finalizer.)
BEHIND_APP, BEHIND_AT, AHEAD = "gateway", "0001_initial", "0002_batch"
# How long the writer may take to write its first runs, or to finish once told to stop.
WRITER_TIMEOUT = 240

# Each run is written and finalized in one transaction, so a snapshot holds whole runs only.
WRITER = """
import hashlib, os, pathlib, sys
from django.db import transaction
from tests import factories

models = pathlib.Path(os.environ["OPSDASH_MODELS_DIR"])
models.mkdir(parents=True, exist_ok=True)
rows = []
for name in ("kept", "lost", "changed"):
    path = models / f"{name}.gguf"
    path.write_bytes(f"GGUF {name} ".encode() * 1000)
    rows.append(factories.local_model(
        name, file_path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        size_bytes=path.stat().st_size,
    ))
flow = factories.workflow("support", "openai", "gpt-4o-mini")
stop = pathlib.Path(os.environ["BACKUP_TEST_STOP"])
written = after_stop = 0
# A cap, so a test that never stops it cannot leave it running for good.
while after_stop < int(os.environ["BACKUP_TEST_AFTER"]) and written < 5000:
    with transaction.atomic():
        factories.finished_run(
            flow, rows[written % 3], prompt_tokens=100 + written, completion_tokens=7 + written % 5
        )
    written += 1
    if written == int(os.environ["BACKUP_TEST_BEFORE"]):
        print("ready", flush=True)
    if stop.exists():
        after_stop += 1
print(written, flush=True)
"""

# The ledger and the savings totals, for every run or for those up to BACKUP_TEST_UPTO.
FIGURES = """
import dataclasses, json, os
from datetime import timedelta
from django.db.models import Count, Max, Sum
from opsdash.runs.models import Run
from opsdash.savings import reports
from opsdash.savings.days import report_today
from opsdash.savings.models import RunCost

runs = Run.objects.all()
if os.environ.get("BACKUP_TEST_UPTO"):
    runs = runs.filter(pk__lte=int(os.environ["BACKUP_TEST_UPTO"]))
ledger = runs.aggregate(
    runs=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
    last=Max("id"),
)
costs = RunCost.objects.filter(run__in=runs).aggregate(
    avoided=Sum("avoided_nusd"), local=Sum("local_nusd"), net=Sum("net_nusd")
)
today = report_today()
totals = reports.aggregate(start=today - timedelta(days=2), end=today + timedelta(days=2))
summary = dataclasses.asdict(totals[()]) if () in totals else None
print(json.dumps({"ledger": ledger, "costs": costs, "savings": summary}))
"""


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSDASH_")}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(
        DJANGO_SETTINGS_MODULE="opsdash.settings",
        OPSDASH_DATA_DIR=str(data_dir),
        OPSDASH_MODELS_DIR=str(data_dir / "models"),
        OPSDASH_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(
    data_dir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env=env or child_env(data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}"
        )
    return done


def figures(data_dir: Path, *, upto: int | None = None, env: dict[str, str] | None = None) -> Any:
    env = env or child_env(data_dir)
    if upto is not None:
        env = {**env, "BACKUP_TEST_UPTO": str(upto)}
    lines = (
        manage(data_dir, "shell", "--no-imports", "-c", FIGURES, env=env)
        .stdout.strip()
        .splitlines()
    )
    return json.loads(lines[-1])


@dataclass
class Made:
    source: Path
    backup: Path
    stdout: str
    written: int


def backup_while_writing(source: Path, env: dict[str, str], *, output: Path) -> Made:
    """Start the writer, take the backup once it has written some runs, let it write more.

    The writer's stderr goes to a file (a pipe nobody reads would fill and block it), its first
    line is awaited with a deadline, and anything it logged at ERROR fails the test: a writer
    whose runs fail to finalize must be a failure that says why, never a hang.
    """
    stop = source / "stop-writing"
    errors_path = source / "writer-stderr.txt"
    with errors_path.open("w") as errors_file:
        writer = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "shell", "--no-imports", "-c", WRITER],
            env={
                **env,
                "BACKUP_TEST_STOP": str(stop),
                "BACKUP_TEST_BEFORE": str(RUNS_BEFORE_BACKUP),
                "BACKUP_TEST_AFTER": str(RUNS_AFTER_BACKUP),
            },
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors_file,
            text=True,
        )
    try:
        assert writer.stdout is not None
        first = _first_line(writer, timeout=WRITER_TIMEOUT)
        if first != "ready":
            raise AssertionError(
                f"the writer stopped early: {first!r}\n{errors_path.read_text()[-3000:]}"
            )
        made = manage(source, "backup", "--output", str(output), env=env)
        stop.touch()
        rest, _ = writer.communicate(timeout=WRITER_TIMEOUT)
        logged = errors_path.read_text()
        assert writer.returncode == 0, logged[-3000:]
        assert " ERROR " not in logged, logged[-3000:]
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    return Made(
        source=source,
        backup=Path(made.stdout.strip().splitlines()[-1]),
        stdout=made.stdout,
        written=int(rest.strip().splitlines()[-1]),
    )


def _first_line(process: subprocess.Popen[str], *, timeout: float) -> str | None:
    """The process's first line of stdout, or None if it printed none within ``timeout``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return None
    return process.stdout.readline().strip()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A source folder one migration behind (``BEHIND_APP`` at ``BEHIND_AT``) and a backup of
    it taken while runs were being written."""
    source = tmp_path_factory.mktemp("source")
    manage(source, "migrate", "--no-input")
    manage(source, "migrate", BEHIND_APP, BEHIND_AT, "--no-input")
    return backup_while_writing(source, child_env(source), output=source / "out")


def test_backup_prints_the_dated_file_alone_on_its_last_line(made: Made) -> None:
    last = made.stdout.strip().splitlines()[-1]
    assert Path(last).is_absolute() and Path(last).is_file()
    assert NAME.match(Path(last).name), last
    assert Path(last).parent == (made.source / "out").resolve()
    # It holds the secret key: readable by its owner only.
    assert Path(last).stat().st_mode & 0o077 == 0
    with tarfile.open(last) as tar:
        names = set(tar.getnames())
    assert names == {"manifest.json", "database/opsdash.sqlite3", "secret_key"}


def test_the_manifest_lists_the_model_files_settings_and_migrations_without_copying_models(
    made: Made,
) -> None:
    manifest = read_manifest(path=made.backup)
    assert manifest["engine"] == "sqlite"
    assert manifest["settings"]["MODELS_DIR"] == str(made.source / "models")
    assert {"TIME_ZONE", "REPORT_TIME_ZONE", "ELECTRICITY_USD_PER_KWH", "NODE_NAME", "FLEET"} <= (
        set(manifest["settings"])
    )
    assert BEHIND_AT in manifest["migrations"][BEHIND_APP]
    assert AHEAD not in manifest["migrations"][BEHIND_APP]
    files = {f["name"]: f for f in manifest["model_files"]}
    assert set(files) == {"kept", "lost", "changed"}
    kept = made.source / "models" / "kept.gguf"
    assert files["kept"]["sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert files["kept"]["size_bytes"] == kept.stat().st_size
    # The backup is far smaller than one model file would make it: none is inside.
    assert made.backup.stat().st_size < 200_000


def test_a_backup_made_while_runs_were_written_restores_the_same_ledger_and_savings(
    made: Made, tmp_path: Path
) -> None:
    restored = tmp_path / "restored"
    result = manage(restored, "restore", str(made.backup))
    after = figures(restored)
    snapshot = after["ledger"]["last"]
    # The writer was busy on both sides of the backup: it is a snapshot of a moving ledger.
    assert RUNS_BEFORE_BACKUP <= snapshot < made.written
    assert after["ledger"]["runs"] == snapshot  # whole runs, none half-written
    before = figures(made.source, upto=snapshot)
    assert after["ledger"] == before["ledger"]
    assert after["costs"] == before["costs"]
    assert after["costs"]["avoided"] > 0  # priced runs: the money is really compared
    # The savings totals (the one aggregation the pages, API and CSV read) agree with the
    # ledger they were rolled up from, to the nano-dollar.
    savings = after["savings"]
    assert savings["runs"] == snapshot
    assert savings["prompt_tokens"] == before["ledger"]["prompt"]
    assert savings["completion_tokens"] == before["ledger"]["completion"]
    assert (savings["avoided_nusd"], savings["local_nusd"], savings["net_nusd"]) == (
        before["costs"]["avoided"],
        before["costs"]["local"],
        before["costs"]["net"],
    )
    assert f"{BEHIND_APP}.{AHEAD}" in result.stdout  # migrated forward
    assert (restored / "secret_key").read_text() == (made.source / "secret_key").read_text()


def test_restore_names_the_model_files_to_copy_back(made: Made, tmp_path: Path) -> None:
    models = made.source / "models"
    lost_sha = hashlib.sha256((models / "lost.gguf").read_bytes()).hexdigest()
    (models / "lost.gguf").rename(tmp_path / "lost.gguf")
    changed = (models / "changed.gguf").read_bytes()
    (models / "changed.gguf").write_bytes(changed[:-1] + b"!")
    try:
        done = manage(tmp_path / "restored", "restore", str(made.backup))
    finally:
        (tmp_path / "lost.gguf").rename(models / "lost.gguf")
        (models / "changed.gguf").write_bytes(changed)
    out = done.stdout
    assert f"Model file is missing: “lost” — copy the file with sha256 {lost_sha} back to " in out
    assert str(models / "lost.gguf") in out
    assert "Model file does not match its sha256: “changed”" in out
    assert "“kept”" not in out.split("Checking", 1)[0]
    last = out.strip().splitlines()[-1]
    assert last == "Restored: 1 model files verified, 2 to copy back (listed above)."
    # The catalog keeps all three: the files can be copied back later.
    listed = manage(
        tmp_path / "restored",
        "shell",
        "--no-imports",
        "-c",
        "from opsdash.catalog.models import LocalModel;"
        "print(sorted(LocalModel.objects.values_list('name', 'status')))",
    )
    assert "('changed', 'ready'), ('kept', 'ready'), ('lost', 'ready')" in listed.stdout


def test_restore_refuses_a_database_that_already_holds_data_unless_forced(
    made: Made, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    manage(target, "restore", str(made.backup))
    manage(
        target,
        "shell",
        "--no-imports",
        "-c",
        "from tests import factories; factories.local_model('extra')",
    )
    refused = manage(target, "restore", str(made.backup), check=False)
    assert refused.returncode == 1
    assert "The database already holds data (4 models, " in refused.stderr
    assert "pass --force to replace it" in refused.stderr
    assert "Traceback" not in refused.stderr
    manage(target, "restore", "--force", str(made.backup))
    names = manage(
        target,
        "shell",
        "--no-imports",
        "-c",
        "from opsdash.catalog.models import LocalModel;"
        "print(sorted(LocalModel.objects.values_list('name', flat=True)))",
    )
    assert names.stdout.strip().splitlines()[-1] == "['changed', 'kept', 'lost']"


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a backup")
    done = manage(tmp_path / "restored", "restore", str(junk), check=False)
    assert done.returncode == 1
    assert "notes.txt is not an OpsDash backup: it is not a .tar.gz file." in done.stderr
    assert "Traceback" not in done.stderr


def test_a_truncated_backup_is_refused_before_anything_is_replaced(
    made: Made, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.tar.gz"
    data = made.backup.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    target = tmp_path / "restored"
    done = manage(target, "restore", str(cut), check=False)
    assert done.returncode == 1
    assert "cut.tar.gz is damaged" in done.stderr and "nothing was restored" in done.stderr
    assert not (target / "opsdash.sqlite3").exists()


def _rewritten(made: Made, tmp_path: Path, change: dict[str, Any] | None, drop: str = "") -> Path:
    """The backup with its manifest changed (or a member dropped)."""
    out = tmp_path / "edited.tar.gz"
    with tarfile.open(made.backup) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            if member.name == drop:
                continue
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json" and change is not None:
                data = json.dumps({**json.loads(data), **change}).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_a_backup_from_a_newer_major_version_is_refused(made: Made, tmp_path: Path) -> None:
    edited = _rewritten(made, tmp_path, {"opsdash_version": "1.0.0"})
    with pytest.raises(BackupRefused) as refused:
        read_manifest(path=edited)
    assert refused.value.reason == (
        "edited.tar.gz was made by OpsDash 1.0.0, a newer major version than this one (0.1.0): "
        "upgrade OpsDash to 1.x, then restore."
    )


def test_a_backup_with_migrations_this_version_lacks_is_refused(made: Made, tmp_path: Path) -> None:
    manifest = read_manifest(path=made.backup)
    migrations = {**manifest["migrations"], "runs": [*manifest["migrations"]["runs"], "0099_x"]}
    edited = _rewritten(made, tmp_path, {"migrations": migrations})
    with pytest.raises(
        BackupRefused, match=r"migrations this version does not know \(runs\.0099_x\)"
    ):
        read_manifest(path=edited)


def test_a_tarball_without_a_manifest_is_refused(made: Made, tmp_path: Path) -> None:
    edited = _rewritten(made, tmp_path, None, drop="manifest.json")
    with pytest.raises(BackupRefused) as refused:
        read_manifest(path=edited)
    assert refused.value.reason == (
        "edited.tar.gz is not an OpsDash backup: it has no readable manifest.json."
    )


@pytest.mark.django_db
def test_two_backups_in_one_second_get_two_files(tmp_path: Path) -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    out = tmp_path / "out"
    first = create_backup(output_dir=out, now=moment).path
    second = create_backup(output_dir=out, now=moment).path
    assert (first.name, second.name) == (
        "opsdash-backup-20260304-050607.tar.gz",
        "opsdash-backup-20260304-050607-2.tar.gz",
    )
    assert {p.name for p in out.iterdir()} == {first.name, second.name}  # no leftovers
