# `make test` needs nothing but Python 3.10+: it builds .venv, installs the
# project with its dev extra, and runs the whole suite with doctests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Tests run on the CPU even where an accelerator is present.
export JAX_PLATFORMS ?= cpu
export KERAS_BACKEND ?= jax

.PHONY: test bench bench-quick install install-bench demo clean

$(VENV)/.installed-dev: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU build of PyTorch first, pinned, so nothing pulls a CUDA build.
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) install -e ".[dev,bench]"
	touch $@

# The demo needs no PyTorch: jax, optax, tqdm and matplotlib only.
$(VENV)/.installed-demo: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e ".[demo,plot]"
	touch $@

install: $(VENV)/.installed-dev

install-bench: $(VENV)/.installed-bench

test: $(VENV)/.installed-dev
	$(PY) -m pytest -n 2 -q

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run

bench-quick: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run --quick

# Restores capitalisation with a bidirectional LSTM; DEMO_ARGS="--steps 600" etc.
demo: $(VENV)/.installed-demo
	$(PY) examples/capitalise.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
