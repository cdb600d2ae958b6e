# Developer entry points. `make test` is the one test command; CI runs it through .ci/run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test dev bench system-deps
# Prerequisites run left to right: system packages (python3-venv) before the venv needs them.
.NOTPARALLEL:

# One stamp per set of extras; make reinstalls only when pyproject.toml is newer than the stamp
# (or the venv is new). Delete .venv to start over.
$(VENV)/.stamp-%: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$*]'
	@touch $@

venv: $(VENV)/.stamp-test

# Installs missing apt packages as root; otherwise only names them (see the script).
system-deps:
	@scripts/install-system-deps.sh

# PYTEST_ARGS for extra options, e.g. make test PYTEST_ARGS='-k embedded -x'
test: system-deps venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

dev: system-deps $(VENV)/.stamp-embedded
	$(VENV)/bin/agentruns dev

bench: venv
	$(PY) -m bench.run_all
