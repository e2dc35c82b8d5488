"""What a savings page or API call asks for: a range of report days, maybe one workflow, maybe
one node.

The pages and the API parse the same query string with ``parse_filters``, so ``?from=…&to=…``
means the same everywhere and a bad one gets the same sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import quote

from opsdash.core.errors import Code, Refusal
from opsdash.runs.models import Workflow
from opsdash.savings.days import report_today
from opsdash.savings.models import WorkflowDailyRollup

MAX_RANGE_DAYS = 5 * 366
MAX_NODE_LENGTH = 63  # Run.node's


class FilterError(Refusal, ValueError):
    """A date range or workflow filter that cannot be used; ``status`` for the HTTP answer."""


PRESETS = {
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "365d": "Last 365 days",
    "month": "This month",
    "last_month": "Last month",
    "year": "This year",
}


def month_start(day: date) -> date:
    return day.replace(day=1)


def previous_month_start(day: date) -> date:
    return month_start(month_start(day) - timedelta(days=1))


def preset_range(name: str, today: date) -> tuple[date, date]:
    if name.endswith("d") and name[:-1].isdigit():
        return today - timedelta(days=int(name[:-1]) - 1), today
    if name == "month":
        return month_start(today), today
    if name == "last_month":
        start = previous_month_start(today)
        return start, month_start(today) - timedelta(days=1)
    if name == "year":
        return today.replace(month=1, day=1), today
    raise FilterError(f"Unknown range {name!r}; use one of {', '.join(PRESETS)}.")


@dataclass(frozen=True)
class Filters:
    start: date
    end: date
    workflow: Workflow | None = None
    preset: str = ""
    node: str = ""  # only the runs of this node (``Run.node``); "" for every node

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def query(self) -> str:
        """The query string that selects the same range (links, the CSV button)."""
        if self.preset:
            params = f"range={self.preset}"
        else:
            params = f"from={self.start.isoformat()}&to={self.end.isoformat()}"
        if self.workflow is not None:
            params += f"&workflow={self.workflow.slug}"
        if self.node:
            params += f"&node={quote(self.node, safe='')}"
        return params


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(f"“{name}” must be a date like 2025-01-31, not {value!r}.") from None


def parse_filters(params: Mapping[str, str], *, default_preset: str = "30d") -> Filters:
    """The ``from``/``to`` (report days, inclusive), ``range`` preset, ``workflow`` and
    ``node`` of a request; FilterError says what is wrong (a reversed range, a bad date, no such
    workflow, a node with no costed run)."""
    today = report_today()
    preset = (params.get("range") or "").strip()
    raw_from, raw_to = (params.get("from") or "").strip(), (params.get("to") or "").strip()
    if raw_from or raw_to:
        start = _parse_day(raw_from, "from") if raw_from else None
        end = _parse_day(raw_to, "to") if raw_to else today
        if start is None:
            start = end - timedelta(days=29)
        preset = ""
    else:
        start, end = preset_range(preset or default_preset, today)
        preset = preset or default_preset
    if end < start:
        raise FilterError(f"The date range is reversed: “from” ({start}) is after “to” ({end}).")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise FilterError("Choose a range of at most five years.")
    workflow = None
    slug = (params.get("workflow") or "").strip()
    if slug:
        workflow = Workflow.objects.filter(slug=slug).first()
        if workflow is None:
            raise FilterError(f"There is no workflow “{slug}”.", code=Code.NOT_FOUND)
    return Filters(start=start, end=end, workflow=workflow, preset=preset, node=_parse_node(params))


def _parse_node(params: Mapping[str, str]) -> str:
    node = (params.get("node") or "").strip()
    if not node:
        return ""
    if len(node) > MAX_NODE_LENGTH:
        raise FilterError(f"“node” is a node's name, at most {MAX_NODE_LENGTH} characters.")
    # The savings app knows nodes by their costed runs (it does not import the fleet): a name
    # no run was recorded on is a typo or a node that has served nothing yet, and zeros would
    # read as a node that saved nothing.
    if not WorkflowDailyRollup.objects.filter(node=node).exists():
        raise FilterError(
            f"No costed run has been recorded on node “{node}”; "
            f"the nodes with runs are: {_known_nodes_sentence()}.",
            code=Code.NOT_FOUND,
        )
    return node


def known_nodes() -> list[str]:
    """The nodes with costed runs, by name (blank: runs from before nodes were recorded)."""
    return list(
        WorkflowDailyRollup.objects.exclude(node="")
        .values_list("node", flat=True)
        .distinct()
        .order_by("node")
    )


def _known_nodes_sentence() -> str:
    names = known_nodes()
    return ", ".join(names) if names else "none yet"
