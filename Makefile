# envportal: `make demo` to try it, `make test` to check it. Both create .venv when missing.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench faults lock clean venv

venv: $(STAMP)

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(PY) || { \
	  PYTHON="$${PYTHON:-$$(scripts/find-python)}" || exit 1; \
	  echo "creating $(VENV) with $$PYTHON"; \
	  "$$PYTHON" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-virtualenv -r requirements-dev.lock
	@touch $(STAMP)

## demo: migrate, create a demo login, run web + worker + beat on http://127.0.0.1:8000
demo: $(STAMP)
	$(PY) scripts/demo.py

## test: ruff, mypy and the whole pytest suite (PostgreSQL and Redis when they answer)
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	DEBUG=true $(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: the scale benchmarks (10, 100, 1000 PRs; BENCH_SIZES=10,100 for fewer), not part of test
bench: $(STAMP)
	$(PY) scripts/bench.py

## faults: the fault-injection suite on the sandbox (Kubernetes and GitHub failing, two beat ticks)
faults: $(STAMP)
	$(BIN)/pytest -m faults tests/faults $(PYTEST_ARGS)

## lock: re-resolve pyproject.toml into exact pins: requirements.lock (runtime, the image)
## and requirements-dev.lock (runtime + dev tools, the venv and CI)
lock:
	rm -rf .lock-venv
	PYTHON="$${PYTHON:-$$(scripts/find-python)}" && "$$PYTHON" -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet .
	{ echo "# Exact runtime versions (the image). Regenerate with: make lock"; \
	  .lock-venv/bin/pip freeze --exclude envportal; } > requirements.lock
	.lock-venv/bin/pip install --quiet -c requirements.lock '.[dev]'
	{ echo "# Exact versions CI tested (runtime + dev). Regenerate with: make lock"; \
	  .lock-venv/bin/pip freeze --exclude envportal; } > requirements-dev.lock
	rm -rf .lock-venv build

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache staticfiles
