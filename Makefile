# dxlab: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data

.PHONY: setup demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# reinstall when the dependency list changes
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m dxlab demo --out $(DEMO_DIR)

test: setup
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
