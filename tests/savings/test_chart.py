"""The savings chart's choices (static/js/savings-chart.js), run in the real browser engine the
pages use: money ticks with "$", a label on the last day, markers that cannot read as "8"."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Page, Route

pytestmark = pytest.mark.e2e

STATIC = Path(settings.BASE_DIR) / "static"
ORIGIN = "http://static.test"


@pytest.fixture
def chart(page: Page):  # type: ignore[no-untyped-def]
    """Calls into the module as the pages import it, served from static/ on a routed origin."""

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path == "/":
            route.fulfill(body="<!doctype html><title>chart</title>", content_type="text/html")
            return
        target = STATIC / path.lstrip("/")
        kind = "text/javascript" if target.suffix == ".js" else mimetypes.guess_type(target)[0]
        route.fulfill(path=target, content_type=kind or "application/octet-stream")

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")

    def call(name: str, *args: Any) -> Any:
        return page.evaluate(
            "async ([name, args]) => (await import('/js/savings-chart.js'))[name](...args)",
            [name, list(args)],
        )

    return call


def test_money_ticks_carry_a_dollar_sign_and_shorten_thousands(chart) -> None:  # type: ignore[no-untyped-def]
    assert chart("moneyTicks", [0, 500, 1000, 1500]) == ["$0", "$0.5k", "$1.0k", "$1.5k"]
    assert chart("moneyTicks", [0, 1200, 2400]) == ["$0", "$1.2k", "$2.4k"]
    assert chart("moneyTicks", [0, 2_500_000, 5_000_000]) == ["$0", "$2.5M", "$5.0M"]
    assert chart("moneyTicks", [0, 0.005, 0.01]) == ["$0", "$0.005", "$0.010"]
    assert chart("moneyTicks", [-20, 0, 20, 40]) == ["\u2212$20", "$0", "$20", "$40"]


def test_the_last_day_always_has_a_label_and_reads_today(chart) -> None:  # type: ignore[no-untyped-def]
    days = chart("seconds", [f"2025-01-{d:02d}" for d in range(1, 31)])
    splits = chart("daySplits", days, 300)  # room for 4 labels over 30 days
    assert splits[-1] == days[-1] and len(splits) <= 4
    assert chart("dayLabel", days[-1], "2025-01-30") == "Today"
    assert chart("dayLabel", days[1], "2025-01-30") == "2 Jan"
    assert chart("dayLabel", days[0], "2025-01-30") == "1 Jan 2025"
    assert chart("daySplits", days[:3], 1000) == days[:3]  # every day when there is room


def test_markers_show_only_for_a_single_day_and_never_as_two_equal_circles(chart) -> None:  # type: ignore[no-untyped-def]
    assert not chart("pointStyle", 1, 7)["show"]  # a week draws lines, no markers
    single = [chart("pointStyle", i, 1) for i in (1, 2, 3)]
    assert all(style["show"] for style in single)
    assert len({style["size"] for style in single}) == 3  # concentric, not stacked alike
    assert single[0]["fill"] == "#fff"  # the avoided one hollow


def test_the_y_range_comes_from_the_data_and_holds_zero(chart) -> None:  # type: ignore[no-untyped-def]
    low, high = chart("yRange", [[0.2, 0.4], [0.01, 0.02]])
    assert low == 0 and 0.4 < high < 0.5  # not an invented $0–$100
    low, high = chart("yRange", [[-3, 1]])
    assert low < -3 and high > 1
