"""Budgets and rate limits: the windows, the admission check at the gateway, the counting of
finalized runs, budget alerts, and the one service that changes limits.

Why the counters are database rows, not Redis: the database is the one engine every web
process already shares in both modes (PostgreSQL in fleet mode, SQLite in the embedded one),
and a run's tokens are added in the very transaction that finalizes the run, so the ledger and
the counters cannot disagree after a crash. The issue allows "PostgreSQL or Redis"; Redis would
be a second source of truth with its own failure modes (a restart empties it).

Exactness across processes comes from single atomic statements on one row per scope × window:

- requests per minute: ``UPDATE … SET requests = requests + 1 WHERE … AND requests < limit``.
  PostgreSQL re-checks the condition on the newest row version after waiting for the row lock,
  SQLite serializes writers (``transaction_mode=IMMEDIATE``), so exactly ``limit`` requests of
  any burst pass, and a refusal increments nothing (the key's and the workflow's increments
  are one transaction: one refusing rolls the other back).
- tokens and avoided USD: ``INSERT … ON CONFLICT DO UPDATE SET tokens = tokens + … RETURNING``,
  by the run finalizer, so the value before and after each run is known exactly (that is how a
  budget alert crossing is detected once).

Windows: a minute is a UTC minute (``Retry-After`` counts to its end); a day, a week (from
Monday) and a calendar month are in ``OPSDASH_REPORT_TIME_ZONE``, like the savings reports. A
run counts in the budget window it *started* in (as the savings day totals do) and in the
minute it *finished* in (tokens per minute are what was just generated).

Only scopes that have a ``Limits`` row are counted; setting limits recomputes the current
windows from the ledger, so a budget set mid-month already holds the month's runs. (A run
finalized in the instant between the recompute and the new limits' commit can be missed by
both; the next recompute, i.e. the next change, counts it.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils import timezone

from opsdash.core.audit import Target, record
from opsdash.core.errors import Code, Refusal
from opsdash.gateway.models import GatewayCall, WorkflowKey
from opsdash.limits.models import (
    DEFAULT_ALERT_PERCENTS,
    CounterWindow,
    Limits,
    UsageCounter,
    Window,
)
from opsdash.runs.models import Run, RunSource, RunStatus, Workflow
from opsdash.savings.days import day_start, report_zone
from opsdash.savings.money import MoneyError, format_usd, nano_to_str, parse_usd, usd_to_nano

logger = logging.getLogger(__name__)

#: Minute counters older than this are deleted (one statement, when a minute has no row yet).
MINUTE_COUNTERS_KEPT = timedelta(hours=1)
#: Bounds that catch typing mistakes and keep sums far inside 64-bit integers.
MAX_BUDGET_TOKENS = 10**15
MAX_BUDGET_USD = Decimal(1_000_000_000)
MAX_TOKENS_PER_MINUTE = 10**12
#: A 32-bit column on PostgreSQL; far beyond any single gateway's rate anyway.
MAX_REQUESTS_PER_MINUTE = 10**9
WINDOW_WORDS: dict[str, str] = {Window.DAY: "daily", Window.WEEK: "weekly", Window.MONTH: "monthly"}


# ----------------------------------------------------------------------------- windows


def window_bounds(window: str, moment: datetime) -> tuple[datetime, datetime]:
    """The start (inclusive) and end (exclusive) of the ``window`` holding ``moment``."""
    if window == CounterWindow.MINUTE:
        start = moment.astimezone(UTC).replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    day = moment.astimezone(report_zone()).date()
    if window == Window.DAY:
        first, after = day, day + timedelta(days=1)
    elif window == Window.WEEK:
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    elif window == Window.MONTH:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown window {window!r}")
    # Local midnights: a day across a daylight-saving change is 23 or 25 hours long.
    return day_start(first), day_start(after)


def _local_date(moment: datetime) -> date:
    return moment.astimezone(report_zone()).date()


def when_label(moment: datetime) -> str:
    """A moment as people read it here: in the report time zone, named."""
    return f"{moment.astimezone(report_zone()):%Y-%m-%d %H:%M} {report_zone().key}"


# ----------------------------------------------------------------------------- counters


def _table() -> str:
    return connection.ops.quote_name(UsageCounter._meta.db_table)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _db_time(moment: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(moment)


def _add(
    *, scope: str, window: str, start: datetime, tokens: int, avoided_nusd: int, replace: bool
) -> tuple[int, int]:
    """Add to (or, with ``replace``, set) one counter row's tokens and avoided nano-USD,
    creating it; returns the row's values after the statement."""
    t = _table()
    op = "" if replace else "{t}.{c} + "
    sets = ", ".join(
        f"{_q(c)} = {op.format(t=t, c=_q(c))}excluded.{_q(c)}" for c in ("tokens", "avoided_nusd")
    )
    sql = (
        f"INSERT INTO {t} ({_q('scope')}, {_q('window')}, {_q('start')}, {_q('requests')}, "
        f"{_q('tokens')}, {_q('avoided_nusd')}) VALUES (%s, %s, %s, 0, %s, %s) "
        f"ON CONFLICT ({_q('scope')}, {_q('window')}, {_q('start')}) DO UPDATE SET {sets} "
        f"RETURNING {_q('tokens')}, {_q('avoided_nusd')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [scope, window, _db_time(start), tokens, avoided_nusd])
        row = cursor.fetchone()
    return int(row[0]), int(row[1])


def _take_request(*, scope: str, start: datetime, limit: int) -> int | None:
    """Count one request in ``scope``'s minute from ``start`` if fewer than ``limit`` were;
    the count after it, or None (nothing changed) when the limit is reached."""
    t = _table()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {t} ({_q('scope')}, {_q('window')}, {_q('start')}, {_q('requests')}, "
            f"{_q('tokens')}, {_q('avoided_nusd')}) VALUES (%s, %s, %s, 0, 0, 0) "
            f"ON CONFLICT ({_q('scope')}, {_q('window')}, {_q('start')}) DO NOTHING",
            [scope, CounterWindow.MINUTE, _db_time(start)],
        )
        cursor.execute(
            f"UPDATE {t} SET {_q('requests')} = {_q('requests')} + 1 "
            f"WHERE {_q('scope')} = %s AND {_q('window')} = %s AND {_q('start')} = %s "
            f"AND {_q('requests')} < %s RETURNING {_q('requests')}",
            [scope, CounterWindow.MINUTE, _db_time(start), limit],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _prune_minutes(now: datetime) -> None:
    UsageCounter.objects.filter(
        window=CounterWindow.MINUTE, start__lt=now - MINUTE_COUNTERS_KEPT
    ).delete()


def _counter(scope: str, window: str, start: datetime) -> UsageCounter | None:
    return UsageCounter.objects.filter(scope=scope, window=window, start=start).first()


# ----------------------------------------------------------------------------- budget state


@dataclass(frozen=True)
class BudgetState:
    """A budget's use in its current window. ``percent`` is of the tighter of the two limits."""

    window: str
    hard: bool
    limit_tokens: int | None
    limit_nusd: int | None
    used_tokens: int
    used_nusd: int
    left_tokens: int | None
    left_nusd: int | None
    percent: float
    starts_at: datetime
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return (self.left_tokens is not None and self.left_tokens <= 0) or (
            self.left_nusd is not None and self.left_nusd <= 0
        )

    def as_json(self) -> dict[str, Any]:
        """The API's shape: USD as exact decimal strings, times as ISO 8601."""

        def usd(nano: int | None) -> str | None:
            return None if nano is None else nano_to_str(nano)

        return {
            "window": self.window,
            "hard": self.hard,
            "tokens": self.limit_tokens,
            "usd": usd(self.limit_nusd),
            "used": {"tokens": self.used_tokens, "usd": nano_to_str(self.used_nusd)},
            "left": {"tokens": self.left_tokens, "usd": usd(self.left_nusd)},
            "percent": round(self.percent, 2),
            "starts_at": self.starts_at.isoformat(),
            "resets_at": self.resets_at.isoformat(),
        }


def _percent(tokens: int, nusd: int, limits: Limits) -> float:
    shares = []
    if limits.budget_tokens:
        shares.append(100 * tokens / limits.budget_tokens)
    if limits.budget_nusd:
        shares.append(100 * nusd / limits.budget_nusd)
    return max(shares, default=0.0)


def _state(limits: Limits, now: datetime, counter: UsageCounter | None) -> BudgetState:
    start, end = window_bounds(limits.budget_window, now)
    tokens = counter.tokens if counter is not None else 0
    nusd = counter.avoided_nusd if counter is not None else 0
    return BudgetState(
        window=limits.budget_window,
        hard=limits.budget_hard,
        limit_tokens=limits.budget_tokens,
        limit_nusd=limits.budget_nusd,
        used_tokens=tokens,
        used_nusd=nusd,
        left_tokens=None if limits.budget_tokens is None else max(0, limits.budget_tokens - tokens),
        left_nusd=None if limits.budget_nusd is None else max(0, limits.budget_nusd - nusd),
        percent=_percent(tokens, nusd, limits),
        starts_at=start,
        resets_at=end,
    )


def limits_of(*, workflow: Workflow | None = None, key: WorkflowKey | None = None) -> Limits | None:
    if (workflow is None) == (key is None):
        raise ValueError("give a workflow or a key")
    if workflow is not None:
        return Limits.objects.filter(workflow=workflow).first()
    return Limits.objects.filter(key=key).first()


def budget_state(
    *,
    workflow: Workflow | None = None,
    key: WorkflowKey | None = None,
    now: datetime | None = None,
) -> BudgetState | None:
    """The budget of ``workflow`` (or of ``key``) in the window holding ``now``; None when it
    has no budget."""
    limits = limits_of(workflow=workflow, key=key)
    if limits is None or not limits.has_budget:
        return None
    now = now or timezone.now()
    start, _ = window_bounds(limits.budget_window, now)
    return _state(limits, now, _counter(limits.scope, limits.budget_window, start))


# ----------------------------------------------------------------------------- admission


class LimitExceeded(Refusal):
    """A gateway call refused by a budget (``insufficient_quota``) or a rate limit
    (``rate_limit_exceeded``, with ``retry_after`` seconds and ``limit`` "requests" or
    "tokens": OpenAI's error type for it)."""

    default_code = Code.RATE_LIMITED

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        limit: str = "requests",
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after
        self.limit = limit


@dataclass(frozen=True)
class Admission:
    """What an admitted call may be told about its requests-per-minute limit (the tighter of
    the key's and the workflow's), as OpenAI's ``x-ratelimit-*-requests`` headers."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_seconds: int | None = None

    def headers(self) -> dict[str, str]:
        if self.limit_requests is None:
            return {}
        return {
            "x-ratelimit-limit-requests": str(self.limit_requests),
            "x-ratelimit-remaining-requests": str(self.remaining_requests),
            "x-ratelimit-reset-requests": f"{self.reset_seconds}s",
        }


def _whose(limits: Limits, key: WorkflowKey) -> str:
    if limits.key_id:
        return f"The key “{key.name}” ({key.prefix}…)"
    return f"The workflow “{key.workflow.name}”"


def _amounts(state: BudgetState) -> str:
    parts = []
    if state.limit_tokens is not None:
        parts.append(f"{state.used_tokens:,} of {state.limit_tokens:,} tokens")
    if state.limit_nusd is not None:
        parts.append(f"{format_usd(state.used_nusd)} of {format_usd(state.limit_nusd)} avoided")
    return " and ".join(parts)


def _seconds_left(end: datetime, now: datetime) -> int:
    return max(1, int((end - now).total_seconds() + 0.999))


def admit(*, key: WorkflowKey, now: datetime | None = None) -> Admission:
    """Let one gateway call of ``key`` through its and its workflow's limits, or raise
    ``LimitExceeded``.

    In order: a hard budget used up (``insufficient_quota``); tokens per minute already used
    by this minute's finished runs; requests per minute, counted here atomically only when
    below every limit (``rate_limit_exceeded``, ``retry_after`` to the minute's end).
    """
    now = now or timezone.now()
    found = list(Limits.objects.filter(Q(key=key) | Q(workflow_id=key.workflow_id)))
    # The key's own limits first: its sentence is the more specific one.
    found.sort(key=lambda limits: limits.key_id is None)
    if not found:
        return Admission()
    minute, minute_end = window_bounds(CounterWindow.MINUTE, now)
    wanted = Q(pk__in=[])
    for limits in found:
        wanted |= Q(scope=limits.scope, window=CounterWindow.MINUTE, start=minute)
        if limits.has_budget:
            start, _ = window_bounds(limits.budget_window, now)
            wanted |= Q(scope=limits.scope, window=limits.budget_window, start=start)
    counters = {(c.scope, c.window): c for c in UsageCounter.objects.filter(wanted)}
    if any((limits.scope, CounterWindow.MINUTE) not in counters for limits in found):
        # A minute with no row yet: the moment to drop old ones. A statement of its own, in no
        # transaction that holds other counter rows, so concurrent prunes cannot deadlock.
        _prune_minutes(minute)
    for limits in found:
        if limits.has_budget and limits.budget_hard:
            state = _state(limits, now, counters.get((limits.scope, limits.budget_window)))
            if state.exhausted:
                raise LimitExceeded(
                    f"{_whose(limits, key)} has used its {WINDOW_WORDS[Window(state.window)]} "
                    f"budget: {_amounts(state)}. It resets at {when_label(state.resets_at)}; an "
                    "OpsDash admin can raise it on the workflow's savings page.",
                    code=Code.INSUFFICIENT_QUOTA,
                    limit="budget",
                )
    retry = _seconds_left(minute_end, now)
    for limits in found:
        used = counters.get((limits.scope, CounterWindow.MINUTE))
        if (
            limits.tokens_per_minute is not None
            and used
            and used.tokens >= limits.tokens_per_minute
        ):
            raise LimitExceeded(
                f"{_whose(limits, key)} is over its limit of {limits.tokens_per_minute:,} tokens "
                f"per minute ({used.tokens:,} used this minute); try again in {retry} s.",
                retry_after=retry,
                limit="tokens",
            )
    rated = [limits for limits in found if limits.requests_per_minute is not None]
    if not rated:
        return Admission()
    remaining: list[tuple[int, int]] = []
    with transaction.atomic():
        for limits in rated:
            assert limits.requests_per_minute is not None
            count = _take_request(
                scope=limits.scope, start=minute, limit=limits.requests_per_minute
            )
            if count is None:
                # Raising rolls back the increments already made in this transaction.
                raise LimitExceeded(
                    f"{_whose(limits, key)} is over its limit of {limits.requests_per_minute:,} "
                    f"requests per minute; try again in {retry} s.",
                    retry_after=retry,
                    limit="requests",
                )
            remaining.append((limits.requests_per_minute - count, limits.requests_per_minute))
    left, limit = min(remaining)
    return Admission(limit_requests=limit, remaining_requests=left, reset_seconds=retry)


# ----------------------------------------------------------------------------- counting runs


def _run_key_id(run: Run) -> int | None:
    if run.source != RunSource.GATEWAY:
        return None
    return GatewayCall.objects.filter(run_id=run.pk).values_list("key_id", flat=True).first()


def _avoided(run: Run) -> int:
    from opsdash.savings.models import RunCost

    cost = RunCost.objects.filter(run_id=run.pk).only("priced", "avoided_nusd").first()
    return cost.avoided_nusd if cost is not None and cost.priced else 0


def count_run(*, run: Run) -> None:
    """The run finalizer: add a finalized run's tokens and avoided USD to the counters of its
    workflow's and (gateway runs) its key's limits, and alert on each budget percent crossed.

    Registered after savings' finalizer (INSTALLED_APPS order), so the run's cost is there.
    """
    if run.status == RunStatus.RUNNING:
        return
    tokens = (run.prompt_tokens or 0) + (run.completion_tokens or 0)
    key_id = _run_key_id(run)
    scopes = Q(workflow_id=run.workflow_id)
    if key_id is not None:
        scopes |= Q(key_id=key_id)
    # In pk order: every finalizer locks shared counter rows in one order (no deadlock).
    found = list(
        Limits.objects.filter(scopes).select_related("workflow", "key__workflow").order_by("pk")
    )
    if not found:
        return
    avoided = _avoided(run)
    if tokens == 0 and avoided == 0:
        return
    finished = run.finished_at or timezone.now()
    for limits in found:
        if limits.tokens_per_minute is not None and tokens:
            minute, _ = window_bounds(CounterWindow.MINUTE, finished)
            _add(
                scope=limits.scope,
                window=CounterWindow.MINUTE,
                start=minute,
                tokens=tokens,
                avoided_nusd=avoided,
                replace=False,
            )
        if limits.has_budget:
            start, _ = window_bounds(limits.budget_window, run.started_at)
            after_tokens, after_nusd = _add(
                scope=limits.scope,
                window=limits.budget_window,
                start=start,
                tokens=tokens,
                avoided_nusd=avoided,
                replace=False,
            )
            before = _percent(after_tokens - tokens, after_nusd - avoided, limits)
            after = _percent(after_tokens, after_nusd, limits)
            crossed = [p for p in sorted(set(limits.alert_percents)) if before < p <= after]
            if crossed:
                counter = UsageCounter(tokens=after_tokens, avoided_nusd=after_nusd)
                _alert(limits, _state(limits, run.started_at, counter), crossed)


def _alert(limits: Limits, state: BudgetState, percents: list[int]) -> None:
    """One notification per percent crossed, each once per window (notify's ``emit`` keys
    it); a failure to notify is logged and never loses the counts (its own savepoint)."""
    if limits.workflow is not None:
        what = f"workflow “{limits.workflow.name}”"
        link = reverse("savings:workflow", args=[limits.workflow.slug])
    else:
        assert limits.key is not None
        what = f"key “{limits.key.name}” ({limits.key.prefix}…) of “{limits.key.workflow.name}”"
        link = reverse("gateway:workflow", args=[limits.key.workflow.slug])
    word = WINDOW_WORDS[Window(limits.budget_window)]
    for percent in percents:
        subject = f"Budget {percent} % used: {what} ({word})"
        effect = (
            "Gateway calls are now refused until it resets."
            if percent >= 100 and limits.budget_hard
            else "It is a soft budget: calls go on."
            if percent >= 100
            else ""
        )
        message = (
            f"The {what} has used {percent} % of its {word} budget: {_amounts(state)}. "
            f"It resets at {when_label(state.resets_at)}. {effect}"
        ).strip()
        try:
            with transaction.atomic():
                from opsdash.notify.services import emit

                emit(
                    kind="budget",
                    key=f"budget:{limits.pk}:{_local_date(state.starts_at):%Y-%m-%d}:{percent}",
                    subject=subject,
                    message=message,
                    link=link,
                    data={"limits": limits.pk, "percent": percent, **state.as_json()},
                )
        except Exception:
            logger.exception("budget alert %s %% for %s not emitted", percent, limits.scope)


# ----------------------------------------------------------------------------- setting limits


class LimitsRefused(Refusal):
    """Limits that cannot be stored as given; ``reason`` says which field and why."""


@dataclass(frozen=True)
class BudgetSpec:
    """A budget as typed: ``usd`` a decimal string (``"25.00"``), ``tokens`` a whole number."""

    window: str
    tokens: int | None = None
    usd: str | None = None
    hard: bool = True


def _positive(value: int | None, *, what: str, param: str, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LimitsRefused(
            f"The {what} must be a whole number above 0, or empty for none.", param=param
        )
    if value > maximum:
        raise LimitsRefused(f"The {what} of {value:,} is over the {maximum:,} limit.", param=param)
    return value


def _budget_nusd(usd: str | None) -> int | None:
    if usd is None or not str(usd).strip():
        return None
    try:
        value = parse_usd(usd, what="budget in USD", maximum=MAX_BUDGET_USD)
        nusd = usd_to_nano(value)
    except MoneyError as exc:
        raise LimitsRefused(exc.reason, param="budget.usd") from None
    if nusd <= 0:
        raise LimitsRefused(
            "The budget in USD must be above $0; leave it empty for none.", param="budget.usd"
        )
    return nusd


def _percents(values: list[int] | None) -> list[int] | None:
    if values is None:
        return None
    if not isinstance(values, list) or not values or len(values) > 10:
        raise LimitsRefused(
            "Give between 1 and 10 alert percents, such as 50, 80, 100.", param="alert_percents"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise LimitsRefused(
                f"Each alert percent is a whole number from 1 to 1000, not {value!r}.",
                param="alert_percents",
            )
    return sorted(set(values))


def _snapshot(limits: Limits) -> dict[str, Any]:
    return {
        "budget_window": limits.budget_window,
        "budget_tokens": limits.budget_tokens,
        "budget_usd": None if limits.budget_nusd is None else nano_to_str(limits.budget_nusd),
        "budget_hard": limits.budget_hard,
        "requests_per_minute": limits.requests_per_minute,
        "tokens_per_minute": limits.tokens_per_minute,
        "alert_percents": list(limits.alert_percents),
    }


def set_limits(
    *,
    workflow: Workflow | None = None,
    key: WorkflowKey | None = None,
    budget: BudgetSpec | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
    alert_percents: list[int] | None = None,
    user: User | None,
) -> Limits:
    """Replace the limits of ``workflow`` (or ``key``); None clears one. Audited
    ``limits.update`` with before and after. The current windows' counters are recomputed
    from the ledger, so runs already in the window count against a budget set now.

    Refuses (``LimitsRefused``, naming the field) a window other than day/week/month, a budget
    with neither tokens nor USD, and numbers that are not above 0.
    """
    if (workflow is None) == (key is None):
        raise ValueError("give a workflow or a key")
    window, tokens, nusd, hard = "", None, None, True
    if budget is not None:
        if budget.window not in Window.values:
            raise LimitsRefused(
                f"The budget window must be day, week or month, not {budget.window!r}.",
                param="budget.window",
            )
        window, hard = budget.window, bool(budget.hard)
        tokens = _positive(
            budget.tokens, what="budget in tokens", param="budget.tokens", maximum=MAX_BUDGET_TOKENS
        )
        nusd = _budget_nusd(budget.usd)
        if tokens is None and nusd is None:
            raise LimitsRefused(
                "A budget needs a limit in tokens, in USD, or both; to remove it, send null.",
                param="budget",
            )
    rpm = _positive(
        requests_per_minute,
        what="requests per minute",
        param="requests_per_minute",
        maximum=MAX_REQUESTS_PER_MINUTE,
    )
    tpm = _positive(
        tokens_per_minute,
        what="tokens per minute",
        param="tokens_per_minute",
        maximum=MAX_TOKENS_PER_MINUTE,
    )
    percents = _percents(alert_percents)
    with transaction.atomic():
        if workflow is not None:
            limits, _ = Limits.objects.select_for_update().get_or_create(workflow=workflow)
            target = Target.of(workflow, type="workflow", label=workflow.name)
        else:
            assert key is not None
            limits, _ = Limits.objects.select_for_update().get_or_create(key=key)
            target = Target(
                type="key", id=str(key.pk), label=f"{key.workflow.slug}: {key.name} ({key.prefix}…)"
            )
        before = _snapshot(limits)
        limits.budget_window, limits.budget_tokens, limits.budget_nusd = window, tokens, nusd
        limits.budget_hard = hard
        limits.requests_per_minute, limits.tokens_per_minute = rpm, tpm
        if percents is not None:
            limits.alert_percents = percents
        limits.updated_by = user
        limits.save()
        recount(limits=limits)
        record(
            actor=user,
            action="limits.update",
            target=target,
            detail={"before": before, "after": _snapshot(limits)},
        )
    return limits


def recount(*, limits: Limits, now: datetime | None = None) -> None:
    """Recompute ``limits``' current budget window and minute from the ledger (finalized runs):
    tokens and avoided USD; the minute's admitted requests are kept."""
    now = now or timezone.now()
    runs = Run.objects.exclude(status=RunStatus.RUNNING)
    runs = (
        runs.filter(workflow_id=limits.workflow_id)
        if limits.workflow_id
        else runs.filter(gateway_call__key_id=limits.key_id)
    )
    windows: list[tuple[str, Q, datetime]] = []
    if limits.has_budget:
        start, end = window_bounds(limits.budget_window, now)
        windows.append((limits.budget_window, Q(started_at__gte=start, started_at__lt=end), start))
    if limits.tokens_per_minute is not None:
        minute, end = window_bounds(CounterWindow.MINUTE, now)
        windows.append(
            (CounterWindow.MINUTE, Q(finished_at__gte=minute, finished_at__lt=end), minute)
        )
    for window, bounds, start in windows:
        sums = runs.filter(bounds).aggregate(
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            avoided=Sum("cost__avoided_nusd", filter=Q(cost__priced=True)),
        )
        _add(
            scope=limits.scope,
            window=window,
            start=start,
            tokens=(sums["prompt"] or 0) + (sums["completion"] or 0),
            avoided_nusd=sums["avoided"] or 0,
            replace=True,
        )


# ----------------------------------------------------------------------------- reading


def limits_json(
    *, workflow: Workflow | None = None, key: WorkflowKey | None = None
) -> dict[str, Any]:
    """What the API answers for a workflow's or key's limits: the budget's state (null when
    none), the rate limits (null when none) and the alert percents."""
    limits = limits_of(workflow=workflow, key=key)
    state = budget_state(workflow=workflow, key=key)
    return {
        "budget": state.as_json() if state is not None else None,
        "requests_per_minute": limits.requests_per_minute if limits else None,
        "tokens_per_minute": limits.tokens_per_minute if limits else None,
        "alert_percents": list(limits.alert_percents if limits else DEFAULT_ALERT_PERCENTS),
    }


__all__ = [
    "Admission",
    "BudgetSpec",
    "BudgetState",
    "LimitExceeded",
    "LimitsRefused",
    "admit",
    "budget_state",
    "count_run",
    "limits_json",
    "recount",
    "set_limits",
    "window_bounds",
]
