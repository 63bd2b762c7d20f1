# `make test` needs nothing but Python 3.11+: it builds .venv, installs the
# project with its dev extra, and runs the whole suite with doctests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Tests run on the CPU even where an accelerator is present.
export JAX_PLATFORMS ?= cpu
export KERAS_BACKEND ?= jax

.PHONY: test test-slow test-all test-floor bench bench-quick install install-bench demo docs typecheck wheel-check clean

# The authors' code of today's recurrences, which the tests compare with,
# pinned and installed without their declared requirements: recurrentgemma
# pins numpy<2.4 and absl-py<2, and the others would pull PyTorch or CUDA
# builds. What they import is in the dev extra (pyproject.toml).
REFERENCES := "recurrentgemma==1.0.1" "mambapy==1.2.0" "xlstm==2.0.6" "mlstm-kernels==2.0.6"

$(VENV)/.installed-dev: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU build of PyTorch first, pinned, so nothing pulls a CUDA build.
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps $(REFERENCES)
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) install -e ".[dev,bench]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed-dev
	$(PIP) install -e ".[dev,docs]"
	touch $@

$(VENV)/.installed-tooling: $(VENV)/.installed-dev
	$(PIP) install -e ".[dev,tooling]"
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
	$(PY) -m pytest -n 2 --dist loadgroup -q

# The slow tier, left out of `make test`: the examples run end to end in
# their quick modes, and the tests that start processes.
test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -n 2 -q -m slow

# Everything CI runs of the suite.
test-all: test test-slow

# The core tests under the oldest jax/jaxlib that pyproject.toml admits
# (the floor of its "jax>=" requirement), in a virtualenv of their own with
# nothing but jax, numpy, optax and the test runner: the tests that compare
# with PyTorch, Keras or Flax run in `make test` only.
JAX_FLOOR := $(shell sed -n 's/^ *"jax>=\([0-9.]*\)",/\1/p' pyproject.toml)
FLOOR_VENV ?= .venv-floor
CORE_TESTS := tests/test_cells.py tests/test_cell_options.py tests/test_layers.py \
	tests/test_lengths.py tests/test_gradients.py tests/test_transformations.py \
	tests/test_segments.py tests/test_regularisers.py \
	tests/test_parallel.py tests/test_errors.py tests/test_losses.py tests/test_dtypes.py

$(FLOOR_VENV)/.installed-floor: pyproject.toml Makefile
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install "jax==$(JAX_FLOOR)" "jaxlib==$(JAX_FLOOR)" -e ".[core-tests]"
	touch $@

test-floor: $(FLOOR_VENV)/.installed-floor
	$(FLOOR_VENV)/bin/python -c "import jax; assert jax.__version__ == '$(JAX_FLOOR)', jax.__version__; print('jax', jax.__version__)"
	$(FLOOR_VENV)/bin/python -m pytest -n 2 --dist loadgroup -q -o addopts="-p no:cacheprovider" -k "not torch" $(CORE_TESTS)

# Results and a chart of the speed-ups go to benchmarks/results/.
bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.wavefront
	$(PY) -m benchmarks.recurrences

bench-quick: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run --quick

# Restores capitalisation with a bidirectional LSTM; DEMO_ARGS="--steps 600" etc.
demo: $(VENV)/.installed-demo
	$(PY) examples/capitalise.py $(DEMO_ARGS)

# The documentation site, into site/. A warning (a broken link or anchor, a
# page missing from the nav, a docstring the API reference cannot read) is an
# error.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Settings in pyproject.toml, [tool.mypy].
typecheck: $(VENV)/.installed-tooling
	$(VENV)/bin/mypy

# Builds the sdist and, from it, the wheel; installs the wheel alone (with
# jax, jaxlib and numpy) into a fresh virtualenv outside the checkout and
# runs the README's example there, checking what it prints.
wheel-check: $(VENV)/.installed-tooling
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m build --outdir "$$tmp/dist" .; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet "$$tmp"/dist/jaxrnn-*.whl; \
	cd "$$tmp"; \
	venv/bin/python -c "import pathlib, jaxrnn; p = pathlib.Path(jaxrnn.__file__).parent; \
	assert 'site-packages' in str(p) and (p / 'py.typed').is_file(), p; \
	print('jaxrnn', jaxrnn.__version__, 'installed in', p)"; \
	venv/bin/python "$(CURDIR)/tests/doc_blocks.py" "$(CURDIR)/README.md"

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build *.egg-info .pytest_cache .hypothesis site
