# OpsDash: `make run` serves the dashboard with a real model; `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(OPSDASH_PORT),8000)
HOST ?= $(or $(OPSDASH_HOST),127.0.0.1)
DATA_DIR ?= $(or $(OPSDASH_DATA_DIR),var)
UV_VERSION := 0.13.9
UV := .cache/uv-$(UV_VERSION)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
STAMP := $(VENV)/.installed-$(shell cat uv.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install lock run test lint bench browser services clean

install: $(STAMP)

# uv itself is pinned and kept in .cache/, so installs need nothing but Python and PyPI.
$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found). Set PYTHON=/path/to/python3.11."; exit 1; }
	$(PYTHON) -m venv .cache/uv-$(UV_VERSION)
	.cache/uv-$(UV_VERSION)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Everything, dev and bench extras included, comes from uv.lock; --locked refuses a lock that no
# longer matches pyproject.toml instead of quietly re-resolving. llama-cpp-python compiles once
# (uv caches the wheel).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON) --extra dev --extra bench --extra demo
	rm -f $(VENV)/.installed-*
	touch $@

# Refresh the lock after changing pyproject.toml's ranges (or to take newer releases).
lock: | $(UV)
	$(UV) lock --python $(PYTHON) --upgrade

# Debian's chromium drives the browser tests (Playwright never downloads a browser here).
browser:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests…"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The browser tests need Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium' and try again."; \
		exit 1; \
	fi

# Debian's PostgreSQL and Redis for the fleet tests: tests/fixtures/engines.py starts throwaway
# instances of them (loopback, temp folders) and stops them at the end; no service is enabled.
PG_INITDB := $(firstword $(shell command -v initdb) $(wildcard /usr/lib/postgresql/*/bin/initdb))
services:
	@if [ -n "$(PG_INITDB)" ] && command -v redis-server >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's postgresql and redis-server for the fleet tests…"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends postgresql redis-server >/dev/null; \
	else \
		echo "The fleet tests need PostgreSQL and Redis: run 'sudo apt-get install postgresql redis-server' and try again."; \
		exit 1; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy opsdash inference

# Browser tests run in a session of their own: Playwright's sync API and pytest-asyncio each
# want the main thread's event loop, and one session cannot give it to both. Fleet tests run in
# a third: they start PostgreSQL, Redis, hub and agent processes, none of which the others need.
test: install browser services lint
	$(BIN)/python -m pytest -m "not e2e and not fleet"
	$(BIN)/python -m pytest -m e2e
	$(BIN)/python -m pytest -m fleet

# uvicorn hands request bodies to OpsDash as they arrive: the body guard refuses one too large
# for its endpoint, or without credentials, before anything stores it, and uploads stream straight
# into the models folder (no spool in /tmp).
run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py bootstrap --demo
	$(BIN)/python manage.py install_demo_model
	$(BIN)/python manage.py collectstatic --no-input -v 0
	@echo "OpsDash: http://$(HOST):$(PORT)/"
	$(BIN)/uvicorn opsdash.asgi:application --host $(HOST) --port $(PORT) --lifespan on --timeout-graceful-shutdown 4

bench: install services
	$(BIN)/python bench/install.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/telemetry.py
	$(BIN)/python bench/savings.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/fleet.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
