# One command each: `make run` (install what is missing, start the app) and `make test` (install, run tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: install system-deps run test floor-test lint pretrained bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the end-to-end browser tests (never a browser download by a test tool).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium fonts-dejavu-core; \
	  else echo "chromium missing and no root: browser tests will be skipped"; fi; \
	fi

run: install
	$(PY) -m streamlit run app/main.py --server.headless true

test: install system-deps
	$(PY) -m pytest -q --durations=15

# The app's tests against the lowest Streamlit that requirements.txt allows (by hand, before moving the floor).
STREAMLIT_FLOOR := $(shell sed -n 's/^streamlit>=\([0-9.]*\).*/\1/p' requirements.txt)
floor-test:
	test -x .venv-floor/bin/python || $(PYTHON) -m venv .venv-floor
	.venv-floor/bin/python -m pip install -q -r requirements-dev.txt "streamlit==$(STREAMLIT_FLOOR)"
	.venv-floor/bin/python -m pip install -q --no-deps -e .
	.venv-floor/bin/python -m pytest -q tests/app tests/system/test_browser.py

lint: install
	$(VENV)/bin/ruff check gccs_core app tests bench scripts

pretrained: install
	$(PY) -m scripts.make_pretrained

bench: install
	$(PY) bench/bench_training.py

clean:
	rm -rf $(VENV) .venv-floor .pytest_cache .numba_cache
