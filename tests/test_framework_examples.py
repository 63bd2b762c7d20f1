"""The Flax linen, Flax NNX and Equinox examples train: a few steps lower the loss."""

import pathlib
import runpy

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


# The fewest steps (of the examples' real main) whose loss falls by the
# asserted 30% with a margin: compilation, not the steps, dominates.
@pytest.mark.parametrize("name, steps", [
    ("flax_linen.py", 20),
    ("flax_nnx.py", 40),
    ("equinox_model.py", 40),
])
@pytest.mark.slow
def test_example_trains(name, steps, capsys):
  result = runpy.run_path(str(EXAMPLES / name))["main"](["--steps", str(steps), "--hidden", "16"])
  losses = result["losses"]
  assert losses.shape == (steps,) and np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  out = capsys.readouterr().out
  assert f"step {steps}/{steps}  loss" in out
  if name == "flax_linen.py":  # padded to multiples of 64 (max 128): at most 2 compilations
    assert set(result["compiled"]) <= {64, 128} and 1 <= len(result["compiled"]) <= 2
    assert "the step compiled" in out and 0.0 <= result["f1"] <= 1.0
  else:
    assert "held-out accuracy" in out and result["accuracy"] > 0.2  # chance: 0.1
