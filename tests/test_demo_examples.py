"""The demo (examples/capitalise.py) and examples/char_lm.py: quick runs and their parts.

The quick runs go through ``main(argv)``; the parts they rely on (paragraph
cutting, the metrics after bucketing, the plot, the sampler, bits per
character) are checked against hand counts, NumPy and Python loops.
"""

import math
import pathlib
import re
import runpy
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def capitalise():
  return runpy.run_path(str(EXAMPLES / "capitalise.py"))


@pytest.fixture(scope="module")
def char_lm():
  return runpy.run_path(str(EXAMPLES / "char_lm.py"))


def _hide(monkeypatch, *names):
  """Makes ``import name`` raise ImportError, as if it were not installed."""
  for name in names:
    monkeypatch.setitem(sys.modules, name, None)


def _fake_matplotlib(monkeypatch):
  """A stand-in matplotlib that records plotted lines and writes savefig's file."""
  calls = {"lines": [], "saved": []}

  class Axes:
    def plot(self, x, y, label=None):
      calls["lines"].append((label, np.asarray(x), np.asarray(y)))

    def __getattr__(self, name):  # set_xlabel, set_yscale, legend, ...
      return lambda *args, **kwargs: None

  class Figure:
    def tight_layout(self):
      pass

    def savefig(self, path, **kwargs):
      pathlib.Path(path).write_bytes(b"\x89PNG fake")
      calls["saved"].append(pathlib.Path(path))

  pyplot = types.ModuleType("matplotlib.pyplot")
  pyplot.subplots = lambda **kwargs: (Figure(), Axes())
  pyplot.close = lambda fig: None
  matplotlib = types.ModuleType("matplotlib")
  matplotlib.use = lambda backend: None
  matplotlib.pyplot = pyplot
  monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
  monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
  return calls


# ---------------------------------------------------------------------------
# capitalise.py


@pytest.mark.slow
def test_capitalise_quick_run(capitalise, monkeypatch, capsys, tmp_path):
  _hide(monkeypatch, "matplotlib", "tqdm")
  out = tmp_path / "plots" / "loss.png"
  # The quick run with half its steps: the loss still falls by more than
  # half (to about a quarter); compilation, not the steps, dominates.
  result = capitalise["main"](["--quick", "--steps", "20", "--out", str(out)])
  text = capsys.readouterr().out

  assert "matplotlib is not installed: skipped the loss plot" in text
  assert not out.exists() and result["plot"] is None
  # Without tqdm, plain progress lines.
  assert re.search(r"unidirectional LSTM\(16\): step 20/20  loss \d", text)
  assert re.search(r"bidirectional LSTM\(\d+\)\+LSTM\(\d+\): step 20/20  loss \d", text)

  rows = {m.group(1): [float(v) for v in m.groups()[2:]] for m in re.finditer(
      r"^(unidirectional|bidirectional) +(\S+)" + r" +([\d.]+)" * 5 + "$",
      text.replace(",", ""), re.MULTILINE)}
  assert set(rows) == {"unidirectional", "bidirectional"}
  for kind, (params, precision, recall, f1, train_loss) in rows.items():
    r = result["results"][kind]
    assert params == r["params"]
    assert (precision, recall, f1, train_loss) == pytest.approx(
        (r["precision"], r["recall"], r["f1"], r["last_loss"]), abs=5e-4)
    for v in (precision, recall, f1):
      assert 0.0 <= v <= 1.0
    # The metrics agree with the counts they come from.
    tp, fp, fn = r["tp"], r["fp"], r["fn"]
    assert r["precision"] == pytest.approx(tp / max(tp + fp, 1))
    assert r["recall"] == pytest.approx(tp / max(tp + fn, 1))
    losses = result["losses"][next(k for k in result["losses"] if k.startswith(kind))]
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), kind
  # Same parameter count, give or take one hidden unit per direction.
  uni, bi = (result["results"][k]["params"] for k in ("unidirectional", "bidirectional"))
  assert abs(bi - uni) / uni < 0.05


def test_capitalise_writes_the_plot(capitalise, monkeypatch, capsys, tmp_path):
  calls = _fake_matplotlib(monkeypatch)
  losses = {"a": np.array([1.0, 0.5, 0.25]), "b": np.array([2.0, 2.0, 1.0])}
  path = tmp_path / "sub" / "curves.png"
  assert capitalise["plot_losses"](losses, path) is True
  assert path.read_bytes().startswith(b"\x89PNG") and calls["saved"] == [path]
  assert f"wrote the loss curves to {path}" in capsys.readouterr().out
  # Bias-corrected moving average, decay 0.98, computed by hand.
  expected_a = [1.0, (0.0196 + 0.02 * 0.5) / (1 - 0.98 ** 2)]
  (label_a, x_a, y_a), (label_b, _, y_b) = calls["lines"]
  assert (label_a, label_b) == ("a", "b")
  np.testing.assert_array_equal(x_a, [1, 2, 3])
  np.testing.assert_allclose(y_a[:2], expected_a, rtol=1e-12)
  assert y_b[0] == 2.0 and y_b[1] == pytest.approx(2.0)


