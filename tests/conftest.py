"""Shared pytest configuration for the jaxrnn test suite."""

import os
import subprocess
import sys

# Before anything imports keras (the interop tests do).
os.environ.setdefault("KERAS_BACKEND", "jax")
# The suite compiles far more than it runs. Its programs are compiled with
# XLA's CPU backend set for compile time: LLVM at optimisation level 0 and
# fusions by the older emitters (XLA's graph passes all run; every number is
# checked by the same tolerances); half the CPU time. The flags are tried
# in a subprocess first (an XLA that does not know a flag aborts), set
# before jax loads, and inherited by the xdist workers and the examples run
# in subprocesses.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def _fast_compile_flags() -> str:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" in flags:  # decided already (or by the user)
    return flags
  candidate = f"{flags} {_FAST_COMPILE}".strip()
  probe = subprocess.run(
      [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
      env={**os.environ, "XLA_FLAGS": candidate, "JAX_PLATFORMS": "cpu"},
      capture_output=True, check=False)
  return candidate if probe.returncode == 0 else f"{flags} --xla_backend_optimization_level=2".strip()


os.environ["XLA_FLAGS"] = _fast_compile_flags()

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
