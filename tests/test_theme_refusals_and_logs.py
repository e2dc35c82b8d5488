"""The 403 page says once, in plain words, who a page is for and who is signed in; a refusal is
one WARNING line in the log, not a traceback; "NVML unavailable" is said once, not every minute."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from opsdash.accounts.roles import Cap
from opsdash.core.logfilters import RefusalsInOneLine
from opsdash.telemetry.probes.nvml import NvmlProbe
from tests.fixtures.personas import client_for
from tests.telemetry.fake_nvml import FakeNvml, NVMLError_DriverNotLoaded, NVMLError_NoPermission

CAP_NAMES = [str(cap) for cap in Cap]


def _forbidden_text(client: Client, url: str, method: str = "get") -> str:
    response = getattr(client, method)(url)
    assert response.status_code == 403
    return response.content.decode()


@pytest.mark.django_db
def test_a_manager_on_an_admin_page_is_told_it_is_for_admins_and_who_they_are(manager) -> None:  # type: ignore[no-untyped-def]
    body = _forbidden_text(client_for(manager), "/models/install/")

    sentence = "This page is for admins. You are signed in as mona (manager)."
    assert body.count(sentence) == 1
    assert "does not allow" not in body, "the old sentence, which repeated itself"
    assert [name for name in CAP_NAMES if name in body] == []


@pytest.mark.django_db
def test_a_page_for_two_roles_names_both_and_a_user_without_a_role_is_told_so(  # type: ignore[no-untyped-def]
    manager, outsider
) -> None:
    body = _forbidden_text(client_for(manager), "/telemetry/")
    assert "This page is for operators and admins. You are signed in as mona (manager)." in body

    body = _forbidden_text(client_for(outsider), "/savings/")
    assert "This page is for admins and managers." in body
    assert "You are signed in as nobody, who has no role yet." in body
    assert [name for name in CAP_NAMES if name in body] == []


@pytest.mark.django_db
def test_an_operator_creating_a_node_token_is_told_it_is_for_admins(operator) -> None:  # type: ignore[no-untyped-def]
    body = _forbidden_text(client_for(operator), "/nodes/", method="post")

    assert "Creating node tokens is for admins. You are signed in as otto (operator)." in body
    assert "manage_nodes" not in body


@pytest.mark.django_db
def test_a_403_is_one_warning_line_naming_who_lacked_what_without_a_traceback(  # type: ignore[no-untyped-def]
    manager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        _forbidden_text(client_for(manager), "/models/install/")

    records = [r for r in caplog.records if r.name == "django.request"]
    assert len(records) == 1
    (record,) = records
    assert record.levelname == "WARNING"
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage() == (
        "Forbidden (Permission denied): /models/install/ (mona lacks manage_models)"
    )
    assert "Traceback" not in caplog.text


@pytest.mark.django_db
def test_a_request_for_an_unknown_host_is_logged_without_its_traceback(  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    # django.security.DisallowedHost is a child logger: the console handler's filter covers it.
    with caplog.at_level(logging.INFO):
        response = Client(HTTP_HOST="evil.example").get("/accounts/login/")

    assert response.status_code == 400
    records = [r for r in caplog.records if r.name.startswith("django.security")]
    assert len(records) == 1 and records[0].exc_info is None
    assert "evil.example" in records[0].getMessage()
    assert "Traceback" not in caplog.text


def test_the_console_handler_carries_the_refusal_filter() -> None:
    console = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RefusalsInOneLine) for f in h.filters)
    ]
    assert console, "settings.LOGGING puts RefusalsInOneLine on the console handler"


def test_a_real_error_keeps_its_traceback() -> None:
    try:
        raise RuntimeError("the database went away")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "django.request", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
        )
    assert RefusalsInOneLine().filter(record) is True
    assert record.exc_info is not None, "only refusals lose their traceback"


def _nvml_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "opsdash.telemetry.probes.nvml"
    ]


def test_nvml_unavailable_is_logged_at_info_once_then_at_debug_on_each_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml(init_error=NVMLError_DriverNotLoaded)
    probe = NvmlProbe(nvml, retry_seconds=0.0)  # every read retries, as each minute would

    with caplog.at_level(logging.DEBUG, logger="opsdash.telemetry.probes.nvml"):
        for _ in range(4):
            assert probe.read(slow=True).state == "no_driver"

    lines = _nvml_lines(caplog)
    assert nvml.inits == 4, "it did retry"
    assert [level for level, _ in lines] == ["INFO", "DEBUG", "DEBUG", "DEBUG"]
    assert all(message.startswith("NVML unavailable (no_driver)") for _, message in lines)


def test_a_change_of_nvml_trouble_is_news_again(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(init_error=NVMLError_DriverNotLoaded)
    probe = NvmlProbe(nvml, retry_seconds=0.0)

    with caplog.at_level(logging.INFO, logger="opsdash.telemetry.probes.nvml"):
        probe.read(slow=False)
        nvml.init_error = NVMLError_NoPermission  # a different trouble: said, as a warning
        probe.read(slow=False)
        probe.read(slow=False)
        nvml.init_error = None  # the driver came back
        assert probe.read(slow=False).state == "ok"
        nvml.init_error = NVMLError_DriverNotLoaded
        probe.close()  # the next read opens a new session, which fails as before
        probe.read(slow=False)

    levels = [level for level, _ in _nvml_lines(caplog)]
    assert levels == ["INFO", "WARNING", "INFO", "INFO"], _nvml_lines(caplog)
