# The two commands a new user runs (see README): `make demo` and `make test`.
# Each installs what it needs: a venv in .venv and, for the browser tests, Debian's chromium.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit bench stress clean chromium

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Debian's chromium: Playwright cannot download its own browser on these machines.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/python -m example_app.demo

test: $(STAMP) chromium lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tracklayer_mw
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m 'not e2e'

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m bench

# Long reliability runs (RELIABILITY.md): kill -9 cycles, Pinterest faults, sustained load.
stress: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m stress.crash
	$(BIN)/python -m stress.faults
	$(BIN)/python -m stress.load

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