def test_capitalise_plot_skipped_without_matplotlib(capitalise, monkeypatch, capsys, tmp_path):
  _hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
  path = tmp_path / "curves.png"
  assert capitalise["plot_losses"]({"a": np.ones(3)}, path) is False
  assert not path.exists()
  assert "skipped the loss plot" in capsys.readouterr().out


def test_progress_uses_tqdm_when_installed(capitalise, char_lm, monkeypatch, capsys):
  bars = []

  class FakeTqdm:
    def __init__(self, total, desc, **kwargs):
      self.total, self.desc, self.n, self.postfix = total, desc, 0, None
      self.closed = False
      bars.append(self)

    def set_postfix(self, refresh=True, **kwargs):
      self.postfix = kwargs

    def update(self, n):
      self.n += n

    def close(self):
      self.closed = True

  monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
  progress = capitalise["Progress"](3, "model")
  for loss in (0.5, 0.25, 0.125):
    progress.update(loss)
  progress.close()
  lm_progress = char_lm["Progress"](20, "lm")
  lm_progress.update(2.5, 10)
  lm_progress.update(2.0, 10)
  lm_progress.close()
  assert capsys.readouterr().out == ""  # the bars print, not the fallback
  (bar, lm_bar) = bars
  assert (bar.total, bar.desc, bar.n, bar.postfix, bar.closed) == (
      3, "model", 3, {"loss": "0.1250"}, True)
  assert (lm_bar.total, lm_bar.n, lm_bar.postfix, lm_bar.closed) == (
      20, 20, {"bpc": "2.000"}, True)


def test_progress_prints_every_tenth_without_tqdm(char_lm, monkeypatch, capsys):
  _hide(monkeypatch, "tqdm")
  progress = char_lm["Progress"](100, "lm")
  for _ in range(10):
    progress.update(1.5, 10)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "lm: 100 steps (install tqdm for a progress bar)"
  assert lines[1:] == [f"lm: step {k}/100  bpc 1.500" for k in range(10, 101, 10)]


def test_paragraphs_are_cut_after_spaces_and_lose_nothing(capitalise):
  text = "Short one.\n\n" + "word " * 30 + "end\n\n\n\nX" + "y" * 25 + "\n"
  pieces = capitalise["paragraphs"](text, 20)
  assert all(0 < len(p) <= 20 for p in pieces)
  assert pieces == (["Short one."] + ["word word word word "] * 7  # cut after a space
                    + ["word word end", "X" + "y" * 19, "y" * 6])  # no space: hard cut


def test_encode_lowercases_and_marks_capitals(capitalise):
  ids, upper = capitalise["encode"]("Ab é\n")
  char_ids = capitalise["CHAR_IDS"]
  assert ids.tolist() == [char_ids["a"], char_ids["b"], char_ids[" "], capitalise["UNK"],
                          char_ids["\n"]]
  assert upper.tolist() == [1, 0, 0, 0, 0]


def test_evaluate_counts_through_bucketed_batches(capitalise):
  """A fixed rule as the model: upper where the input is 'x'. Lengths vary
  so that bucketing reorders the examples and the last batch is filled up."""
  x_id = capitalise["CHAR_IDS"]["x"]

  def apply(params, xs, *, length=None, carry=None):  # xs: (T, E) embeddings
    is_x = xs[:, 0] == float(x_id)
    logits = jnp.stack([jnp.zeros(xs.shape[0]), jnp.where(is_x, 1.0, -1.0)], axis=1)
    return logits, ()

  net = jaxrnn.Layer(init_params=None, apply=apply, init_carry=lambda dtype=None: ())
  params = {"embed": jnp.arange(capitalise["VOCAB_SIZE"], dtype=jnp.float32)[:, None],
            "net": None}
  texts = ["xX a", "Xyz", "abc xx Xx", "", "AXb", "q" * 70, "xXxX" * 3]
  examples = [capitalise["encode"](t) for t in texts]
  config = capitalise["Config"](batch_size=3, pad_multiple=8, max_length=80)
  metrics, predictions = capitalise["evaluate"](net, params, examples, config)

  for text, pred in zip(texts, predictions):
    assert pred.tolist() == [c in "xX" for c in text], text
  tp = sum(c == "X" for t in texts for c in t)
  fp = sum(c == "x" for t in texts for c in t)
  fn = sum(c.isupper() and c != "X" for t in texts for c in t)
  assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (tp, fp, fn) == (10, 10, 1)
  assert metrics["precision"] == pytest.approx(10 / 20)
  assert metrics["recall"] == pytest.approx(10 / 11)
  assert metrics["f1"] == pytest.approx(2 * 10 / (2 * 10 + 10 + 1))


