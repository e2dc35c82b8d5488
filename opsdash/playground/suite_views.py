"""Suite pages: the list, create/edit (operators and admins), a suite with its runs, a run's
results, and each model's suite history."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from opsdash.accounts.permissions import requires
from opsdash.accounts.roles import Cap, can
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.playground import suites
from opsdash.playground.models import Suite, SuiteRun, SuiteRunStatus, SuiteTrigger
from opsdash.runs.params import PARAM_NAMES, PARAMS, page_inputs
from opsdash.typing import AuthedRequest

CASE_FIELDS = (
    "id",
    "name",
    "prompt",
    "expect_contains",
    "expect_regex",
    "max_latency_ms",
    "min_tokens_per_second",
)
NEW_SUITE_PARAMS = {"max_tokens": "128", "temperature": "0"}


def _suite(pk: int) -> Suite:
    return get_object_or_404(Suite.objects.select_related("created_by"), pk=pk)


def _suite_run(pk: int) -> SuiteRun:
    return get_object_or_404(
        SuiteRun.objects.select_related("suite", "model", "triggered_by"), pk=pk
    )


def _ready_models() -> list[LocalModel]:
    return list(LocalModel.objects.filter(status=ModelStatus.READY).order_by("name"))


# ----------------------------------------------------------------------------- the edit form
#
# One block of fields per case, named ``case-<n>-<field>``; "Add a case" posts the form back and
# shows it with one more empty block, so the page needs no script. Blank blocks are ignored.


def _blocks_from_post(post: QueryDict) -> list[dict[str, str]]:
    count = min(_int(post.get("case_count"), 0), suites.MAX_CASES + 1)
    blocks = []
    for n in range(count):
        if post.get(f"case-{n}-remove"):
            continue
        block = {name: post.get(f"case-{n}-{name}", "") for name in CASE_FIELDS}
        if any(block[name].strip() for name in CASE_FIELDS if name != "id"):
            blocks.append(block)
    return blocks


def _blocks_from_suite(suite: Suite) -> list[dict[str, str]]:
    def text(value: object) -> str:
        return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return [{name: text(getattr(case, name)) for name in CASE_FIELDS} for case in suite.cases.all()]


def _params_from_suite(suite: Suite) -> dict[str, str]:
    params = {k: str(v) for k, v in suite.params.items() if k != "stop"}
    stop = suite.params.get("stop") or []
    params["stop"] = ", ".join(s.replace("\n", "\\n") for s in stop)
    return params


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default


def _number(raw: str, label: str, problems: list[str], *, whole: bool = False) -> Any:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw) if whole else float(raw)
    except ValueError:
        problems.append(f"{label} must be {'a whole number' if whole else 'a number'}.")
        return None


def _parse(post: QueryDict, blocks: list[dict[str, str]]) -> tuple[dict[str, Any], list[str]]:
    """The form's values as the services take them, and any field that is not a number."""
    problems: list[str] = []
    params: dict[str, Any] = {}
    for param in PARAMS:
        raw = post.get(param.name, "")
        if param.type == "stops":
            stops = [s.strip().replace("\\n", "\n") for s in raw.split(",")]
            params[param.name] = [s for s in stops if s]
        else:
            params[param.name] = _number(raw, param.name, problems, whole=param.type == "int")
    cases = []
    for number, block in enumerate(blocks, start=1):
        cases.append(
            suites.CaseSpec(
                id=_int(block["id"], 0) or None,
                name=block["name"],
                prompt=block["prompt"],
                expect_contains=block["expect_contains"],
                expect_regex=block["expect_regex"],
                max_latency_ms=_number(
                    block["max_latency_ms"], f"Case {number}: the latency limit", problems
                ),
                min_tokens_per_second=_number(
                    block["min_tokens_per_second"], f"Case {number}: the minimum speed", problems
                ),
            )
        )
    values = {
        "name": post.get("name", ""),
        "description": post.get("description", ""),
        "params": params,
        "use_chat_template": bool(post.get("use_chat_template")),
        "auto_run_after_install": bool(post.get("auto_run_after_install")),
        "cases": cases,
    }
    return values, problems


