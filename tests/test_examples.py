"""The examples run, do what they claim, and their ``--help`` gives every default."""

import contextlib
import io
import pathlib
import re
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(path.stem for path in EXAMPLES.glob("*.py"))


def help_entries(text):
  """``{option: its help text}`` of an argparse ``--help`` output."""
  entries, name = {}, None
  for line in text.splitlines():
    if re.match(r"^  \S", line):  # a new option or positional argument
      name, _, rest = line.strip().partition("  ")
      entries[name] = rest
    elif line.startswith("   ") and name is not None:
      entries[name] += " " + line
    else:
      name = None
  return {k: " ".join(v.split()) for k, v in entries.items()}


@pytest.fixture(scope="module")
def helps():
  """The ``--help`` output of every example, as ``{script: text}``."""
  out = {}
  for name in SCRIPTS:
    module = runpy.run_path(str(EXAMPLES / f"{name}.py"))
    parse = module.get("parse_args") or module["main"]
    buffer = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(buffer):
      parse(["--help"])
    assert exit_info.value.code == 0, name
    out[name] = buffer.getvalue()
  return out


def test_every_example_has_a_help_that_gives_the_defaults(helps):
  assert set(helps) == set(SCRIPTS) and len(SCRIPTS) >= 11
  for name, text in helps.items():
    assert text.startswith("usage: "), name
    entries = help_entries(text)
    assert "-h, --help" in entries, (name, entries)
    for option, words in entries.items():
      if option != "-h, --help":
        assert re.search(r"\(default: [^)]*\)$", words), (name, option, words)
      # None only where it means something: no file written, or what None does.
      if words.endswith("(default: None)"):
        assert "PATH" in option or "None: " in words, (name, option, words)
  # Defaults that --quick replaces are the full run's.
  assert "--steps STEPS training-step budget per cell (default: 4000)" in " ".join(
      helps["adding_problem"].split())
  entries = help_entries(helps["capitalise"])
  assert entries["--steps STEPS"] == "training steps per model (default: 1500)"
  assert help_entries(helps["train_running_mean"])["num_steps"] == "training steps (default: 400)"


def test_digits_2d_says_its_quick_run_is_at_chance(helps, capsys):
  quick = help_entries(helps["digits_2d"])["--quick"]
  assert "a little above chance (10%), not results" in quick, quick
  module = runpy.run_path(str(EXAMPLES / "digits_2d.py"))
  # The table's rows without training: only what main prints is checked here
  # (tests/test_digits_2d_example.py trains the quick run).
  rows = {"hidden": 4, "params": 1000, "test_accuracy": 0.1, "ms_per_step": 1.0,
          "compile_s": 0.1, "steps": 20, "curve": [(0, 0.1), (20, 0.1)]}
  module["main"].__globals__["train_one"] = lambda name, **_: dict(rows, model=name)
  for argv, said in ((["--quick", "--models", "rows"], True), (["--models", "rows"], False)):
    module["main"](argv)
    out = capsys.readouterr().out
    assert (module["QUICK_NOTE"] in out) == said, out
  assert module["QUICK_NOTE"] == (
      "--quick: a check that the script runs, not a result; so few steps and parameters "
      "leave the accuracies at or a little above chance (10%)")


def test_quick_keeps_options_given():
  adding = runpy.run_path(str(EXAMPLES / "adding_problem.py"))
  full = adding["parse_args"]([])
  quick = adding["parse_args"](["--quick", "--hidden", "8"])
  assert (full.steps, full.hidden, full.lengths) == (4000, 64, [100, 200])
  assert (quick.steps, quick.hidden, quick.lengths) == (200, 8, [10])
  digits = runpy.run_path(str(EXAMPLES / "digits_2d.py"))
  assert vars(digits["parse_args"](["--quick", "--steps", "7"])) == dict(
      vars(digits["parse_args"]([])), quick=True, steps=7, params=1500, eval_every=10)


@pytest.mark.slow
def test_train_running_mean_learns():
  module = runpy.run_path(str(EXAMPLES / "train_running_mean.py"))
  first, last = module["main"](120)
  assert last < 0.5 * first


@pytest.mark.slow
def test_from_torch_example_runs(capsys):
  runpy.run_path(str(EXAMPLES / "from_torch.py"))["main"]()  # it asserts the match itself
  lines = capsys.readouterr().out.splitlines()
  diff = re.fullmatch(r"max \|jaxrnn - torch\| over outputs, h_n, c_n: (\S+)", lines[0])
  assert diff and float(diff.group(1)) < 1e-5, lines[0]
  losses = [float(re.fullmatch(rf"step {i}: loss (\S+)", line).group(1))
            for i, line in enumerate(lines[1:4])]
  assert losses[2] < losses[1] < losses[0], losses
  assert lines[4].startswith("back in torch: LSTM(3, 16, num_layers=2"), lines[4]
