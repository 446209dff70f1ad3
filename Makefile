# The two set-up commands of the README. Both are idempotent: a second run only re-installs
# when pyproject.toml changed, and reuses Debian's chromium once it is there.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This machine's pip configuration lists local mirrors that warn for every package; hide those lines.
PIP := $(BIN)/python -m pip install --quiet
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint benchmarks clean

demo: $(VENV)/.installed
	$(BIN)/labkit demo

test: $(VENV)/.installed-test /usr/bin/chromium /usr/sbin/slurmctld
	$(BIN)/python -m pytest

# The lab extension's TypeScript too: ESLint and Prettier, pinned in extension/yarn.lock
# (`jlpm install` does nothing when extension/node_modules is current).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	cd extension && PATH="$(abspath $(BIN)):$$PATH" jlpm install --immutable >/dev/null
	cd extension && PATH="$(abspath $(BIN)):$$PATH" jlpm lint:check

benchmarks: $(VENV)/.installed
	$(BIN)/python benchmarks/connect.py --quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET_PIP)

# `pip install` builds the lab extension in extension/ (hatch-jupyter-builder), so its sources
# count as inputs too.
EXTENSION := $(wildcard extension/package.json extension/yarn.lock extension/src/* extension/style/* extension/schema/*)

$(VENV)/.installed: pyproject.toml $(EXTENSION) | $(BIN)/python
	$(PIP) -e . $(QUIET_PIP)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(EXTENSION) | $(BIN)/python
	$(PIP) -e '.[test]' $(QUIET_PIP)
	touch $@ $(VENV)/.installed

/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

# A real SLURM for the tests (tests/slurmbed.py runs its daemons from a config of its own).
/usr/sbin/slurmctld: | /usr/bin/chromium
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq slurm-wlm munge >/dev/null

clean:
	rm -rf $(VENV) labkit-demo
