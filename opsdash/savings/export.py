"""The CSV export: one row per day × workflow × local model × node, then a TOTAL row, from the
same aggregation as the pages."""

from __future__ import annotations

from collections.abc import Iterable

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Workflow
from opsdash.savings.filters import Filters
from opsdash.savings.money import nano_to_str
from opsdash.savings.reports import Figures, aggregate, total_of

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
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP: prefix a quote)."""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_rows(filters: Filters) -> Iterable[list[str]]:
    """One row per day × workflow × local model × node with runs (``filters.node``: that
    node's only), then a TOTAL row.

    Numbers are written by us (never escaped, so they stay numbers); names are escaped. An
    unpriced row says "unpriced" in its avoided and net cells; those rows count 0 there, so
    every column's cells add up to its TOTAL, which equals the page's figure.
    """
    ids = [filters.workflow.pk] if filters.workflow is not None else None
    grid = aggregate(
        start=filters.start,
        end=filters.end,
        by=("day", "workflow", "model", "node"),
        workflow_ids=ids,
        node=filters.node,
    )
    workflows = Workflow.objects.in_bulk({k[1] for k in grid})
    models = LocalModel.objects.in_bulk({k[2] for k in grid})
    yield CSV_HEADER
    for (day, workflow_id, model_id, node), figures in grid.items():
        workflow, model = workflows[workflow_id], models[model_id]
        names = [
            csv_text(workflow.slug),
            csv_text(workflow.name),
            csv_text(model.name),
            csv_text(node),
        ]
        yield _csv_line([day.isoformat(), *names], figures)
    total = total_of(grid.values())
    yield _csv_line(["TOTAL", "", "", "", ""], total, unpriced_words=False)


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
    ]
