"""Savings pages, API and CSV at a year of runs, against the same figures from raw runs.

Builds a throwaway OpsDash database (``OPSDASH_DATA_DIR`` in a temporary folder), migrates it
(which seeds the genai-prices price book), and writes 1,000,000 finalized runs across 50
workflows and 365 days straight into ``runs_run`` and their frozen costs into
``savings_runcost`` (bulk SQL: calling ``finish_run`` a million times would measure the insert
path, not the report). The daily rollups are then built by the real ``rebuild_rollups``.
``--keep`` keeps that database and ``--reuse DIR`` measures a kept one again (migrated first).

Then it times, in the same process and database, each as a median of repeated calls:

- ``reports.overview()`` for the last 365 and 30 days (totals, a daily series, 50 workflow
  lines with a daily sparkline each), the aggregation behind the page and the API;
- ``GET /savings/?range=365d`` (the page: middleware, session, every query, the template),
  ``GET /api/savings/summary?range=365d`` (with its forecast) and a workflow's page, through
  Django's test client;
- ``GET /api/savings/export.csv?range=365d`` (73,000 lines): time to its first byte and to its
  last, read as a client reads a streamed body;
- the peer: the same figures (per workflow and per day) aggregated from ``runs_run`` joined to
  the runs' costs, one ``GROUP BY`` with SQLite's own ``date()``, the fastest the raw ledger
  allows.

It checks both give identical totals to the nano-dollar, then prints each figure with its goal
and its ratio to the peer's year (how many times faster than reading the raw ledger once).

    .venv/bin/python bench/savings.py [--runs 1000000] [--repeat 15] [--keep | --reuse DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORKFLOWS = 50
DAYS = 365
BASELINES = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4.1-mini"),
    ("anthropic", "claude-3-5-sonnet"),
    ("anthropic", "claude-haiku-4-5"),
    ("google", "gemini-2.0-flash"),
    ("google", "gemini-2.5-pro"),
    ("mistral", "mistral-large"),
    ("", ""),  # some workflows have no baseline: their runs are unpriced
]
STATUSES = ["ok"] * 95 + ["cancelled"] * 3 + ["error"] * 2


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm caches (Python imports, SQLite pages) before timing
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def setup_django(data_dir: Path) -> None:
    os.environ["OPSDASH_DATA_DIR"] = str(data_dir)
    os.environ["OPSDASH_ALLOWED_HOSTS"] = "localhost,testserver"
    os.environ["OPSDASH_LOG_LEVEL"] = "WARNING"
    os.environ["OPSDASH_REPORT_TIME_ZONE"] = "UTC"  # the peer's date() buckets in UTC
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def generate(runs: int, seed: int = 7) -> None:
    """Workflows, local models and ``runs`` finalized runs with their frozen costs."""
    from django.db import connection, transaction
    from django.utils import timezone

    from opsdash.catalog.models import LocalModel, ModelStatus, SourceKind
    from opsdash.runs.models import Workflow
    from opsdash.savings.days import day_start, report_today
    from opsdash.savings.money import div_round, energy_cost
    from opsdash.savings.pricebook import price_in_effect
    from opsdash.savings.services import global_electricity_nusd_per_kwh

    rng = random.Random(seed)
    models = [
        LocalModel.objects.create(
            name=name,
            slug=name,
            status=ModelStatus.READY,
            source_kind=SourceKind.PATH,
            source_ref=f"/models/{name}.gguf",
        )
        for name in ("smollm2-135m", "llama-3.2-1b", "qwen2.5-3b", "mistral-7b")
    ]
    flows = []
    for i in range(WORKFLOWS):
        provider, model = BASELINES[i % len(BASELINES)]
        flows.append(
            Workflow.objects.create(
                name=f"Workflow {i:02d}",
                slug=f"wf-{i:02d}",
                baseline_provider=provider,
                baseline_model=model,
            )
        )
    now = timezone.now()
    prices = {}
    for flow in flows:
        row = price_in_effect(flow.baseline_provider, flow.baseline_model, now)
        prices[flow.pk] = row  # every curated row used here has one price all year
    electricity = global_electricity_nusd_per_kwh()
    end = now.replace(microsecond=0)
    first_moment = day_start(report_today() - timedelta(days=DAYS - 1))
    span = int((end - first_moment).total_seconds())  # the 365 report days up to now

    run_sql = (
        'INSERT INTO runs_run (id, source, prompt, messages, params, "group", status, error, '
        "finish_reason, error_code, output, prompt_tokens, completion_tokens, ttft_ms, "
        "tokens_per_second, total_ms, host, node, pid, started_at, finished_at, model_id, "
        "user_id, workflow_id, cpu_seconds, runner_pid) VALUES (?, ?, '', NULL, '{}', NULL, "
        "?, '', '', '', '', ?, ?, ?, ?, ?, 'bench', '', 1, ?, ?, ?, NULL, ?, ?, 2)"
    )
    cost_sql = (
        "INSERT INTO savings_runcost (run_id, priced, baseline_provider, baseline_model, "
        "electricity_nusd_per_kwh, avoided_nusd, local_nusd, net_nusd, energy_mj, energy_source, "
        "energy_basis, energy_devices, token_method, priced_at, revision, price_id, error, "
        "batch_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'estimated', 'bench', '[]', "
        "'local_tokenizer', ?, 1, ?, '', ?)"
    )
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    priced_at = now.strftime(fmt)
    batch = 50_000
    raw = connection.cursor().connection  # the sqlite3 connection: executemany at C speed
    with transaction.atomic():
        for first in range(1, runs + 1, batch):
            run_rows, cost_rows = [], []
            for run_id in range(first, min(first + batch, runs + 1)):
                flow = flows[rng.randrange(WORKFLOWS)]
                model = models[rng.randrange(len(models))]
                started = end - timedelta(seconds=rng.randint(0, span))
                status = STATUSES[rng.randrange(100)]
                # One run in ten from the Batch API: priced at the batch rate, summed apart.
                source = "batch" if rng.randrange(10) == 0 else "api"
                prompt, completion = rng.randint(20, 4000), rng.randint(5, 1200)
                cpu_ms = prompt // 4 + completion * 40  # whole milliseconds of CPU
                total_ms = cpu_ms / 2
                finished = started + timedelta(milliseconds=total_ms)
                run_rows.append(
                    (
                        run_id,
                        source,
                        status,
                        prompt,
                        completion,
                        50.0,
                        20.0,
                        total_ms,
                        started.strftime(fmt),
                        finished.strftime(fmt),
                        model.pk,
                        flow.pk,
                        cpu_ms / 1000,
                    )
                )
                price = prices[flow.pk]
                energy_mj = cpu_ms * 10  # 10 W per busy CPU: 1 ms is 10 mJ
                local = energy_cost(energy_mj, electricity)
                avoided = 0
                batch_rate = source == "batch" and price is not None and price.has_batch_price
                if price is not None and status != "error":
                    rates = (
                        (price.batch_input_nusd_per_mtok, price.batch_output_nusd_per_mtok)
                        if batch_rate
                        else (price.input_nusd_per_mtok, price.output_nusd_per_mtok)
                    )
                    avoided = div_round(prompt * rates[0] + completion * rates[1], 1_000_000)
                net = avoided - local if price is not None else 0
                cost_rows.append(
                    (
                        run_id,
                        price is not None,
                        flow.baseline_provider,
                        flow.baseline_model,
                        electricity,
                        avoided,
                        local,
                        net,
                        energy_mj,
                        priced_at,
                        price.pk if price is not None else None,
                        batch_rate,
                    )
                )
            raw.executemany(run_sql, run_rows)
            raw.executemany(cost_sql, cost_rows)
            done = min(first + batch - 1, runs)
            if done % 250_000 == 0 or done == runs:
                print(f"  {done:>9,} runs written", flush=True)


def peer(start_day: str, end_day: str) -> dict[tuple[int, str], tuple[int, ...]]:
    """Per workflow and day, straight from the ledger: runs joined to their frozen costs."""
    from django.db import connection

    sql = """
        SELECT r.workflow_id, date(r.started_at) AS day, count(*),
               sum(r.status = 'ok'), sum(NOT c.priced), sum(c.energy_source = 'measured'),
               coalesce(sum(r.prompt_tokens), 0), coalesce(sum(r.completion_tokens), 0),
               sum(c.avoided_nusd), sum(c.local_nusd), sum(c.net_nusd), sum(c.energy_mj),
               sum(r.source = 'batch'),
               coalesce(sum(CASE WHEN r.source = 'batch' THEN r.prompt_tokens END), 0),
               coalesce(sum(CASE WHEN r.source = 'batch' THEN r.completion_tokens END), 0),
               coalesce(sum(CASE WHEN r.source = 'batch' THEN c.avoided_nusd END), 0),
               coalesce(sum(CASE WHEN r.source = 'batch' THEN c.net_nusd END), 0)
        FROM runs_run r JOIN savings_runcost c ON c.run_id = r.id
        WHERE r.started_at >= %s AND r.started_at < %s
        GROUP BY r.workflow_id, day
    """
    next_day = (datetime.fromisoformat(end_day) + timedelta(days=1)).date().isoformat()
    with connection.cursor() as cursor:
        cursor.execute(sql, [start_day, next_day])
        return {(row[0], row[1]): tuple(row[2:]) for row in cursor.fetchall()}


GOALS_MS = {  # what issue 12 asks, on a 2-core machine
    "overview aggregation, 365 days": 100,
    "GET /savings/?range=365d (page)": 100,
    "GET /api/savings/summary?range=365d": 100,
    "GET /savings/workflows/<slug>/?range=365d": 100,
    "CSV, 365 days: first byte": 100,
    "CSV, 365 days: whole file": 1000,
}


def first_and_last_byte_ms(client: Any, url: str) -> tuple[float, float, int]:
    """A streamed body read as a client reads it: when its first piece came, when its last."""
    start = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    assert response.streaming, "the CSV is built whole before it is sent"
    chunks = iter(response.streaming_content)
    size = len(next(chunks))
    first = (time.perf_counter() - start) * 1000
    size += sum(len(chunk) for chunk in chunks)
    return first, (time.perf_counter() - start) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15, help="median of N calls (ours)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--reuse", type=Path, help="a data dir kept by --keep: skip building")
    args = parser.parse_args()

    data_dir = args.reuse or Path(tempfile.mkdtemp(prefix="opsdash-bench-savings-"))
    try:
        setup_django(data_dir)
        print(f"database: {data_dir / 'opsdash.sqlite3'} (SQLite, WAL)")

        from django.contrib.auth.models import Group, User
        from django.db import connection
        from django.test import Client

        from opsdash.savings import filters as savings_filters
        from opsdash.savings import reports
        from opsdash.savings.models import DailyRollup
        from opsdash.savings.rollups import rebuild_rollups

        if args.reuse is None:
            started = time.perf_counter()
            generate(args.runs)
            print(
                f"generated {args.runs:,} runs and costs in {time.perf_counter() - started:.1f} s"
            )
            started = time.perf_counter()
            rollups = rebuild_rollups()
            print(
                f"rebuild_rollups: {rollups:,} rollup rows from {args.runs:,} runs in "
                f"{time.perf_counter() - started:.1f} s"
            )
            assert DailyRollup.objects.count() == rollups
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

        filters = savings_filters.parse_filters({"range": "365d"})
        report = reports.overview(filters)
        raw = peer(filters.start.isoformat(), filters.end.isoformat())
        # Same figures both ways, to the nano-dollar.
        for index, name in enumerate(reports.FIGURE_FIELDS):
            ours_total = getattr(report.totals, name)
            peer_total = sum(values[index] for values in raw.values())
            assert ours_total == peer_total, (name, ours_total, peer_total)
        per_workflow: dict[int, int] = {}
        for (workflow_id, _), values in raw.items():
            per_workflow[workflow_id] = per_workflow.get(workflow_id, 0) + values[8]
        for line in report.workflows:
            assert line.figures.net_nusd == per_workflow.get(line.workflow.pk, 0)
        print(
            f"check: {report.totals.runs:,} runs, net {report.totals.net_nusd:,} nano-USD, "
            "identical per workflow and in total both ways"
        )

        month = savings_filters.parse_filters({"range": "30d"})
        repeat, few = args.repeat, max(3, args.repeat // 5)
        peer_year = median_ms(lambda: peer(filters.start.isoformat(), filters.end.isoformat()), few)
        peer_month = median_ms(lambda: peer(month.start.isoformat(), month.end.isoformat()), few)
        ours: dict[str, float] = {
            "overview aggregation, 365 days": median_ms(lambda: reports.overview(filters), repeat),
            "overview aggregation, 30 days": median_ms(lambda: reports.overview(month), repeat),
        }

        manager, _ = User.objects.get_or_create(username="bench-manager")
        manager.groups.add(Group.objects.get(name="manager"))
        client = Client()
        client.force_login(manager)
        slug = report.workflows[0].workflow.slug
        pages = {
            "GET /savings/?range=365d (page)": "/savings/?range=365d",
            "GET /api/savings/summary?range=365d": "/api/savings/summary?range=365d",
            "GET /savings/workflows/<slug>/?range=365d": f"/savings/workflows/{slug}/?range=365d",
        }
        for label, url in pages.items():
            answer = client.get(url)
            assert answer.status_code == 200, (url, answer.status_code)
            ours[label] = median_ms(lambda url=url: client.get(url), repeat)

        csv_url = "/api/savings/export.csv?range=365d"
        first_and_last_byte_ms(client, csv_url)  # warm
        reads = [first_and_last_byte_ms(client, csv_url) for _ in range(few)]
        ours["CSV, 365 days: first byte"] = statistics.median(r[0] for r in reads)
        ours["CSV, 365 days: whole file"] = statistics.median(r[1] for r in reads)
        csv_bytes = reads[0][2]

        print()
        print(f"{'':46}{'ours':>11}{'goal':>10}{'peer (raw runs)':>18}{'ratio':>9}")
        met = True
        for label, ms in ours.items():
            goal = GOALS_MS.get(label)
            peer_ms = peer_month if "30 days" in label else peer_year
            ok = goal is None or ms < goal
            met = met and ok
            goal_text = f"< {goal} ms" if goal else ""
            print(
                f"{label:46}{ms:>8.1f} ms{goal_text:>10}{peer_ms:>15.1f} ms{peer_ms / ms:>8.1f}x"
                f"{'' if ok else '  NOT met'}"
            )
        print(f"\nCSV: {csv_bytes / 1e6:.1f} MB, streamed (first byte before the last row is read)")
        print(f"goals: {'all met' if met else 'NOT all met'}")
    finally:
        if args.keep or args.reuse:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
