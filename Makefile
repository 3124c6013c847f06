# Two entry points for a fresh machine: `make study` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# A research workflow should not phone home (and these machines have no internet).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: study test clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

study: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: $(BIN)/.installed
	PYTHON=$(abspath $(BIN))/python scripts/servers.sh install || echo "PostgreSQL unavailable: tests marked 'servers' will be skipped (docs/scale-out.md)"
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
