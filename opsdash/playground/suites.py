"""Prompt suites: create and edit them, run them against a model, judge the answers.

Each case goes through ``runs.services.start_run`` / ``execute_run`` like any other request, so
its ledger row (``source="suite"``) is counted, timed and priced the same way. A case whose run is
refused or ends in an error is a failed case with the reason; ``run_suite`` never raises because
of a model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from opsdash.catalog import jobs
from opsdash.catalog.models import LocalModel
from opsdash.core.errors import Refusal
from opsdash.core.processes import current_process, is_alive
from opsdash.playground.models import (
    CaseResult,
    Suite,
    SuiteCase,
    SuiteRun,
    SuiteRunStatus,
    SuiteTrigger,
)
from opsdash.runs.models import Run, RunSource, RunStatus
from opsdash.runs.services import RunRefused, RunRequest, execute_run, generation_params, start_run

logger = logging.getLogger(__name__)

MAX_CASES = 100


class SuiteInvalid(Refusal):
    """The suite cannot be saved; ``problems`` lists every reason, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CaseSpec:
    """One case as an editor gives it; ``id`` names an existing case to update."""

    name: str
    prompt: str
    expect_contains: str = ""
    expect_regex: str = ""
    max_latency_ms: float | None = None
    min_tokens_per_second: float | None = None
    id: int | None = None


# ----------------------------------------------------------------------------- editing


def _unique_slug(name: str, *, exclude: int | None = None) -> str:
    base = slugify(name)[:100] or "suite"
    slug, n = base, 2
    taken = Suite.objects.exclude(pk=exclude) if exclude else Suite.objects.all()
    while taken.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _validate(name: str, params: dict[str, Any], cases: Sequence[CaseSpec]) -> list[str]:
    problems = []
    if not name.strip():
        problems.append("Give the suite a name.")
    try:
        generation_params(params)
    except RunRefused as exc:
        problems.append(f"Parameters: {exc.reason}")
    if not cases:
        problems.append("Add at least one case.")
    if len(cases) > MAX_CASES:
        problems.append(f"A suite holds at most {MAX_CASES} cases.")
    for number, case in enumerate(cases, start=1):
        label = f"Case {number}" + (f" ({case.name.strip()})" if case.name.strip() else "")
        if not case.prompt.strip():
            problems.append(f"{label} needs a prompt.")
        if case.expect_regex:
            try:
                re.compile(case.expect_regex)
            except re.error as exc:
                problems.append(f"{label}: the pattern {case.expect_regex!r} is invalid ({exc}).")
        if case.max_latency_ms is not None and not case.max_latency_ms > 0:
            problems.append(f"{label}: the latency limit must be above 0 ms.")
        if case.min_tokens_per_second is not None and not case.min_tokens_per_second > 0:
            problems.append(f"{label}: the minimum tokens per second must be above 0.")
    return problems


def _save_cases(suite: Suite, cases: Sequence[CaseSpec]) -> None:
    """Make the suite's cases exactly ``cases``: update, create, and drop the ones left out.

    Dropped cases keep their old results (``CaseResult.case`` becomes empty, the name stays).
    """
    existing = {case.pk: case for case in suite.cases.all()}
    kept: set[int] = set()
    for order, spec in enumerate(cases):
        case = existing.get(spec.id) if spec.id is not None else None
        if case is None:
            case = SuiteCase(suite=suite)
        case.order = order
        case.name = spec.name.strip()[:120] or f"Case {order + 1}"
        case.prompt = spec.prompt
        case.expect_contains = spec.expect_contains
        case.expect_regex = spec.expect_regex
        case.max_latency_ms = spec.max_latency_ms
        case.min_tokens_per_second = spec.min_tokens_per_second
        case.save()
        kept.add(case.pk)
    suite.cases.exclude(pk__in=kept).delete()


def _clean_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and v != "" and v != []}


