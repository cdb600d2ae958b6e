# Developer entry points. `make test` is the one test command; CI runs it through .ci/run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Parallel test processes (pytest-xdist), each with its own PostgreSQL, Redis, sshd and service
# processes; whole files go to one process (module fixtures start once). 3 was fastest on 2 cores.
TEST_PROCESSES ?= 3

.PHONY: venv test unit lint dev bench lock system-deps
# Prerequisites run left to right: system packages (python3-venv) before the venv needs them.
.NOTPARALLEL:

# One stamp per set of extras; make reinstalls only when pyproject.toml or the lock file is newer than
# the stamp (or the venv is new). Delete .venv to start over. requirements.lock pins every package.
$(VENV)/.stamp-%: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[$*]'
	@touch $@

venv: $(VENV)/.stamp-test

# Installs missing apt packages as root; otherwise only names them (see the script).
system-deps:
	@scripts/install-system-deps.sh

# Ruff (lint and import order) and mypy over the whole tree.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The fast tier: tests that need no server (providers, parsers, schemas, SSE, SDK core); seconds.
unit: venv
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

# Lint, then everything. PYTEST_ARGS for extra options, e.g. make test PYTEST_ARGS='-k embedded -x'
test: system-deps venv lint
	$(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

dev: system-deps $(VENV)/.stamp-embedded
	$(VENV)/bin/agentruns dev

bench: venv
	$(PY) -m bench.run_all

# Re-pin every package after changing pyproject.toml's ranges: resolves in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --disable-pip-version-check '.[test]'
	.lock-venv/bin/pip freeze --exclude agentruns > requirements.lock
	rm -rf .lock-venv
