"""Shared pytest configuration for the jaxrnn test suite."""

import os

# Before anything imports keras (the interop tests do).
os.environ.setdefault("KERAS_BACKEND", "jax")
# The suite compiles far more than it runs: XLA's passes all run, but its
# CPU backend hands LLVM the code unoptimised (a third less CPU time; the
# numbers each program computes are checked by the same tolerances). Set
# before jax loads; the examples run in subprocesses inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion ((T, N) + (N,)) is an error in the whole suite.
jax.config.update("jax_numpy_rank_promotion", "raise")


def _with_x64():
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)


# ``jax_enable_x64`` on for one test (``x64``) or for every test of a module
# that asks for ``x64_module`` (``pytestmark = pytest.mark.usefixtures(...)``).
x64 = pytest.fixture(_with_x64, name="x64")
x64_module = pytest.fixture(_with_x64, scope="module", name="x64_module")
