"""The "Decoding and deployment" examples: examples/ctc_digits.py and
examples/streaming_lm.py, in their quick runs, and their parts.

The quick runs go through ``main(argv)``; their figures say only that the
scripts run (so few steps leave the models near their start). The parts the
figures rest on (the lines of digits, the edit distance, bits per character)
are checked against hand counts; the streaming run checks that the exported
model, served in a fresh process, gives this process's figure.
"""

import json
import math
import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def ctc_digits():
  return runpy.run_path(str(EXAMPLES / "ctc_digits.py"))


@pytest.fixture(scope="module")
def streaming_lm():
  return runpy.run_path(str(EXAMPLES / "streaming_lm.py"))


# ---------------------------------------------------------------------------
# ctc_digits.py


@pytest.mark.slow
def test_ctc_digits_quick_prints_the_table(ctc_digits, capsys, tmp_path):
  result = ctc_digits["main"](["--quick", "--json", str(tmp_path / "ctc.json")])
  out = capsys.readouterr().out
  assert ctc_digits["QUICK_NOTE"] in out
  lines = out.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("decoder"))
  assert lines[header].split() == ["decoder", "held-out", "lines", "right", "CER", "seconds"]
  table = [re.fullmatch(r"(greedy|beam \d+) +([\d.]+%) +([\d.]+%) +[\d.]+", line).groups()
           for line in lines[header + 2:header + 4]]
  assert [row[0] for row in table] == ["greedy", "beam 4"]
  for printed, (name, r) in zip(table, result["decoders"].items()):
    assert printed == (name, f"{100 * r['sequence_accuracy']:.1f}%", f"{100 * r['cer']:.2f}%")
    assert 0.0 <= r["sequence_accuracy"] <= 1.0 and r["cer"] >= 0.0
    assert len(r["decoded"]) == 20 and all(set(d) <= set("0123456789") for d in r["decoded"])
  assert result["losses"].shape == (10,) and np.all(np.isfinite(result["losses"]))
  assert result["train_seconds"] > 0 and result["params"] > 0
  assert f"read {result['lines_differ']} of the 20 lines differently" in out
  saved = json.loads((tmp_path / "ctc.json").read_text())
  assert set(saved["decoders"]) == {"greedy", "beam 4"}


def test_ctc_lines_are_made_of_whole_images(ctc_digits):
  images = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32) + 0.5  # never 0
  labels = np.arange(5, dtype=np.int32) * 2
  xs, lengths, targets, num_digits = ctc_digits["make_lines"](
      images, labels, 50, np.random.default_rng(1))
  width = ctc_digits["WIDTH"]
  assert xs.shape == (50, width, 8) and width == 78
  assert set(num_digits.tolist()) == set(range(3, 9))  # 3 to 8 digits
  for x, n, target, k in zip(xs, lengths, targets, num_digits):
    assert np.all(x[n:] == 0) and np.all(target[k:] == 0)
    columns = np.flatnonzero(x[:n].any(axis=1))  # the columns of digits, not gaps
    assert len(columns) == 8 * k and 8 * k <= n <= 8 * k + 2 * (k - 1)
    for i in range(k):  # each digit's 8 columns are its image, read left to right
      block = x[columns[8 * i:8 * i + 8]]
      (index,) = [j for j in range(5) if np.array_equal(block, images[j].T)]
      assert target[i] == labels[index] + 1
    assert x[columns[-1]].any() and columns[-1] == n - 1  # no gap after the last digit


def test_edit_distance_and_score_by_hand(ctc_digits):
  distance = ctc_digits["edit_distance"]
  assert distance("kitten", "sitting") == 3
  assert distance([], [1, 2]) == 2 and distance([1, 2, 3], [1, 2, 3]) == 0
  assert distance([1, 2, 3], [2, 3]) == 1 and distance([1, 2], [2, 1]) == 2
  accuracy, cer = ctc_digits["score"]([[1, 2], [3], [4, 4]], [[1, 2], [3, 3], [5]])
  assert accuracy == pytest.approx(1 / 3) and cer == pytest.approx((0 + 1 + 2) / 5)


# ---------------------------------------------------------------------------
# streaming_lm.py


@pytest.mark.slow
def test_streaming_lm_quick_serves_the_same_figure_in_a_fresh_process(
    streaming_lm, monkeypatch, capsys, tmp_path):
  monkeypatch.setitem(sys.modules, "tqdm", None)  # plain progress lines
  out_dir = tmp_path / "served"
  result = streaming_lm["main"](["--quick", "--out", str(out_dir), "--temperature", "0.5"])
  text = capsys.readouterr().out
  assert streaming_lm["QUICK_NOTE"] in text
  here = float(re.search(r"bits per character, this process: +([\d.]+)", text).group(1))
  fresh = float(re.search(r"bits per character, fresh process: ([\d.]+)", text).group(1))
  assert here == fresh
  assert result["bpc_fresh_process"] == pytest.approx(result["bpc_after"], abs=1e-5)
  assert (here, fresh) == pytest.approx((result["bpc_after"], result["bpc_fresh_process"]),
                                        abs=5e-5)
  # An untrained model is about uniform over the vocabulary; training helps.
  vocab = streaming_lm["char_lm"].VOCAB_SIZE
  assert abs(result["bpc_before"] - math.log2(vocab)) < 0.5
  assert result["bpc_after"] < result["bpc_before"] - 0.3
  assert result["stream_difference"] < 1e-4  # as_cell, one step at a time == apply
  assert {p.name for p in out_dir.iterdir()} == {"model.jax", "params.npz", "held_out.npz",
                                                  "serve.py"}
  assert re.search(r"exported for cpu, cuda, tpu with input shapes \(b, t\), \(b,\)", text)
  sample = result["sample"]
  assert sample.startswith("The ") and len(sample) == 4 + 60
  assert "sample (temperature 0.5):" in text


def test_bits_per_character_by_hand(streaming_lm):
  log_probs = np.log(np.full((2, 4, 3), 1 / 3))
  log_probs[0, 0, 2] = np.log(0.5)   # predicts ids[0, 1] = 2
  log_probs[1, 1, 1] = np.log(0.25)  # predicts ids[1, 2]: past length 2, not counted
  ids = np.array([[0, 2, 1, 1], [1, 0, 1, 0]])
  got = streaming_lm["bits_per_character"](log_probs, ids, np.array([4, 2]))
  # Three predictions in row 0 (one of them 1/2), one in row 1.
  assert got == pytest.approx((1 + 3 * math.log2(3)) / 4)
