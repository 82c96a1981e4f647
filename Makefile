# `make up` and `make test` are the two entry points; both run the idempotent `make install` first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# SDK v3 (`sagemaker` 3.x) cannot share a venv with SDK v2; its end-to-end test runs it from here.
SDK3_VENV := .venv-sdk3
SDK3_STAMP := $(SDK3_VENV)/.installed

.PHONY: install install-test install-sdk3 up test test-fast lint bench clean

install: $(STAMP)

install-sdk3: $(SDK3_STAMP)

$(SDK3_STAMP):
	@test -x $(SDK3_VENV)/bin/python || $(PYTHON) -m venv $(SDK3_VENV)
	$(SDK3_VENV)/bin/python -m pip install -q --upgrade pip
	$(SDK3_VENV)/bin/python -m pip install -q 'sagemaker==3.27.0'
	@touch $(SDK3_STAMP)

# The platform itself: the core dependencies only (torch and the test tools are extras).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# The control plane uses the CPU-only `xgboost-cpu` wheel (same `xgboost` module, no 469 MB nvidia-nccl);
	@# both own xgboost/, so a venv that has the old `xgboost` drops both and gets xgboost-cpu afresh.
	@if $(BIN)/python -m pip show -q xgboost >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall -q -y xgboost xgboost-cpu; fi
	$(BIN)/python -m pip install -q -e .
	@# Jobs and model servers import opensage as uids that cannot write __pycache__: compile it once here.
	$(BIN)/python -m compileall -q opensage
	@touch $(STAMP)

# What the tests need on top: pytest & co., SDK v2, and torch for the PyTorch estimator tests.
install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,torch]'
	@touch $(TEST_STAMP)

up: install
	$(BIN)/opensage up $(ARGS)

# The whole suite, parallel on the CI box's 2 cores. Slow end-to-end tests included.
test: install-test install-sdk3
	$(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

# Everything but the slow end-to-end tests.
test-fast: install-test
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check opensage tests benchmarks

bench: install-test
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(SDK3_VENV) .pytest_cache build *.egg-info
