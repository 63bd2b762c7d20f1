"""Shared pytest configuration for the jaxrnn test suite."""

import os

# Before anything imports keras (the interop tests do).
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion ((T, N) + (N,)) is an error in the whole suite.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
  """Runs a test with ``jax_enable_x64`` on, then turns it off again."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)
