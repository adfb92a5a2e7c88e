# backup-exporter: `make run` (demo) and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= :9977
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run test lint unit bench bench-tools deps tools dashboards dashboard-images clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

deps: $(STAMP)

## run: install into .venv and start the exporter in --demo mode on $(LISTEN)
run: $(STAMP)
	$(BIN)/backup-exporter --demo --web.listen-address=$(LISTEN) --storage.path=data/demo

## tools: Debian packages the tests run for real: prometheus + promtool, amtool,
## and Chromium with its WebDriver for the status page's browser test
DEBIAN_TOOLS := prometheus:prometheus promtool:prometheus amtool:prometheus-alertmanager systemd-analyze:systemd \
	chromium:chromium chromedriver:chromium-driver
## bench-tools: the load generator `make bench` drives the scrape benchmark with
BENCH_TOOLS := wrk:wrk

# $(call apt_install,command:package ...): apt-get what is missing, as root only.
define apt_install
	@missing=""; for pair in $(1); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing (run as root, or apt-get install them)" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

tools:
	$(call apt_install,$(DEBIAN_TOOLS))

bench-tools:
	$(call apt_install,$(BENCH_TOOLS))

lint: $(STAMP)
	$(BIN)/ruff check exporter tests benchmarks tools
	$(BIN)/ruff format --check exporter tests benchmarks tools
	$(BIN)/mypy

unit: $(STAMP) tools
	$(BIN)/pytest $(PYTEST_ARGS)

## test: everything CI runs: lint, then the whole suite (installs what it needs)
test: lint unit

## dashboards: regenerate grafana/dashboards/*.json from tools/build_dashboards.py
dashboards: $(STAMP)
	$(BIN)/python -m tools.build_dashboards

## dashboard-images: redraw docs/img/dashboard-*.png from a Prometheus scraping the demo
dashboard-images: $(STAMP) tools
	$(BIN)/python -m tools.render_dashboards --demo 60m \
	  --var backup-job-detail:vendor=commvault \
	  --var backup-job-detail:job=WINTER/defaultBackupSet/default \
	  --var backup-job-detail:job=FILESRV-LAB/lab/home \
	  --var backup-job-detail:job=SQLPROD01/defaultBackupSet/TransactionLogs

## bench: every benchmark, each printed as a ratio to a baseline measured in the same run
bench: $(STAMP)
	@$(MAKE) --no-print-directory bench-tools || echo "no wrk: the scrape benchmark falls back to an aiohttp load generator" >&2
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data
