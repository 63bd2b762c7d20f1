"""The examples run and do what they claim."""

import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_train_running_mean_learns():
  module = runpy.run_path(str(EXAMPLES / "train_running_mean.py"))
  first, last = module["main"](120)
  assert last < 0.5 * first


def test_from_torch_example_runs(capsys):
  path = EXAMPLES / "from_torch.py"
  if not path.exists():
    pytest.fail("examples/from_torch.py is missing")
  runpy.run_path(str(path), run_name="__main__")
  assert capsys.readouterr().out.strip()
