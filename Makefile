# vexpress: every target sets itself up; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXP ?= smoke
EXTRA_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser demo lint test test-fast test-slow test-gpu test-all bench clean clean-logs

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (about 2-3 minutes on a fresh machine)"
	@$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[dev,app]" 2>&1 \
		| { grep -v "^WARNING: Location 'file://" || true; }; test $${PIPESTATUS[0]} -eq 0
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install vexpress (editable) with pinned dependencies

browser: ## chromium + chromedriver for the app's browser test (Debian packages, as root, only when missing)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium + chromium-driver (apt-get) for the browser-app test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; } >/dev/null 2>&1 || echo "could not install chromium: the browser test will skip"; \
	else echo "no chromium/chromedriver (and not root): the browser-app test will skip"; fi

demo: install ## the main job on the embedded default (synthetic data, tiny model, 3 stages + ablations, report)
	$(VENV)/bin/vexpress-demo $(EXTRA_ARGS)

lint: install ## flake8 and isort --check over src/ tests/ benchmarks/ (settings: setup.cfg [flake8], [isort])
	$(VENV)/bin/flake8 src tests benchmarks
	$(VENV)/bin/isort --check-only --diff src tests benchmarks

test: install browser lint ## the linters, then every test that runs on a CPU, slow ones included
	$(PY) -m pytest -m "not gpu and not weights" $(PYTEST_ARGS)

test-fast: install ## the quick suite (no slow tests)
	$(PY) -m pytest -m "not slow and not gpu and not weights" $(PYTEST_ARGS)

test-slow: install browser ## only the slow CPU tests
	$(PY) -m pytest -m "slow and not gpu and not weights" $(PYTEST_ARGS)

test-gpu: install ## tests that need CUDA
	$(PY) -m pytest -m "gpu and not weights" $(PYTEST_ARGS)

test-all: install ## everything that can run here (gpu/weights tests skip themselves when unavailable)
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

train: install ## vexpress-train experiment=$(EXP)
	$(VENV)/bin/vexpress-train experiment=$(EXP) $(EXTRA_ARGS)

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .hypothesis build src/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

clean-logs: ## remove run outputs
	rm -rf logs outputs multirun
