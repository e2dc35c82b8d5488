"""The CSV export: one row per day × workflow × local model × node, then a TOTAL row, from the
same aggregation as the pages, written as it is read (``api.export_csv`` streams it)."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Workflow
from opsdash.savings.filters import Filters
from opsdash.savings.money import nano_to_str
from opsdash.savings.reports import FIGURE_FIELDS, Figures, stream_rows

CSV_HEADER = [
    "day",
    "workflow",
    "workflow_name",
    "local_model",
    "node",
    "runs",
    "ok_runs",
    "unpriced_runs",
    "prompt_tokens",
    "completion_tokens",
    "energy_joules",
    "energy_source",
    "avoided_usd",
    "local_cost_usd",
    "net_usd",
    "pricing",
    # Of the row's figures, the batch runs' share (added at the end: scripts read by position).
    "batch_runs",
    "batch_prompt_tokens",
    "batch_completion_tokens",
    "batch_avoided_usd",
    "batch_net_usd",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500  # CSV lines per piece of the streamed response


def csv_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP: prefix a quote)."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_rows(filters: Filters) -> Iterator[list[str]]:
    """One row per day × workflow × local model × node with runs (``filters.node``: that
    node's only), then a TOTAL row.

    Numbers are written by us (never escaped, so they stay numbers); names are escaped. An
    unpriced row says "unpriced" in its avoided and net cells; those rows count 0 there, so
    every column's cells add up to its TOTAL, which equals the page's figure. The TOTAL is the
    sum of the rows written (read in one statement), so it cannot disagree with them.
    """
    ids = [filters.workflow.pk] if filters.workflow is not None else None
    # Names for the ids: every workflow and local model (tens of rows, not one per CSV line).
    workflows = {
        pk: (csv_text(slug), csv_text(name))
        for pk, slug, name in Workflow.objects.values_list("pk", "slug", "name")
    }
    models = {pk: csv_text(name) for pk, name in LocalModel.objects.values_list("pk", "name")}
    yield CSV_HEADER
    total = [0] * len(FIGURE_FIELDS)
    for day, workflow_id, model_id, node, *sums in stream_rows(
        start=filters.start, end=filters.end, workflow_ids=ids, node=filters.node
    ):
        total = [a + b for a, b in zip(total, sums, strict=True)]
        slug, name = workflows[workflow_id]
        yield _csv_line([day, slug, name, models[model_id], csv_text(node)], Figures(*sums))
    yield _csv_line(["TOTAL", "", "", "", ""], Figures(*total), unpriced_words=False)


def csv_chunks(filters: Filters) -> Iterator[str]:
    """``csv_rows`` as CSV text, a few hundred lines at a time: what the response streams."""
    buffer = _Buffer()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = csv_rows(filters)
    while True:
        for _, row in zip(range(ROWS_PER_CHUNK), rows, strict=False):
            writer.writerow(row)
        if not buffer.parts:
            return
        yield buffer.take()


class _Buffer:
    """Where ``csv.writer`` writes: pieces kept until the next chunk takes them."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


def _csv_line(head: list[str], figures: Figures, *, unpriced_words: bool = True) -> list[str]:
    unknown = unpriced_words and figures.pricing == "unpriced"
    return [
        *head,
        str(figures.runs),
        str(figures.ok_runs),
        str(figures.unpriced_runs),
        str(figures.prompt_tokens),
        str(figures.completion_tokens),
        f"{figures.energy_mj / 1000:.3f}",
        figures.energy_source or "",
        "unpriced" if unknown else nano_to_str(figures.avoided_nusd),
        nano_to_str(figures.local_nusd),
        "unpriced" if unknown else nano_to_str(figures.net_nusd),
        figures.pricing,
        str(figures.batch_runs),
        str(figures.batch_prompt_tokens),
        str(figures.batch_completion_tokens),
        nano_to_str(figures.batch_avoided_nusd),
        nano_to_str(figures.batch_net_nusd),
    ]
