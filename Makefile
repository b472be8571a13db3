# Two commands for a new machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.stamp-serve
TEST_STAMP := $(VENV)/.stamp-test
PYTEST_ARGS ?=

.PHONY: serve test check format bench models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(SERVE_STAMP)

## serve: install the package and serve every model in model-repo (ports: MLSERVER_*_PORT)
serve: $(SERVE_STAMP)
	$(BIN)/mlserver start model-repo

## test: install with test extras and run the whole suite (unit + end-to-end)
test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## check: lint, format check and type check
check: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: run every benchmark (a few minutes); copy the printed tables into benchmarks/README.md
bench: $(TEST_STAMP)
	cd benchmarks && ../$(BIN)/python bench_engine.py --model ../model-repo/shakespeare
	cd benchmarks && ../$(BIN)/python bench_text.py
	cd benchmarks && ../$(BIN)/python load_text.py --transformers --requests 4
	cd benchmarks && ../$(BIN)/python bench_classifier.py

## models: rebuild every artifact in model-repo from local data
models: $(TEST_STAMP)
	$(BIN)/pip install --quiet -e ".[train]"
	$(BIN)/python training/train_classifier.py
	$(BIN)/python training/train_gpt2.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
