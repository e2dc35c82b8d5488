"""The pages' ES modules hold together as served: every import names a file that collectstatic
collects, under the name the importing module asks for."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command

STATIC = Path(settings.BASE_DIR) / "static"
# `import … from "./x.js"` and `import "./x.js"`: the only import forms static/js uses.
IMPORT = re.compile(r"""^\s*import\s+(?:[^"';]+?\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)


def _imports(module: Path) -> list[str]:
    return IMPORT.findall(module.read_text(encoding="utf-8"))


def test_every_module_import_is_relative_and_names_a_file_in_static_js():
    modules = sorted((STATIC / "js").rglob("*.js"))
    seen = 0
    for module in modules:
        for name in _imports(module):
            seen += 1
            # No bare names ("uplot"): a browser resolves only URLs, and no import map exists.
            assert name.startswith(("./", "../")), f"{module}: {name}"
            target = (module.parent / name).resolve()
            assert target.is_file(), f"{module.relative_to(STATIC)} imports {name}: no such file"
            assert (STATIC / "js") in target.parents, f"{module}: {name} leaves static/js"
    assert seen >= 10, "the telemetry and playground pages are split into modules"


def test_each_collected_module_imports_the_urls_the_storage_serves(tmp_path, settings):
    # A hashing storage would serve main.abc123.js still importing ./socket.js (stale after a
    # deploy) unless it rewrites the imports (support_js_module_import_aggregation): whatever
    # STORAGES says, an import must reach the URL the storage gives for the file it names.
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    reached: set[str] = set()
    pending = ["js/telemetry/main.js", "js/playground/main.js"]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        url = staticfiles_storage.url(name)
        served = tmp_path / url.removeprefix(settings.STATIC_URL).split("?")[0]
        assert served.is_file(), f"{url} is not collected"
        asked = _imports(STATIC / name)
        assert len(_imports(served)) == len(asked), f"{url} lost an import"
        for wanted, imported in zip(asked, _imports(served), strict=True):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), wanted))
            assert urljoin(url, imported) == staticfiles_storage.url(target), f"{url}: {imported}"
            pending.append(target)
    assert "js/lib/socket.js" in reached