def test_matched_hidden_size_equalises_parameters(capitalise):
  E, V = 32, capitalise["VOCAB_SIZE"]

  def lstm(D, H):  # W_x, W_h, b_x, b_h
    return 4 * H * (D + H) + 8 * H

  for H in (16, 64):
    h = capitalise["matched_hidden_size"](H, E)
    uni = V * E + lstm(E, H) + H * 2 + 2
    bi = V * E + 2 * lstm(E, h) + 2 * h * 2 + 2
    assert capitalise["count_params"](capitalise["build"]("unidirectional", H), E) == uni
    assert capitalise["count_params"](capitalise["build"]("bidirectional", h), E) == bi
    neighbours = [abs(V * E + 2 * lstm(E, k) + 4 * k + 2 - uni) for k in (h - 1, h + 1)]
    assert abs(bi - uni) <= min(neighbours)


def test_capitalise_rejects_bad_options(capitalise, capsys):
  with pytest.raises(SystemExit):
    capitalise["parse_args"](["--steps", "0"])
  assert "--steps: expected a positive integer" in capsys.readouterr().err
  config = capitalise["parse_args"](["--quick", "--hidden", "12", "--seed", "3"])
  assert (config.hidden, config.seed, config.steps) == (12, 3, 40)


# ---------------------------------------------------------------------------
# char_lm.py


@pytest.mark.slow
def test_char_lm_quick_run(char_lm, monkeypatch, capsys):
  _hide(monkeypatch, "tqdm")
  result = char_lm["main"](["--quick", "--prompt", "The ", "--temperature", "0.5"])
  text = capsys.readouterr().out
  before = float(re.search(r"bits per character before training: ([\d.]+)", text).group(1))
  after = float(re.search(r"bits per character after 30 steps: ([\d.]+)", text).group(1))
  assert (before, after) == pytest.approx((result["bpc_before"], result["bpc_after"]), abs=5e-4)
  assert math.isfinite(before) and math.isfinite(after)
  # An untrained model is about uniform over the vocabulary; training helps.
  assert abs(before - math.log2(char_lm["VOCAB_SIZE"])) < 0.5
  assert after < before - 0.5
  assert result["train_bpc"].shape == (30,)
  assert result["train_bpc"][-5:].mean() < result["train_bpc"][:5].mean()
  sample = result["sample"]
  assert sample.startswith("The ") and len(sample) == 4 + 60
  shown = "\n".join(line.rstrip() for line in sample.split("\n"))
  assert "sample (temperature 0.5):\n" + shown + "\n" in text


@pytest.fixture(scope="module")
def tiny_lm(char_lm):
  config = char_lm["Config"](hidden=8, embed=4, layers=2, cell="lstm")
  net = char_lm["build"](config)
  params = jax.jit(lambda k: char_lm["init_params"](net, k, config.embed))(jax.random.key(3))
  return net, params


def test_sampler_at_low_temperature_is_greedy_decoding(char_lm, tiny_lm):
  """The jitted loop that carries the state equals re-reading the whole
  prefix from scratch at every step and taking the argmax."""
  net, params = tiny_lm
  prompt = jnp.asarray(char_lm["encode"]("def f"))
  tokens = char_lm["make_sampler"](net, 6)(params, jax.random.key(0), prompt, 1e-6)

  # The prefix so far, padded to a fixed size (one compile), read with length.
  read = jax.jit(lambda p, ids, n: net.apply(p["net"], p["embed"][ids], length=n)[0][n - 1])
  prefix = np.zeros(5 + 6, np.int32)
  prefix[:5] = np.asarray(prompt)
  for n in range(5, 11):
    prefix[n] = int(jnp.argmax(read(params, prefix, n)))
  assert np.asarray(tokens).tolist() == prefix[5:].tolist()


def test_bits_per_character_against_numpy(char_lm, tiny_lm):
  net, params = tiny_lm
  ids = np.random.default_rng(0).integers(0, char_lm["VOCAB_SIZE"], size=(3, 9)).astype(np.int32)
  got = char_lm["make_bits_per_character"](net)(params, ids)

  forward = jax.jit(lambda p, row: net.apply(p["net"], p["embed"][row])[0])  # one sequence
  nats = []
  for row in ids:
    logits = np.asarray(forward(params, row), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nats += [-log_probs[t, row[t + 1]] for t in range(len(row) - 1)]
  assert got == pytest.approx(np.mean(nats) / np.log(2), rel=1e-5)


def test_char_lm_streams_and_vocabulary(char_lm):
  s = char_lm["streams"](np.arange(11), 3)
  np.testing.assert_array_equal(s, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
  text = "Hi!\n\tok"
  assert char_lm["decode"](char_lm["encode"](text)) == text
  assert char_lm["decode"](char_lm["encode"]("é")) == "?"


def test_char_lm_rejects_bad_options(char_lm, capsys):
  for argv, message in ((["--temperature", "0"], "--temperature: expected a positive number"),
                        (["--prompt", ""], "--prompt: expected at least one character"),
                        (["--hidden", "-3"], "--hidden: expected a positive integer")):
    with pytest.raises(SystemExit):
      char_lm["parse_args"](argv)
    assert message in capsys.readouterr().err
