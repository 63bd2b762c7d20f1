"""Shared pytest configuration for the jaxrnn test suite."""

import os

# Before anything imports keras (the interop tests do).
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion ((T, N) + (N,)) is an error in the whole suite.
jax.config.update("jax_numpy_rank_promotion", "raise")

# KNOWN BUG (jaxrnn/_src/cells.py, not owned by the test suite): the cells'
# input projection adds the bias vectors to the (T, G*H) projection by
# implicit rank promotion (`_add(xs @ W_x, b_x)`, and `zx + b_h.at[...]` in
# gru), so every rnn / bidirectional / stack over a cell with biases raises
# under "raise". Until cells.py is fixed, each test runs with "allow" so the
# rest of the suite still checks numbers; `test_layers.py::
# test_no_implicit_rank_promotion` runs under "raise" and shows the bug
# (xfail strict). When that test XPASSes, delete its xfail marker and set
# this flag to False.
KNOWN_CELLS_RANK_PROMOTION_BUG = True


@pytest.fixture(autouse=True)
def _rank_promotion_workaround():
  if KNOWN_CELLS_RANK_PROMOTION_BUG:
    with jax.numpy_rank_promotion("allow"):
      yield
  else:
    yield


@pytest.fixture
def x64():
  """Runs a test with ``jax_enable_x64`` on, then turns it off again."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)