@transaction.atomic
def create_suite(
    *,
    name: str,
    cases: Sequence[CaseSpec],
    user: User | None,
    description: str = "",
    params: dict[str, Any] | None = None,
    use_chat_template: bool = True,
    auto_run_after_install: bool = False,
) -> Suite:
    """A new suite with its cases, or ``SuiteInvalid`` listing everything to fix."""
    params = _clean_params(params or {})
    problems = _validate(name, params, cases)
    if problems:
        raise SuiteInvalid(problems)
    suite = Suite.objects.create(
        name=name.strip(),
        slug=_unique_slug(name),
        description=description.strip(),
        params=params,
        use_chat_template=use_chat_template,
        auto_run_after_install=auto_run_after_install,
        created_by=user,
    )
    _save_cases(suite, cases)
    return suite


@transaction.atomic
def update_suite(
    *,
    suite: Suite,
    name: str,
    cases: Sequence[CaseSpec],
    description: str = "",
    params: dict[str, Any] | None = None,
    use_chat_template: bool = True,
    auto_run_after_install: bool = False,
) -> Suite:
    """Replace the suite's settings and cases; past runs keep what they were held to."""
    params = _clean_params(params or {})
    problems = _validate(name, params, cases)
    if problems:
        raise SuiteInvalid(problems)
    suite = Suite.objects.select_for_update().get(pk=suite.pk)
    if name.strip() != suite.name:
        suite.slug = _unique_slug(name, exclude=suite.pk)
    suite.name = name.strip()
    suite.description = description.strip()
    suite.params = params
    suite.use_chat_template = use_chat_template
    suite.auto_run_after_install = auto_run_after_install
    suite.save()
    _save_cases(suite, cases)
    return suite


# ----------------------------------------------------------------------------- judging


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


def _rate(value: float) -> str:
    return f"{value:,.1f}".removesuffix(".0")


_ENDINGS: dict[str, str] = {
    RunStatus.ERROR: "the run ended in an error",
    RunStatus.CANCELLED: "the run was cancelled",
    RunStatus.INTERRUPTED: "the run was interrupted",
    RunStatus.RUNNING: "the run never finished",
}


def evaluate(case: SuiteCase, run: Run) -> tuple[bool, list[str]]:
    """Whether ``run`` met ``case``'s expectations, and a sentence for each one it missed.

    Pure: reads the two objects and touches nothing. Text checks are case-sensitive (a pattern
    can start with ``(?i)``); latency is the run's total time.
    """
    reasons: list[str] = []
    if run.status != RunStatus.OK:
        ending = _ENDINGS.get(run.status, f"the run ended {run.status}")
        reasons.append(ending + (f": {run.error}" if run.error else ""))
    answer = run.output or ""
    if case.expect_contains and case.expect_contains not in answer:
        reasons.append(f"expected the answer to contain “{case.expect_contains}”")
    if case.expect_regex:
        try:
            matched = re.search(case.expect_regex, answer) is not None
        except re.error as exc:
            reasons.append(f"the pattern /{case.expect_regex}/ is invalid ({exc})")
        else:
            if not matched:
                reasons.append(f"expected the answer to match /{case.expect_regex}/")
    if case.max_latency_ms is not None:
        if run.total_ms is None:
            reasons.append("no total time was recorded, so the latency limit cannot be met")
        elif run.total_ms > case.max_latency_ms:
            reasons.append(f"took {_ms(run.total_ms)}, over the {_ms(case.max_latency_ms)} limit")
    if case.min_tokens_per_second is not None:
        speed = run.tokens_per_second
        if speed is None:
            reasons.append("no generation speed was recorded, so the minimum cannot be met")
        elif speed < case.min_tokens_per_second:
            reasons.append(
                f"generated {_rate(speed)} tokens/s, under the "
                f"{_rate(case.min_tokens_per_second)} tokens/s minimum"
            )
    return not reasons, reasons


# ----------------------------------------------------------------------------- running


def start_suite_run(
    *, suite: Suite, model: LocalModel, user: User | None, trigger: SuiteTrigger
) -> SuiteRun:
    """Write the ``running`` row; ``execute_suite_run`` does the work (here or in a job)."""
    me = current_process()
    return SuiteRun.objects.create(
        suite=suite,
        model=model,
        triggered_by=user,
        trigger=trigger,
        case_count=suite.cases.count(),
        host=me.host,
        pid=me.pid,
        pid_started_at=me.started_at,
    )


def _run_case(suite_run: SuiteRun, case: SuiteCase) -> CaseResult:
    suite = suite_run.suite
    chat = suite.use_chat_template
    request = RunRequest(
        model_id=suite_run.model_id,
        prompt=None if chat else case.prompt,
        messages=[{"role": "user", "content": case.prompt}] if chat else None,
        params=dict(suite.params),
        workflow=None,
    )
    run: Run | None = None
    try:
        run = start_run(
            request=request,
            user=suite_run.triggered_by,
            source=RunSource.SUITE,
            group=suite_run.group,
        )
        run = async_to_sync(execute_run)(run)
    except RunRefused as exc:
        passed, reasons = False, [f"the run was refused: {exc.reason}"]
    except Exception as exc:
        logger.exception("suite run %s, case %s", suite_run.pk, case.pk)
        passed, reasons = False, [f"the run failed unexpectedly ({exc.__class__.__name__}: {exc})"]
    else:
        passed, reasons = evaluate(case, run)
    return CaseResult.objects.create(
        suite_run=suite_run,
        case=case,
        order=case.order,
        case_name=case.name,
        prompt=case.prompt,
        expectations=case.expectations(),
        run=run,
        passed=passed,
        reasons=reasons,
    )


def execute_suite_run(suite_run_id: int) -> None:
    """Run every case in order, recording each result as it comes, then settle the status.

    Never raises because of a model or a case; a background job may call it directly.
    """
    suite_run = SuiteRun.objects.select_related("suite", "model", "triggered_by").get(
        pk=suite_run_id
    )
    try:
        cases = list(suite_run.suite.cases.all())
        SuiteRun.objects.filter(pk=suite_run.pk).update(case_count=len(cases))
        for case in cases:
            result = _run_case(suite_run, case)
            counter = "passed" if result.passed else "failed"
            SuiteRun.objects.filter(pk=suite_run.pk).update(**{counter: F(counter) + 1})
    except Exception as exc:
        logger.exception("suite run %s failed", suite_run.pk)
        _settle(suite_run.pk, error=f"The suite run stopped unexpectedly ({exc}).")
    else:
        _settle(suite_run.pk, error="" if cases else "The suite has no cases.")


def _settle(suite_run_id: int, *, error: str) -> None:
    suite_run = SuiteRun.objects.get(pk=suite_run_id)
    if error:
        status = SuiteRunStatus.ERROR
    elif suite_run.failed:
        status = SuiteRunStatus.FAILED
    else:
        status = SuiteRunStatus.PASSED
    SuiteRun.objects.filter(pk=suite_run_id).update(
        status=status, error=error, finished_at=timezone.now()
    )


def run_suite(
    *, suite: Suite, model: LocalModel, user: User | None, trigger: SuiteTrigger
) -> SuiteRun:
    """Run ``suite`` against ``model`` to the end in the calling thread (sync code only)."""
    suite_run = start_suite_run(suite=suite, model=model, user=user, trigger=trigger)
    execute_suite_run(suite_run.pk)
    suite_run.refresh_from_db()
    return suite_run


def submit_suite_run(suite_run: SuiteRun) -> None:
    """Run ``suite_run`` in the background, on the suite runs' own pool: a long suite never
    holds up an install (``opsdash.catalog.jobs``)."""
    jobs.submit(execute_suite_run, suite_run.pk, lane=jobs.Lane.SUITE)


def run_suites_after_install(*, model_id: int) -> None:
    """The catalog's after-install hook: every suite marked for it runs against the new model,
    in the background (the install is done; its worker is free for the next one)."""
    model = LocalModel.objects.get(pk=model_id)
    for suite in Suite.objects.filter(auto_run_after_install=True):
        suite_run = start_suite_run(
            suite=suite, model=model, user=None, trigger=SuiteTrigger.INSTALL
        )
        submit_suite_run(suite_run)


def mark_interrupted_suite_runs() -> int:
    """Suite runs left ``running`` by a process of this host that is gone become ``error``."""
    host, count = current_process().host, 0
    for suite_run in SuiteRun.objects.filter(status=SuiteRunStatus.RUNNING, host=host):
        # A live owner (this process included: its job may still be running) keeps it.
        if is_alive(host=suite_run.host, pid=suite_run.pid, started_at=suite_run.pid_started_at):
            continue
        _settle(suite_run.pk, error="The server stopped while this suite was running.")
        count += 1
    return count
