"""examples/digits_2d.py runs in its quick mode and prints its table."""

import pathlib
import runpy

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "digits_2d.py"


@pytest.mark.slow
def test_digits_2d_quick_prints_the_table(capsys, tmp_path):
  module = runpy.run_path(str(EXAMPLE))
  rows = module["main"](["--quick", "--json", str(tmp_path / "rows.json")])
  out = capsys.readouterr().out
  lines = out.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("model"))
  assert lines[header].split() == ["model", "hidden", "params", "held-out", "accuracy",
                                   "ms/step", "compile", "s"]
  table = [line.split() for line in lines[header + 2:header + 6]]
  assert [row[0] for row in table] == ["mdlstm", "renet", "rows", "pixels"]
  for printed, row in zip(table, rows):
    assert int(printed[2]) == row["params"] <= 1500
    assert printed[3] == f"{100 * row['test_accuracy']:.1f}%"
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["ms_per_step"] > 0
    # A learning curve: the held-out accuracy before training and after.
    assert row["curve"][0][0] == 0 and row["curve"][-1][0] == row["steps"]
  # About equal parameter counts (hidden sizes are whole numbers: a coarse
  # grid at this small budget).
  assert min(row["params"] for row in rows) >= 0.6 * 1500
  assert (tmp_path / "rows.json").exists()
