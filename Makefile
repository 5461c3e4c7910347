# fnodiag: everything runs from a project-local virtual environment (.venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs

.PHONY: install run train test test-fast lint docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pin the CPU build of torch first: an unpinned torch pulls several GB of CUDA wheels.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,ray,docs]"
	touch $(STAMP)

# The dashboard's browser tests drive the system Chromium (Playwright's own download is not used).
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@if command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	else echo "install Chromium at $(CHROMIUM) (or set CHROMIUM=...) for the browser tests"; fi

install: $(STAMP)

# The dashboard on ./runs (empty: it offers a one-click quick demo run). Ctrl-C stops the server.
run: $(STAMP)
	@echo "fnodiag dashboard on $(RUNS): open http://localhost:5006/app"
	$(BIN)/panel serve app --address 127.0.0.1 --port 5006 --args --runs $(RUNS)

# One quick training run (about two minutes on a 2-core CPU) into ./runs.
train: $(STAMP)
	$(BIN)/fnodiag train --preset quick --out $(RUNS)

# Everything (CI): tests, notebooks under nbval, browser tests in Chromium, Ray, slow tests.
test: $(STAMP) $(CHROMIUM)
	FNODIAG_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q

# The fast lane while working: no browser, notebook, Ray or slow tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not ray and not browser"

# ruff (lint and format check, configured in pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (Sphinx, MyST, numpydoc) into docs/_build/html: warnings are errors, and the
# build is offline (no intersphinx, no remote images; the notebooks render from their committed outputs).
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache docs/_build docs/reference/generated
