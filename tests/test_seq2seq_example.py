"""examples/dates_seq2seq.py: its quick run, its data and its decoders.

The quick run goes through ``main(argv)``; its accuracies are no result
(30 steps of a tiny model), so only their bounds and the printed table are
checked, and its two decoders against each other: with a beam of one,
beam search is greedy decoding. The data are checked against ``datetime``:
the split never shares a date, and every format reads back to its date.
"""

import datetime
import pathlib
import re
import runpy

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "dates_seq2seq.py"


@pytest.fixture(scope="module")
def module():
  return runpy.run_path(str(EXAMPLE))


@pytest.mark.slow
def test_quick_run_prints_and_returns_its_figures(module, capsys):
  # A beam of one is greedy decoding (jaxrnn.beam_search's documented
  # limit): the two decoders of the example must agree on every date.
  result = module["main"](["--quick", "--beam-size", "1"])
  out = capsys.readouterr().out
  assert module["QUICK_NOTE"] in out
  quick = module["QUICK"]
  assert result["losses"].shape == (quick.steps,) and np.all(np.isfinite(result["losses"]))
  # Cross-entropy over 13 tokens starts near log(13) and falls.
  assert abs(result["losses"][0] - np.log(module["OUTPUT_VOCAB"])) < 0.5
  assert result["losses"][-5:].mean() < result["losses"][:5].mean()
  for name in ("greedy", "beam"):
    match = result[f"{name}_exact_match"]
    assert 0.0 <= match <= 1.0
    assert match == np.mean([p == t for p, t in zip(result[name], result["targets"])])
    assert len(result[name]) == quick.eval_examples
    assert all(re.fullmatch(r"[0-9-]{0,11}", p) for p in result[name])
  assert result["greedy"] == result["beam"] and result["greedy_beam_differ"] == 0
  printed = re.search(r"greedy: +([\d.]+)%\n +beam search \(k=1\): +([\d.]+)%", out)
  assert printed, out
  assert [float(v) for v in printed.groups()] == pytest.approx(
      [100 * result["greedy_exact_match"], 100 * result["beam_exact_match"]], abs=0.006)
  assert 0 < result["compile_seconds"] < result["train_seconds"] < result["seconds"]
  assert re.search(r"trained 30 steps of 16 in \d+ s", out)


def test_dates_split_and_every_format_reads_back(module):
  train, held = module["split_dates"](0.1, 0)
  assert not set(train) & set(held)
  days = (module["LAST_DAY"] - module["FIRST_DAY"]).days + 1
  assert len(train) + len(held) == days and len(held) == round(0.1 * days)
  months = {name.lower(): k for k, name in enumerate(
      ["", "january", "february", "march", "april", "may", "june", "july", "august",
       "september", "october", "november", "december"])}
  months.update({name[:3]: k for name, k in months.items() if name})
  ordinals = {word: k + 1 for k, word in enumerate(module["ORDINALS"])}

  def read(text):  # an independent reader of the 14 formats, for these checks
    words = re.findall(r"[a-z]+(?:-[a-z]+)?|\d+", text.lower())
    numbers = [w for w in words if w.isdigit()]
    names = [w for w in words if w in months]
    if "of" in words:
      return datetime.date(int(numbers[0]), months[words[-2]], ordinals[words[0]])
    if names:
      year = int(numbers[-1])
      year += 0 if year >= 100 else (1900 if year >= 50 else 2000)
      return datetime.date(year, months[names[0]], int(numbers[0]))
    if len(numbers) == 1:
      n = numbers[0]
      return datetime.date(int(n[:4]), int(n[4:6]), int(n[6:]))
    a, b, c = (int(n) for n in numbers)
    if a > 31:
      return datetime.date(a, b, c)             # year first
    if "/" in text:
      c += 0 if c >= 100 else (1900 if c >= 50 else 2000)
      return datetime.date(c, a, b)             # month/day/year
    return datetime.date(c, b, a)               # day.month.year

  rng = np.random.default_rng(0)
  for date in [held[k] for k in rng.integers(len(held), size=40)] + [
      datetime.date(2049, 9, 27), datetime.date(1950, 1, 1), datetime.date(2000, 2, 29)]:
    for fmt in module["FORMATS"]:
      text = fmt(date)
      assert len(text) <= module["MAX_INPUT"] and read(text) == date, (text, date)


def test_examples_encode_the_iso_date(module):
  train, _ = module["split_dates"](0.1, 0)
  data = module["make_examples"](train, 20, np.random.default_rng(1))
  chars = module["CHARS"]
  for text, iso, ids, n, target in zip(data["texts"], data["isos"], data["chars"],
                                       data["length"], data["targets"]):
    assert "".join(chars[i - 1] for i in ids[:n]) == text and not ids[n:].any()
    assert module["to_text"](target) == iso and target[-1] == module["END"]

