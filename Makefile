# Two commands for a new machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.stamp-serve
TEST_STAMP := $(VENV)/.stamp-test
PYTEST_ARGS ?=
# llama-cpp-python is built from source, with explicit portable CPU flags instead of
# -march=native: a native build here once died with "Illegal instruction" in Q8_0 batched
# matmuls (the CPU reported AMX) and CI's VM need not be the building one. AVX2/FMA/F16C/BMI2
# (x86-64-v3) runs on any x86-64 VM of this kind; AVX512 and AMX are off (this VM has AVX512,
# CI's is not guaranteed to). pip caches the wheel it built; a wheel built by hand with other
# flags would be reused: `pip cache remove llama_cpp_python`. benchmarks/build_llama_server.sh
# reads these flags from here.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF -DGGML_CCACHE=OFF

# bash, so an install recipe can `set -o pipefail`: a progress filter after pip never hides
# pip's failure.
SHELL := /bin/bash

# llama-cpp-python is installed in a step of its own, before the rest, so that its source build
# (the slow part of a first `make serve`) shows progress: pip -v prints the build's progress
# lines (cmake's "[ 42%] Building ...", or ninja's "[57/190] Building ..."), of which the filter
# prints one per 10% and pip's errors; everything goes to LLAMA_LOG. The version is the one the
# llama extra pins in pyproject.toml.
LLAMA_LOG := $(VENV)/llama-build.log
LLAMA_PROGRESS := awk 'function show() { if (p >= next_p) { printf "  llama-cpp-python build: %d%%\n", p; fflush(); next_p = p - p % 10 + 10 } } \
	/^ *\[ *[0-9]+%\]/ { s = $$0; sub(/^ *\[ */, "", s); p = s + 0; show() } \
	/^ *\[[0-9]+\/[0-9]+\]/ { s = $$0; sub(/^ *\[/, "", s); split(s, n, /[\/\]]/); p = int(100 * n[1] / n[2]); show() } \
	/^(ERROR|error)|Successfully (built|installed)/ { print "  " $$0; fflush() }'
define install_llama
	@echo "building llama-cpp-python from source (5-20 min on 2 cores; built once, then cached by pip; full log: $(LLAMA_LOG))..."
	@set -o pipefail; CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip install -v "$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)" 2>&1 \
		| tee $(LLAMA_LOG) | $(LLAMA_PROGRESS) \
		|| { echo "llama-cpp-python failed to install; the end of $(LLAMA_LOG):"; tail -n 40 $(LLAMA_LOG); exit 1; }
endef

.PHONY: serve serve-cluster test check format bench models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Serving installs the llama extra too: model-repo's shakespeare-gguf runs on llama.cpp (the
# first `make serve` builds it, 5-20 minutes on 2 cores), and a model that fails to load at
# start-up stops `mlserver start`.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mlserver-streaming and its dependencies (a minute or two)..."
	$(BIN)/pip install --quiet -e .
	$(install_llama)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[llama]"
	@echo "installed; $(BIN)/mlserver is ready"
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mlserver-streaming and its dependencies (a minute or two)..."
	$(BIN)/pip install --quiet -e .
	$(install_llama)
	@echo "installing the test and dev tools (torch, transformers, openai, tritonclient, ruff, mypy: a few minutes)..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(SERVE_STAMP)

## serve: install the package and serve every model in model-repo (ports: MLSERVER_*_PORT)
serve: $(SERVE_STAMP)
	$(BIN)/mlserver start model-repo

# The playground's browser tests drive Debian's chromium through its chromedriver. Installed
# with apt when missing and we may (root, apt-get present: CI); otherwise the tests skip and
# say why. No stamp: the check is two file tests, and a skipped install is retried next time.
.PHONY: chromium
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "chromium/chromedriver missing and apt-get not usable (not root?): browser tests will skip"; fi

# Redis mode's tests start their own redis-server (Debian's package, 7.0): installed the
# same way as chromium when missing, else those tests skip and say why.
.PHONY: redis
redis:
	@if command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	else echo "redis-server missing and apt-get not usable (not root?): Redis-mode tests will skip"; fi

## serve-cluster: Redis mode on one machine: redis-server, two workers per text model, MLServer
# Ports: MLSERVER_*_PORT for MLServer, REDIS_PORT (default 6379) for Redis; logs in .cluster/.
# Ctrl-C stops everything. Past one machine: see docs/redis.md.
REDIS_PORT ?= 6379
CLUSTER_WORKERS ?= 2
serve-cluster: $(SERVE_STAMP) redis
	@mkdir -p .cluster; url=redis://127.0.0.1:$(REDIS_PORT)/0; pids=; \
	redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no --dir .cluster > .cluster/redis.log 2>&1 & redis=$$!; \
	trap 'kill $$pids 2>/dev/null; wait $$pids; kill $$redis' EXIT INT TERM; \
	for settings in $$(grep -l TextGenerator model-repo/*/model-settings.json model-repo/*/*/model-settings.json); do \
		folder=$$(dirname $$settings); \
		for i in $$(seq $(CLUSTER_WORKERS)); do \
			name=$$(echo $$folder | tr / -)-$$i; \
			$(BIN)/mlserver-streaming worker $$folder --redis $$url --consumer $$name > .cluster/$$name.log 2>&1 & pids="$$pids $$!"; \
		done; \
	done; \
	echo "redis at $$url; workers:$$pids (logs in .cluster/)"; \
	MLSERVER_STREAMING_REDIS_URL=$$url $(BIN)/mlserver start model-repo

## test: install with test extras and run the whole suite (unit + end-to-end)
test: $(TEST_STAMP) chromium redis
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
	cd benchmarks && ../$(BIN)/python bench_redis.py --quick

## models: rebuild every artifact in model-repo from local data
models: $(TEST_STAMP)
	$(BIN)/pip install --quiet -e ".[train]"
	$(BIN)/python training/train_classifier.py
	$(BIN)/python training/train_gpt2.py
	$(BIN)/python training/convert_gguf.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
