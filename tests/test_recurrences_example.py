"""examples/recurrences_lm.py: every cell at an equal parameter count."""

import math
import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example():
  return runpy.run_path(str(EXAMPLES / "recurrences_lm.py"))


@pytest.mark.slow
def test_widths_meet_the_parameter_budget(example):
  """Traced only: each cell's width gives the count nearest the budget,
  within one width step of it."""
  for cell in example["CELLS"]:
    width = example["width_for"](cell, 50_000, 2)
    count = example["count_params"](cell, width, 2)
    step = example["HEADS"]
    neighbours = [example["count_params"](cell, w, 2) for w in (width - step, width + step)]
    assert all(abs(count - 50_000) <= abs(n - 50_000) for n in neighbours), (cell, width)


@pytest.mark.slow
def test_quick_run_trains_every_cell(example, capsys):
  rows = example["main"](["--quick"])
  assert [r["cell"] for r in rows] == list(example["CELLS"])
  for r in rows:
    assert math.isfinite(r["bpc"]) and r["bpc"] < math.log2(example["char_lm"].VOCAB_SIZE)
    assert r["step_ms"] > 0 and abs(r["params"] - 20_000) < 0.25 * 20_000, r
  out = capsys.readouterr().out
  assert "| RG-LRU |" in out and "| Mamba |" in out
