# backprop-jobs: `make run` starts the service, `make test` runs the whole suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test test-compose test-multihost bench bench-service lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "backprop-jobs needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $@

run: $(VENV)/.installed-run
	$(BIN)/backprop dev --port $(PORT)

# two test processes (pytest-xdist): the suite mostly waits on its services, not the cores
TEST_PROCESSES ?= 2

test: $(VENV)/.installed-dev
	@bash .ci/install-chromium
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --durations=15

# docker-compose.yml for real, on podman with stand-in base images (root; docs/deploy.md)
test-compose: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python bash .ci/compose/stage.sh

# workers on two "hosts" (network namespaces) cut off without a word (root; docs/failures.md)
test-multihost: $(VENV)/.installed-dev
	@bash .ci/install-multihost
	$(BIN)/python -m pytest -m netns tests/deploy/test_multihost.py

bench: $(VENV)/.installed-dev
	@# OPENBLAS_CORETYPE/L2_SIZE are pinned on some CI machines and slow current OpenBLAS
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/core_bench.py $(BENCH_ARGS)

bench-service: $(VENV)/.installed-dev
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/service_bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/checkpoint_bench.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/dataset_bench.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/sweep_bench.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
