# make demo: build a demo corpus, shard it, train on it and serve the progress page.
# make test: the whole test suite.  Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMAGENET ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: venv test test-fast demo clean

venv: $(STAMP)

# torch first: the CUDA build only where a GPU is; elsewhere the CPU build (a local
# wheel if pip's find-links has one, else PyTorch's CPU index), never a multi-GB CUDA one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	$(BIN)/pip install -q "torch==2.13.0"
else
	$(BIN)/pip install -q "torch==2.13.0+cpu" || \
	  $(BIN)/pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
endif
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser"

demo: $(STAMP)
	$(BIN)/python -m trainer.demo $(if $(IMAGENET),--imagenet $(IMAGENET))

clean:
	rm -rf $(VENV) demo/ .pytest_cache