def _edit(request: AuthedRequest, suite: Suite | None) -> HttpResponse:
    """The create and edit page: GET shows the form, POST adds a case block or saves."""
    problems: list[str] = []
    if request.method == "POST":
        blocks = _blocks_from_post(request.POST)
        form: dict[str, Any] = {
            key: request.POST.get(key, "") for key in ("name", "description", *PARAM_NAMES)
        }
        form["use_chat_template"] = bool(request.POST.get("use_chat_template"))
        form["auto_run_after_install"] = bool(request.POST.get("auto_run_after_install"))
        if request.POST.get("action") == "add":
            blocks.append(dict.fromkeys(CASE_FIELDS, ""))
        else:
            values, problems = _parse(request.POST, blocks)
            if not problems:
                try:
                    if suite is None:
                        suite = suites.create_suite(user=request.user, **values)
                        messages.success(request, f"Suite “{suite.name}” created.")
                    else:
                        suite = suites.update_suite(suite=suite, **values)
                        messages.success(request, f"Suite “{suite.name}” saved.")
                except suites.SuiteInvalid as exc:
                    problems = exc.problems
                else:
                    return redirect("suites:suite", pk=suite.pk)
    elif suite is None:
        form = {"use_chat_template": True, **NEW_SUITE_PARAMS}
        blocks = []
    else:
        form = {
            "name": suite.name,
            "description": suite.description,
            "use_chat_template": suite.use_chat_template,
            "auto_run_after_install": suite.auto_run_after_install,
            **_params_from_suite(suite),
        }
        blocks = _blocks_from_suite(suite)
    if not blocks:
        blocks.append(dict.fromkeys(CASE_FIELDS, ""))
    context = {
        "suite": suite,
        "form": form,
        "blocks": blocks,
        "problems": problems,
        "params": page_inputs(form),
    }
    return render(request, "playground/suites/form.html", context, status=400 if problems else 200)


# ----------------------------------------------------------------------------- pages


@requires(Cap.RUN_PROMPTS)
@require_GET
def suite_list(request: AuthedRequest) -> HttpResponse:
    latest = SuiteRun.objects.filter(suite=OuterRef("pk")).order_by("-started_at", "-id")
    found = Suite.objects.annotate(
        case_total=Count("cases"), latest_run_id=Subquery(latest.values("pk")[:1])
    )
    runs = SuiteRun.objects.select_related("model").in_bulk(
        [s.latest_run_id for s in found if s.latest_run_id]
    )
    rows = [{"suite": s, "cases": s.case_total, "latest": runs.get(s.latest_run_id)} for s in found]
    context = {"rows": rows, "can_edit": can(request.user, Cap.MANAGE_SUITES)}
    return render(request, "playground/suites/list.html", context)


@requires(Cap.MANAGE_SUITES)
@require_http_methods(["GET", "POST"])
def suite_create(request: AuthedRequest) -> HttpResponse:
    return _edit(request, None)


@requires(Cap.MANAGE_SUITES)
@require_http_methods(["GET", "POST"])
def suite_edit(request: AuthedRequest, pk: int) -> HttpResponse:
    return _edit(request, _suite(pk))


@requires(Cap.RUN_PROMPTS)
@require_GET
def suite_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    suite = _suite(pk)
    runs = suite.runs.select_related("model", "triggered_by")
    context = {
        "suite": suite,
        "cases": suite.cases.all(),
        "models": _ready_models(),
        "page": Paginator(runs, 30).get_page(request.GET.get("page")),
        "can_edit": can(request.user, Cap.MANAGE_SUITES),
    }
    return render(request, "playground/suites/detail.html", context)


@requires(Cap.RUN_PROMPTS)
@require_POST
def suite_run_start(request: AuthedRequest, pk: int) -> HttpResponse:
    """Start the suite against the chosen model in the background and show its page."""
    suite = _suite(pk)
    model_id = _int(request.POST.get("model"), 0)
    model = LocalModel.objects.filter(pk=model_id).first()
    if model is None:
        messages.error(request, "Pick a model to run the suite against.")
        return redirect("suites:suite", pk=suite.pk)
    suite_run = suites.start_suite_run(
        suite=suite, model=model, user=request.user, trigger=SuiteTrigger.MANUAL
    )
    suites.submit_suite_run(suite_run)
    return redirect("suites:result", pk=suite_run.pk)


@requires(Cap.RUN_PROMPTS)
@require_GET
def suite_run_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    """A suite run's pass/fail table; while it runs, htmx polls the ``results`` partial."""
    suite_run = _suite_run(pk)
    if suite_run.status == SuiteRunStatus.RUNNING and suites.mark_interrupted_suite_runs():
        suite_run = _suite_run(pk)
    context = {
        "suite_run": suite_run,
        "results": suite_run.results.select_related("run"),
        "percent": int(suite_run.done * 100 / suite_run.case_count) if suite_run.case_count else 0,
    }
    if request.htmx:
        return render(request, "playground/suites/result.html#results", context)
    return render(request, "playground/suites/result.html", context)


@requires(Cap.RUN_PROMPTS)
@require_GET
def model_history(request: AuthedRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=model_id)
    runs = model.suite_runs.select_related("suite", "triggered_by")
    latest: dict[int, SuiteRun] = {}
    for suite_run in runs[:500]:  # newest first: the first seen per suite is its latest
        latest.setdefault(suite_run.suite_id, suite_run)
    context = {
        "model": model,
        "latest": sorted(latest.values(), key=lambda r: r.suite.name.lower()),
        "page": Paginator(runs, 30).get_page(request.GET.get("page")),
    }
    return render(request, "playground/suites/model_history.html", context)
