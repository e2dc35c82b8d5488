"""How things stand right now, for the home page: one card per concern, per role.

Each card reads what its app already offers (the fleet listing, telemetry's alert episodes,
the savings aggregation, the catalog's and the ledger's rows) and links to the page that
owns the figure. The whole overview is a fixed number of queries, whatever the number of
nodes, runs or failures (tests/test_home.py counts them): no card reads per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone

from opsdash.accounts.roles import Cap, can, roles_of
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.fleet.listing import NodeView, list_nodes
from opsdash.runs.ledger import ledger_runs, ledger_totals, parse_ledger_filters
from opsdash.runs.models import Run, RunStatus, Workflow
from opsdash.savings.days import report_today
from opsdash.savings.filters import month_start
from opsdash.savings.reports import Figures, aggregate
from opsdash.telemetry.models import AlertEpisode
from opsdash.telemetry.services import open_episodes

#: How many rows a card lists before it says "and N more" with a link to the whole page.
LISTED = 5
#: Node states that need a person's look (pending: an admin's approval).
TROUBLED_NODE_STATES = frozenset({"unhealthy", "offline", "pending"})


@dataclass(frozen=True)
class LoadedModel:
    node: str
    model_id: int | None
    name: str
    state: str
    rss_bytes: int | None
    queue_length: int


@dataclass(frozen=True)
class NodesCard:
    nodes: list[NodeView]
    by_status: dict[str, int]
    loaded: list[LoadedModel]
    embedded: bool

    @property
    def troubled(self) -> int:
        return sum(n for status, n in self.by_status.items() if status in TROUBLED_NODE_STATES)

    @property
    def listed(self) -> list[NodeView]:
        # The ones that need a look first, then by name.
        return sorted(self.nodes, key=lambda n: (n.status not in TROUBLED_NODE_STATES, n.name))[
            :LISTED
        ]


@dataclass(frozen=True)
class AlertsCard:
    open_episodes: list[AlertEpisode]
    # Admins only (None otherwise): notification deliveries that gave up in the last 24 h.
    failed_deliveries: int | None


@dataclass(frozen=True)
class ActivityCard:
    """Runs and tokens of the last hour, and failed runs (status ``error``) of the last 24 h."""

    runs_hour: int
    tokens_hour: int
    failed_day: int
    # Operators: their own figures beside everyone's (None for admins, who see all).
    own_runs_hour: int | None = None
    own_tokens_hour: int | None = None
    own_failed_day: int | None = None
    failed_runs: list[Run] = field(default_factory=list)
    # Whether ``failed_runs`` are the viewer's own (operators) or everyone's (admins).
    failed_are_own: bool = False
    # The Runs page's query strings for the same runs (admins' links).
    hour_query: str = ""
    failed_query: str = ""


@dataclass(frozen=True)
class SavingsCard:
    today: Figures
    month: Figures
    month_label: str


@dataclass(frozen=True)
class FailedInstallsCard:
    models: list[LocalModel]
    count: int


@dataclass(frozen=True)
class FirstStep:
    """Something an empty install needs before its pages show anything."""

    text: str
    url_name: str  # where to do it; "" when the viewer cannot (ask an admin)


@dataclass(frozen=True)
class Overview:
    has_role: bool
    nodes: NodesCard | None = None
    alerts: AlertsCard | None = None
    activity: ActivityCard | None = None
    savings: SavingsCard | None = None
    failed_installs: FailedInstallsCard | None = None
    first_steps: list[FirstStep] = field(default_factory=list)


def overview_for(
    *, user: AbstractBaseUser | AnonymousUser, now: datetime | None = None
) -> Overview:
    """The cards ``user`` may see (each role's capabilities decide which), as of ``now``."""
    if not (roles_of(user) or getattr(user, "is_superuser", False)):
        return Overview(has_role=False)
    now = now or timezone.now()
    return Overview(
        has_role=True,
        nodes=_nodes() if can(user, Cap.VIEW_NODES) else None,
        alerts=_alerts(user, now) if can(user, Cap.VIEW_TELEMETRY) else None,
        activity=_activity(user, now) if can(user, Cap.RUN_PROMPTS) else None,
        savings=_savings() if can(user, Cap.VIEW_SAVINGS) else None,
        failed_installs=_failed_installs(now) if can(user, Cap.MANAGE_MODELS) else None,
        first_steps=_first_steps(user),
    )


def _nodes() -> NodesCard:
    # The loaded models come with the nodes (the embedded node's are the local supervisor's
    # runners, a fleet node's its last heartbeat's), so one listing serves both cards.
    nodes = list_nodes()
    by_status: dict[str, int] = {}
    loaded: list[LoadedModel] = []
    for node in nodes:
        by_status[node.status] = by_status.get(node.status, 0) + 1
        for entry in node.loaded:
            loaded.append(_loaded(node.name, entry))
    return NodesCard(
        nodes=nodes,
        by_status=dict(sorted(by_status.items())),
        loaded=loaded,
        embedded=any(n.embedded for n in nodes),
    )


def _loaded(node: str, entry: dict[str, Any]) -> LoadedModel:
    model_id = entry.get("model")
    return LoadedModel(
        node=node,
        model_id=model_id if isinstance(model_id, int) else None,
        name=str(entry.get("name") or f"model {model_id}"),
        state=str(entry.get("state") or ""),
        rss_bytes=entry.get("rss_bytes"),
        queue_length=int(entry.get("queue_length") or 0),
    )


def _alerts(user: AbstractBaseUser | AnonymousUser, now: datetime) -> AlertsCard:
    in_force = open_episodes()
    failed: int | None = None
    if can(user, Cap.MANAGE_ALERTS):
        from opsdash.notify.models import Delivery, DeliveryStatus

        failed = Delivery.objects.filter(
            status=DeliveryStatus.FAILED, created_at__gte=now - timedelta(hours=24)
        ).count()
    return AlertsCard(open_episodes=in_force, failed_deliveries=failed)


def _activity(user: AbstractBaseUser | AnonymousUser, now: datetime) -> ActivityCard:
    # The Runs page's own filters and totals, from the minute an hour (a day) ago: the card's
    # figures are what its link shows there, to the run.
    hour = {"from": _minute(now - timedelta(hours=1))}
    failed = {"from": _minute(now - timedelta(hours=24)), "status": str(RunStatus.ERROR)}
    last_hour = ledger_totals(ledger_runs(parse_ledger_filters(hour)))
    failed_runs = ledger_runs(parse_ledger_filters(failed)).select_related("model", "workflow")
    own = not can(user, Cap.VIEW_LEDGER)
    if own:
        # Operators see their own runs beside everyone's counts, and open only their own
        # (playground history is personal).
        name = user.get_username()
        mine = ledger_totals(ledger_runs(parse_ledger_filters({**hour, "user": name})))
        own_failed = failed_runs.filter(user__username=name)
        listed = own_failed
    else:
        listed = failed_runs
    return ActivityCard(
        runs_hour=last_hour.runs,
        tokens_hour=last_hour.tokens,
        failed_day=failed_runs.count(),
        own_runs_hour=mine.runs if own else None,
        own_tokens_hour=mine.tokens if own else None,
        own_failed_day=own_failed.count() if own else None,
        failed_runs=list(listed[:LISTED]),
        failed_are_own=own,
        hour_query=urlencode(hour),
        failed_query=urlencode(failed),
    )


def _minute(moment: datetime) -> str:
    """A moment as the Runs page's ``from`` reads it: a local time to the minute."""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def _savings() -> SavingsCard:
    today = report_today()
    start = month_start(today)
    # One read of the rollups by day (the savings pages' own aggregation): today is its last
    # row, the month the sum of them all.
    per_day = aggregate(start=start, end=today, by=("day",))
    month = Figures()
    for figures in per_day.values():
        month.add(figures)
    return SavingsCard(
        today=per_day.get((today,), Figures()),
        month=month,
        month_label=start.strftime("%B %Y"),
    )


def _failed_installs(now: datetime) -> FailedInstallsCard:
    recent = LocalModel.objects.filter(
        status=ModelStatus.FAILED, created_at__gte=now - timedelta(days=7)
    )
    return FailedInstallsCard(models=list(recent[:LISTED]), count=recent.count())


def _first_steps(user: AbstractBaseUser | AnonymousUser) -> list[FirstStep]:
    """What an empty install lacks, said to whoever can fix it (others are told whom to ask)."""
    steps: list[FirstStep] = []
    wants_models = can(user, Cap.VIEW_MODELS) or can(user, Cap.VIEW_SAVINGS)
    if wants_models and not LocalModel.objects.filter(status=ModelStatus.READY).exists():
        if can(user, Cap.MANAGE_MODELS):
            steps.append(
                FirstStep("Install a model: nothing can run until one is ready.", "catalog:install")
            )
        else:
            steps.append(FirstStep("No model is installed yet: ask an admin to install one.", ""))
    if can(user, Cap.VIEW_SAVINGS) and not (
        Workflow.objects.filter(archived_at__isnull=True).exclude(baseline_model="").exists()
    ):
        if can(user, Cap.MANAGE_WORKFLOWS):
            steps.append(
                FirstStep(
                    "Set a baseline on a workflow (the paid model it replaces) to measure savings.",
                    "gateway:index",
                )
            )
        else:
            steps.append(
                FirstStep(
                    "No workflow has a baseline yet: nothing is priced: ask an admin to set one.",
                    "",
                )
            )
    return steps
