"""Prompt suites: judging answers, running against the real tiny model, auto-run after install,
and the pages each role may use."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils.html import escape

from opsdash.catalog import hooks, jobs
from opsdash.catalog.models import LocalModel, ModelStatus
from opsdash.catalog.services import retire_model
from opsdash.playground import suites
from opsdash.playground.models import (
    CaseResult,
    Suite,
    SuiteCase,
    SuiteRun,
    SuiteRunStatus,
    SuiteTrigger,
)
from opsdash.runs.models import Run, RunSource, RunStatus
from tests.fixtures.models import install_ready

NOT_IN_ANY_ANSWER = "zebra-quartz-7731"
GENEROUS_LATENCY_MS = 600_000.0
FAST_PARAMS = {"max_tokens": 8, "temperature": 0, "seed": 1}


def a_run(**fields: Any) -> Run:
    values = {
        "status": RunStatus.OK,
        "output": "The capital of France is Paris.",
        "total_ms": 812.0,
        "tokens_per_second": 3.2,
    }
    return Run(**(values | fields))


def make_suite(*cases: suites.CaseSpec, chat: bool = False, auto: bool = False) -> Suite:
    return suites.create_suite(
        name="Smoke",
        cases=list(cases),
        user=None,
        params=FAST_PARAMS,
        use_chat_template=chat,
        auto_run_after_install=auto,
    )


PASSING = suites.CaseSpec(
    name="answers at all", prompt="hello world", max_latency_ms=GENEROUS_LATENCY_MS
)
FAILING = suites.CaseSpec(name="knows the code", prompt="hello", expect_contains=NOT_IN_ANY_ANSWER)


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(
    ("case", "passed", "reasons"),
    [
        (SuiteCase(expect_contains="Paris"), True, []),
        (
            SuiteCase(expect_contains="Rome"),
            False,
            ["expected the answer to contain “Rome”"],
        ),
        (SuiteCase(expect_regex=r"(?i)\bparis\b"), True, []),
        (
            SuiteCase(expect_regex=r"^\d+$"),
            False,
            [r"expected the answer to match /^\d+$/"],
        ),
        (SuiteCase(max_latency_ms=1000), True, []),
        (SuiteCase(max_latency_ms=500), False, ["took 812 ms, over the 500 ms limit"]),
        (SuiteCase(min_tokens_per_second=3), True, []),
        (
            SuiteCase(min_tokens_per_second=5),
            False,
            ["generated 3.2 tokens/s, under the 5 tokens/s minimum"],
        ),
    ],
    ids=[
        "contains-pass",
        "contains-fail",
        "regex-pass",
        "regex-fail",
        "latency-pass",
        "latency-fail",
        "speed-pass",
        "speed-fail",
    ],
)
def test_evaluate_judges_each_expectation_and_says_why_it_failed(
    case: SuiteCase, passed: bool, reasons: list[str]
) -> None:
    assert suites.evaluate(case, a_run()) == (passed, reasons)


def test_evaluate_lists_every_missed_expectation_not_just_the_first() -> None:
    case = SuiteCase(expect_contains="Rome", max_latency_ms=100, min_tokens_per_second=10)
    passed, reasons = suites.evaluate(case, a_run())
    assert not passed
    assert len(reasons) == 3


def test_a_run_that_ended_in_an_error_fails_even_without_expectations() -> None:
    run = a_run(status=RunStatus.ERROR, error="The runner died.", output="")
    passed, reasons = suites.evaluate(SuiteCase(), run)
    assert not passed
    assert reasons == ["the run ended in an error: The runner died."]


def test_missing_timings_fail_a_timing_expectation_instead_of_passing_it() -> None:
    run = a_run(total_ms=None, tokens_per_second=None)
    passed, reasons = suites.evaluate(SuiteCase(max_latency_ms=1, min_tokens_per_second=1), run)
    assert not passed and len(reasons) == 2


# ----------------------------------------------------------------------------- editing


@pytest.mark.django_db
def test_a_suite_with_a_broken_pattern_or_no_prompt_is_refused_with_every_reason() -> None:
    with pytest.raises(suites.SuiteInvalid) as refused:
        make_suite(
            suites.CaseSpec(name="a", prompt="", expect_regex="("),
            suites.CaseSpec(name="b", prompt="hi", max_latency_ms=-5),
        )
    problems = " ".join(refused.value.problems)
    assert "Case 1 (a) needs a prompt." in problems
    assert "is invalid" in problems
    assert "Case 2 (b): the latency limit must be above 0 ms." in problems
    assert not Suite.objects.exists()


@pytest.mark.django_db
def test_bad_generation_parameters_are_refused_with_the_backends_sentence() -> None:
    with pytest.raises(suites.SuiteInvalid) as refused:
        suites.create_suite(name="x", cases=[PASSING], user=None, params={"temperature": 9})
    assert "temperature must be a number from 0 to 2" in refused.value.problems[0]


# ----------------------------------------------------------------------------- running


def test_a_suite_run_records_a_pass_and_a_fail_with_their_ledger_rows(tiny_model, operator):
    suite = make_suite(PASSING, FAILING)

    suite_run = suites.run_suite(
        suite=suite, model=tiny_model, user=operator, trigger=SuiteTrigger.MANUAL
    )

    assert suite_run.status == SuiteRunStatus.FAILED
    assert (suite_run.passed, suite_run.failed, suite_run.case_count) == (1, 1, 2)
    assert suite_run.finished_at is not None
    results = list(suite_run.results.select_related("run"))
    assert [r.case_name for r in results] == ["answers at all", "knows the code"]
    assert [r.passed for r in results] == [True, False]
    assert results[0].reasons == []
    assert results[1].reasons == [f"expected the answer to contain “{NOT_IN_ANY_ANSWER}”"]
    runs = Run.objects.filter(group=suite_run.group)
    assert runs.count() == 2
    for run in runs:
        assert run.source == RunSource.SUITE
        assert run.status == RunStatus.OK and run.completion_tokens == 8
        assert run.user == operator and run.model == tiny_model
    assert results[0].run.output  # the answer is kept for the results table


def test_a_chat_suite_sends_the_prompt_as_a_user_message(tiny_model):
    suite = make_suite(PASSING, chat=True)

    suite_run = suites.run_suite(
        suite=suite, model=tiny_model, user=None, trigger=SuiteTrigger.MANUAL
    )

    assert suite_run.status == SuiteRunStatus.PASSED
    run = Run.objects.get(group=suite_run.group)
    assert run.messages == [{"role": "user", "content": "hello world"}] and run.prompt == ""


def test_a_suite_against_a_retired_model_fails_each_case_with_the_reason(tiny_model, admin):
    suite = make_suite(PASSING, FAILING)
    retire_model(model=tiny_model, user=admin)

    suite_run = suites.run_suite(
        suite=suite, model=tiny_model, user=admin, trigger=SuiteTrigger.MANUAL
    )

    assert suite_run.status == SuiteRunStatus.FAILED
    assert (suite_run.passed, suite_run.failed) == (0, 2)
    for result in suite_run.results.all():
        assert result.run is None
        assert result.reasons == [
            f"the run was refused: “{tiny_model.name}” is retired; only ready models can run."
        ]
    assert not Run.objects.exists()


# ----------------------------------------------------------------------------- after install


def test_suites_marked_for_it_run_by_themselves_after_an_install(
    transactional_db, model_root, tiny_gguf_path, supervisor_cleanup
):
    auto = make_suite(PASSING, auto=True)
    manual = suites.create_suite(name="Manual only", cases=[PASSING], user=None)

    model = install_ready(tiny_gguf_path, model_root)
    assert jobs.drain(timeout=60)  # the suite runs on its own pool

    suite_run = SuiteRun.objects.get(model=model)
    assert suite_run.suite == auto and suite_run.trigger == SuiteTrigger.INSTALL
    assert suite_run.triggered_by is None
    assert suite_run.status == SuiteRunStatus.PASSED and suite_run.passed == 1
    assert not SuiteRun.objects.filter(suite=manual).exists()


def explode(*, model_id: int) -> None:
    raise RuntimeError("hook broke")


def test_a_failing_after_install_hook_never_fails_the_install(
    db, model_root, tiny_gguf_path, supervisor_cleanup
):
    with hooks.after_install.override(explode):
        model = install_ready(tiny_gguf_path, model_root)

    assert model.status == ModelStatus.READY


# ----------------------------------------------------------------------------- pages


def form_data(name: str, *cases: dict[str, str], action: str = "save") -> dict[str, str]:
    data = {
        "name": name,
        "description": "Checks the basics.",
        "max_tokens": "8",
        "temperature": "0",
        "seed": "1",
        "case_count": str(len(cases)),
        "action": action,
    }
    for n, case in enumerate(cases):
        data |= {f"case-{n}-{key}": value for key, value in case.items()}
    return data


def test_an_admin_creates_a_suite_through_the_form_and_sees_it(as_admin, admin):
    assert as_admin.get(reverse("suites:create")).status_code == 200

    response = as_admin.post(
        reverse("suites:create"),
        form_data(
            "Geography",
            {"name": "capital", "prompt": "Capital of France?", "expect_contains": "Paris"},
            {"name": "fast", "prompt": "Say hi", "max_latency_ms": "500"},
            {"name": "", "prompt": ""},  # an empty block is ignored
        ),
    )

    suite = Suite.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "suites:suite", args=[suite.pk]
    )
    assert suite.params == {"max_tokens": 8, "temperature": 0.0, "seed": 1}
    assert suite.created_by == admin and not suite.use_chat_template
    cases = list(suite.cases.all())
    assert [(c.name, c.expect_contains, c.max_latency_ms) for c in cases] == [
        ("capital", "Paris", None),
        ("fast", "", 500.0),
    ]
    page = as_admin.get(reverse("suites:suite", args=[suite.pk])).content.decode()
    assert "Geography" in page and "Capital of France?" in page and "contains" in page
    assert "Geography" in as_admin.get(reverse("suites:index")).content.decode()


def test_adding_a_case_shows_one_more_block_without_saving(as_admin):
    response = as_admin.post(
        reverse("suites:create"),
        form_data("Draft", {"name": "one", "prompt": "hi"}, action="add"),
    )
    assert response.status_code == 200
    assert response.content.decode().count('data-testid="case-block"') == 2
    assert not Suite.objects.exists()


def test_the_form_shows_every_problem_and_keeps_what_was_typed(as_admin):
    response = as_admin.post(
        reverse("suites:create"),
        form_data("Broken", {"name": "bad", "prompt": "hi", "expect_regex": "(unclosed"}),
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "The suite was not saved" in page and "is invalid" in page
    assert 'value="(unclosed"' in page
    assert not Suite.objects.exists()


@pytest.mark.django_db
def test_an_admin_edits_a_suite_and_old_results_keep_the_removed_cases_name(as_admin):
    suite = make_suite(PASSING, FAILING)
    keep, drop = suite.cases.all()
    suite_run = SuiteRun.objects.create(
        suite=suite, model=_a_model(), trigger=SuiteTrigger.MANUAL, status="failed"
    )
    CaseResult.objects.create(suite_run=suite_run, case=drop, case_name=drop.name, passed=False)

    response = as_admin.post(
        reverse("suites:edit", args=[suite.pk]),
        form_data(
            "Smoke v2",
            {"id": str(keep.pk), "name": "renamed", "prompt": "hello"},
            {"id": str(drop.pk), "name": drop.name, "prompt": drop.prompt, "remove": "1"},
        ),
    )

    assert response.status_code == 302
    suite.refresh_from_db()
    assert suite.name == "Smoke v2"
    assert [(c.pk, c.name) for c in suite.cases.all()] == [(keep.pk, "renamed")]
    result = CaseResult.objects.get()
    assert result.case is None and result.case_name == "knows the code"


def _a_model() -> LocalModel:
    return LocalModel.objects.create(
        name="m", slug="m", source_kind="path", source_ref="/x", status=ModelStatus.READY
    )


@pytest.mark.django_db(transaction=True)
def test_an_operator_runs_a_suite_and_sees_the_pass_fail_table(as_operator, operator, tiny_model):
    suite = make_suite(PASSING, FAILING)
    detail = as_operator.get(reverse("suites:suite", args=[suite.pk])).content.decode()
    assert f'<option value="{tiny_model.pk}">' in detail and "Edit suite" in detail

    response = as_operator.post(reverse("suites:run", args=[suite.pk]), {"model": tiny_model.pk})

    suite_run = SuiteRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("suites:result", args=[suite_run.pk])
    assert jobs.drain(timeout=60)
    suite_run.refresh_from_db()
    assert suite_run.triggered_by == operator and suite_run.status == SuiteRunStatus.FAILED

    page = as_operator.get(response["Location"]).content.decode()
    assert page.count('data-testid="case-verdict"') == 2
    assert ">pass<" in page and ">fail<" in page
    assert f"expected the answer to contain “{NOT_IN_ANY_ANSWER}”" in page
    assert " ms" in page and "hx-get" not in page  # finished: timings shown, no more polling
    answer = Run.objects.filter(group=suite_run.group).first()
    assert answer is not None and escape(answer.output.strip()[:20]) in page

    history = as_operator.get(reverse("suites:model_history", args=[tiny_model.pk]))
    assert "Smoke" in history.content.decode() and "failed" in history.content.decode()


@pytest.mark.django_db
def test_a_running_suite_page_polls_its_results_partial(as_operator):
    suite = make_suite(PASSING)
    suite_run = suites.start_suite_run(
        suite=suite, model=_a_model(), user=None, trigger=SuiteTrigger.MANUAL
    )
    url = reverse("suites:result", args=[suite_run.pk])

    page = as_operator.get(url).content.decode()
    partial = as_operator.get(url, headers={"HX-Request": "true"}).content.decode()

    assert f'hx-get="{url}"' in page and 'hx-trigger="every 1s"' in page
    assert partial.lstrip().startswith('<div id="suite-run"') and "<html" not in partial
    assert "0 of 1 done" in partial


@pytest.mark.django_db
def test_a_suite_run_orphaned_by_a_dead_process_is_shown_as_an_error(as_operator):
    suite = make_suite(PASSING)
    suite_run = suites.start_suite_run(
        suite=suite, model=_a_model(), user=None, trigger=SuiteTrigger.MANUAL
    )
    SuiteRun.objects.filter(pk=suite_run.pk).update(pid=2**22 + 12345)  # no such process

    page = as_operator.get(reverse("suites:result", args=[suite_run.pk])).content.decode()

    assert "The server stopped while this suite was running." in page
    suite_run.refresh_from_db()
    assert suite_run.status == SuiteRunStatus.ERROR


@pytest.mark.django_db
def test_an_operator_creates_and_edits_suites(as_operator, operator):
    assert as_operator.get(reverse("suites:create")).status_code == 200
    created = as_operator.post(
        reverse("suites:create"), form_data("Mine", {"name": "x", "prompt": "y"})
    )
    suite = Suite.objects.get()
    assert created.status_code == 302 and suite.created_by == operator
    assert (
        "Edit suite" in as_operator.get(reverse("suites:suite", args=[suite.pk])).content.decode()
    )

    edited = as_operator.post(
        reverse("suites:edit", args=[suite.pk]), form_data("Renamed", {"name": "x", "prompt": "z"})
    )
    assert edited.status_code == 302
    assert Suite.objects.get().name == "Renamed"


@pytest.mark.django_db
def test_a_manager_cannot_see_or_run_suites(manager):
    from tests.fixtures.personas import client_for

    client = client_for(manager)
    suite = make_suite(PASSING)
    model = _a_model()
    suite_run = suites.start_suite_run(
        suite=suite, model=model, user=None, trigger=SuiteTrigger.MANUAL
    )
    for url in (
        reverse("suites:index"),
        reverse("suites:suite", args=[suite.pk]),
        reverse("suites:result", args=[suite_run.pk]),
        reverse("suites:model_history", args=[model.pk]),
    ):
        assert client.get(url).status_code == 403, url
    assert (
        client.post(reverse("suites:run", args=[suite.pk]), {"model": model.pk}).status_code == 403
    )
    assert SuiteRun.objects.count() == 1
