# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARCH   := $(shell uname -m)

# torch/torchvision pairs known to work together on each architecture (see README).
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[test,onnx]'
	@touch $(STAMP)

# The quickstart: DDS-NAS with regularized evolution and ASHA on the built-in digits, tracked in MLflow.
DEMO_OUT ?= runs/quickstart
demo: $(STAMP)
	@if [ -e $(DEMO_OUT)/summary.json ]; then \
	  echo "$(DEMO_OUT) already holds a finished quickstart: compare its runs with"; \
	  echo "  $(BIN)/frugalnas ui --out $(DEMO_OUT)"; \
	  echo "or run it again elsewhere: make demo DEMO_OUT=runs/quickstart-2"; exit 2; fi
	$(BIN)/frugalnas run jobs/quickstart.yaml --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache
