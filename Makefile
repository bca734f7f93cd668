# One command per job, used by humans and CI alike.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,telemetry]'
	touch $(STAMP)

## run: start apiaryd on the embedded default and apply the quick-start example
run: $(STAMP)
	@bash scripts/drone-access $(PY)
	bash scripts/run

## test: the whole test suite
test: $(STAMP)
	@bash scripts/drone-access $(PY)
	$(PY) -m pytest -q $(PYTEST_ARGS)

## check: lint, types, layering
check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: every benchmark, JSON under bench/results/
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	bash scripts/bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
