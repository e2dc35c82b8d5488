"""Dark mode holds together: colours are only in opsdash.css's custom properties, every one of
them has a dark value, the two copies of the dark palette agree, every variable a stylesheet or
a chart script asks for exists, and the theme script runs before the first paint."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

STATIC = Path(settings.BASE_DIR) / "static"
CSS = STATIC / "css"
MAIN = CSS / "opsdash.css"
# The 500 page's stylesheet stands alone (it must show when opsdash.css is the problem).
STANDALONE = {"error.css"}

COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b|\b(?:rgb|rgba|hsl|hsla)\(")
DECLARATION = re.compile(r"(--[\w-]+)\s*:\s*([^;}]+)")
COMMENT = re.compile(r"/\*.*?\*/", re.S)


def _css(path: Path) -> str:
    return COMMENT.sub("", path.read_text(encoding="utf-8"))


def _block(css: str, opening: str) -> str:
    """The declarations between ``opening``'s brace and its matching closing brace."""
    start = css.index(opening) + len(opening)
    start = css.index("{", start - 1) + 1
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(css[i], 0)
        i += 1
    return css[start : i - 1]


def _variables(block: str) -> dict[str, str]:
    return {name: " ".join(value.split()) for name, value in DECLARATION.findall(block)}


def _palettes() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    css = _css(MAIN)
    light = _variables(_block(css, ":root {"))
    system = _variables(_block(_block(css, "@media (prefers-color-scheme: dark)"), ":root:not("))
    chosen = _variables(_block(css, ':root[data-theme="dark"]'))
    return light, system, chosen


def test_the_dark_palette_is_the_same_whether_the_system_or_the_toggle_asks_for_it() -> None:
    _, system, chosen = _palettes()
    assert len(system) > 40, "the dark palette was read"
    assert system == chosen


def test_every_colour_of_the_light_palette_has_a_dark_value_that_differs() -> None:
    light, dark, _ = _palettes()
    colours = {name for name, value in light.items() if COLOUR.search(value)}
    assert "--bg" in colours and "--chart-1" in colours
    assert colours - dark.keys() == set(), "colours without a dark value"
    # The bar is dark in both; everything a page is drawn with changes.
    for name in ("--bg", "--surface", "--text", "--muted", "--border", "--accent", "--input-bg"):
        assert light[name] != dark[name], name


def test_chart_colours_are_six_digit_hex_the_scripts_can_add_alpha_to() -> None:
    light, dark, _ = _palettes()
    for palette in (light, dark):
        for name, value in palette.items():
            if name.startswith(("--chart-", "--sav-")):
                assert re.fullmatch(r"#[0-9a-f]{6}", value), (name, value)


def test_no_app_stylesheet_hard_codes_a_colour_outside_a_custom_property() -> None:
    offenders = []
    sheets = sorted(p for p in CSS.glob("*.css") if p.name not in STANDALONE)
    assert len(sheets) >= 8
    for sheet in sheets:
        # Custom property declarations are where colours belong (opsdash.css's palettes).
        text = DECLARATION.sub("", _css(sheet))
        for number, line in enumerate(text.splitlines(), 1):
            if COLOUR.search(line):
                offenders.append(f"{sheet.name}:{number}: {line.strip()}")
    assert offenders == [], "use var(--…) from opsdash.css:\n" + "\n".join(offenders)


def test_every_variable_the_stylesheets_and_charts_ask_for_is_defined() -> None:
    light, _, _ = _palettes()
    defined = set(light) | {n for p in CSS.glob("*.css") for n, _ in DECLARATION.findall(_css(p))}
    used: dict[str, str] = {}
    for sheet in CSS.glob("*.css"):
        for name in re.findall(r"var\((--[\w-]+)", _css(sheet)):
            used.setdefault(name, sheet.name)
    for script in (STATIC / "js").rglob("*.js"):
        text = script.read_text(encoding="utf-8")
        for name in re.findall(r"""["'](--[\w-]+)["']""", text):
            if not name.endswith("-"):  # a prefix ("--chart-" + n), checked below
                used.setdefault(name, script.name)
    assert "--chart-axis" in used and "--sav-avoided" in used, "the chart scripts were read"
    # charts.js builds "--chart-" + n: each of them must exist.
    assert {f"--chart-{n}" for n in range(1, 9)} <= defined
    missing = {name: where for name, where in used.items() if name not in defined}
    assert missing == {}


def test_the_500_page_keeps_its_own_dark_palette() -> None:
    css = _css(CSS / "error.css")
    assert "prefers-color-scheme:dark" in css.replace(" ", "")
    assert "var(--bg)" in css


def test_the_theme_script_runs_in_the_head_before_the_stylesheet_without_defer() -> None:
    base = (Path(settings.BASE_DIR) / "templates" / "base.html").read_text(encoding="utf-8")
    head = base[: base.index("</head>")]
    tag = re.search(r"<script[^>]*js/theme\.js[^>]*>", head)
    assert tag is not None, "theme.js is loaded in <head>"
    assert not re.search(r"\b(defer|async|type=\"module\")", tag.group(0))
    assert head.index("js/theme.js") < head.index("css/opsdash.css")
    script = (STATIC / "js" / "theme.js").read_text(encoding="utf-8")
    assert "import " not in script and "export " not in script, "a classic script, not a module"
