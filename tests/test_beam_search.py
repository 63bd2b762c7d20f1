"""`beam_search` against brute-force enumeration and a Python greedy loop.

Two toy models give the log-probabilities, each written twice: as a jax
``step`` and as a NumPy function of the whole history ``[start, y_1, ...]``.
The Markov model conditions on the last token (its carry, a per-example
bias, never changes); the history model on every token fed so far, through
an integer code of the history in its carry, so a wrongly reordered carry
changes the log-probabilities.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn

END = 0
ALPHAS = (0.0, 0.6, 1.0)


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max()
  return x - np.log(np.exp(x).sum())


def random_table(rows, vocab, seed):
  return np.random.default_rng(seed).normal(size=(rows, vocab)).astype(np.float32)


class Markov:
  """log p(y_t | history) = log_softmax(table[y_{t-1}] + bias)."""

  def __init__(self, vocab, seed):
    self.vocab = vocab
    self.table = random_table(vocab, vocab, seed)

  def step(self, bias, token):
    return bias, jax.nn.log_softmax(jnp.asarray(self.table)[token] + bias)

  def log_probs(self, bias, history):
    return np_log_softmax(self.table[history[-1]].astype(np.float64) + bias)


class History:
  """log p(y_t | history) = log_softmax(scale * table[code(history) % rows]),
  with code(history) the history read as digits ``token + 1`` in base V + 1."""

  rows = 997

  def __init__(self, vocab, seed):
    self.vocab = vocab
    self.table = random_table(self.rows, vocab, seed)

  def step(self, carry, token):
    code, scale = carry
    code = (code * (self.vocab + 1) + token + 1) % self.rows
    return (code, scale), jax.nn.log_softmax(scale * jnp.asarray(self.table)[code])

  def log_probs(self, carry, history):
    code, scale = 0, carry[1]
    for token in history:
      code = (code * (self.vocab + 1) + token + 1) % self.rows
    return np_log_softmax(scale * self.table[code].astype(np.float64))


MARKOV = Markov(vocab=4, seed=0)
HISTORY = History(vocab=4, seed=1)


def carries(model, batch, seed):
  """A batch of initial carries and start tokens."""
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, model.vocab, batch).astype(np.int32)
  if isinstance(model, Markov):
    return jnp.asarray(rng.normal(size=(batch, model.vocab)), jnp.float32), starts
  return (jnp.zeros(batch, jnp.int32), jnp.asarray(rng.uniform(1, 3, batch), jnp.float32)), starts


def example(batched, i):
  return jax.tree_util.tree_map(lambda x: x[i], batched)


@functools.lru_cache(maxsize=None)
def search(model, beam_size, max_length, alpha, batched=True):
  """One jitted beam search per configuration (vmapped over examples)."""
  fn = functools.partial(jaxrnn.beam_search, model.step, beam_size=beam_size,
                         max_length=max_length, end_token=END, length_penalty=alpha)
  return jax.jit(jax.vmap(fn) if batched else fn)


def enumerate_hypotheses(model, carry, start, max_length):
  """Every hypothesis: {tokens padded with END: (sum of log-probs, length)}."""
  found = {}

  def grow(prefix, total):
    for token, lp in enumerate(model.log_probs(carry, [start] + prefix)):
      seq = prefix + [token]
      if token == END or len(seq) == max_length:
        found[tuple(seq + [END] * (max_length - len(seq)))] = (total + lp, len(seq))
      else:
        grow(seq, total + lp)

  grow([], 0.0)
  return found


def gnmt(total, n, alpha):
  return total / ((5 + n) / 6) ** alpha


def greedy(model, carry, start, max_length):
  """Argmax at every step until END: (tokens padded with END, sum, length)."""
  seq, total = [], 0.0
  while len(seq) < max_length and (not seq or seq[-1] != END):
    lp = model.log_probs(carry, [start] + seq)
    seq.append(int(np.argmax(lp)))
    total += lp[seq[-1]]
  return seq + [END] * (max_length - len(seq)), total, len(seq)


def assert_padded(tokens):
  for row in np.asarray(tokens):
    ends = np.flatnonzero(row == END)
    if ends.size:
      assert np.all(row[ends[0]:] == END), row


def assert_exact(tokens, scores, hypotheses, alpha, beam_size, max_length, rtol=1e-5):
  """The search holds every hypothesis once, scored by GNMT and sorted; the
  slots beyond them are -inf and END only."""
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert tokens.shape == (beam_size, max_length) and tokens.dtype == np.int32
  assert scores.shape == (beam_size,)
  want = {seq: gnmt(total, n, alpha) for seq, (total, n) in hypotheses.items()}
  n = len(want)
  assert beam_size > n  # leaves padding slots to check
  got = [tuple(int(v) for v in row) for row in tokens[:n]]
  assert set(got) == set(want) and len(set(got)) == n
  np.testing.assert_allclose(scores[:n], [want[seq] for seq in got], rtol=rtol)
  np.testing.assert_allclose(scores[:n], sorted(want.values(), reverse=True), rtol=rtol)
  assert np.all(scores[n:] == -np.inf) and np.all(tokens[n:] == END)
  assert_padded(tokens)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_markov_large_beam_is_exact_top_k(alpha):
  # 1 + 3 + 9 + 27 = 40 hypotheses; vmapped over two examples.
  max_length, beam_size = 3, 43
  batch, starts = carries(MARKOV, 2, seed=2)
  tokens, scores = search(MARKOV, beam_size, max_length, alpha)(batch, starts)
  for i in range(2):
    found = enumerate_hypotheses(MARKOV, np.asarray(batch[i]), int(starts[i]), max_length)
    assert len(found) == 40
    assert_exact(tokens[i], scores[i], found, alpha, beam_size, max_length)


@pytest.mark.parametrize("alpha", (0.0, 1.0))
def test_history_large_beam_is_exact_top_k(alpha):
  # 1 + 3 + 9 + 27 + 81 = 121 hypotheses; the carry's code must follow each.
  max_length, beam_size = 4, 124
  batch, starts = carries(HISTORY, 1, seed=3)
  carry, start = example(batch, 0), int(starts[0])
  tokens, scores = search(HISTORY, beam_size, max_length, alpha, batched=False)(carry, start)
  found = enumerate_hypotheses(HISTORY, jax.device_get(carry), start, max_length)
  assert len(found) == 121
  assert_exact(tokens, scores, found, alpha, beam_size, max_length)


@pytest.mark.parametrize("model", (Markov(vocab=6, seed=4), History(vocab=6, seed=5)),
                         ids=("markov", "history"))
@pytest.mark.parametrize("alpha", (0.0, 0.6))
def test_beam_one_is_greedy(model, alpha):
  max_length, batch_size = 6, 8
  batch, starts = carries(model, batch_size, seed=6)
  tokens, scores = search(model, 1, max_length, alpha)(batch, starts)
  assert tokens.shape == (batch_size, 1, max_length) and scores.shape == (batch_size, 1)
  lengths = []
  for i in range(batch_size):
    seq, total, n = greedy(model, jax.device_get(example(batch, i)), int(starts[i]), max_length)
    np.testing.assert_array_equal(tokens[i, 0], seq)
    np.testing.assert_allclose(scores[i, 0], gnmt(total, n, alpha), rtol=1e-5)
    lengths.append(n)
  # The seeds give both kinds of ending: by END and by max_length.
  assert min(lengths) < max_length and max(lengths) == max_length


def test_vmap_equals_per_example_calls():
  # A beam too small to be exact: the batched and single searches still agree.
  model, max_length, beam_size, alpha = HISTORY, 4, 3, 0.6
  batch, starts = carries(model, 3, seed=7)
  tokens, scores = search(model, beam_size, max_length, alpha)(batch, starts)
  single = search(model, beam_size, max_length, alpha, batched=False)
  for i in range(3):
    one_tokens, one_scores = single(example(batch, i), starts[i])
    np.testing.assert_array_equal(tokens[i], one_tokens)
    np.testing.assert_allclose(scores[i], one_scores, rtol=1e-6)
    assert np.all(np.diff(np.asarray(one_scores)) <= 0)
    # Each score is its tokens' GNMT score under the model.
    found = enumerate_hypotheses(model, jax.device_get(example(batch, i)), int(starts[i]),
                                 max_length)
    for row, score in zip(np.asarray(one_tokens), np.asarray(one_scores)):
      total, n = found[tuple(int(v) for v in row)]
      np.testing.assert_allclose(score, gnmt(total, n, alpha), rtol=1e-5)


def test_float64(x64):
  model = History(vocab=3, seed=8)
  max_length, beam_size, alpha = 3, 16, 0.6  # 1 + 2 + 4 + 8 = 15 hypotheses
  carry = (jnp.zeros((), jnp.int32), jnp.ones((), jnp.float64))
  tokens, scores = jax.jit(functools.partial(
      jaxrnn.beam_search, model.step, beam_size=beam_size, max_length=max_length,
      end_token=END, length_penalty=alpha))(carry, 2)
  assert scores.dtype == jnp.float64 and tokens.dtype == jnp.int32
  found = enumerate_hypotheses(model, (0, 1.0), 2, max_length)
  assert_exact(tokens, scores, found, alpha, beam_size, max_length, rtol=1e-12)


def _bad_step(kind):
  def step(carry, token):
    log_probs = jnp.zeros(4) + carry
    if kind == "rank":
      return carry, log_probs[None]
    if kind == "int":
      return carry, jnp.zeros(4, jnp.int32)
    if kind == "single":
      return log_probs
    return (carry, carry), log_probs  # "carry"
  return step


GOOD = dict(beam_size=2, max_length=3, end_token=0)


@pytest.mark.parametrize("step, start, overrides, error, message", [
    (None, 1, dict(beam_size=0), ValueError, r"^beam_size: expected a positive int, got 0$"),
    (None, 1, dict(beam_size=2.0), TypeError,
     r"^beam_size: expected a positive int, got float 2.0$"),
    (None, 1, dict(max_length=0), ValueError, r"^max_length: expected a positive int, got 0$"),
    (None, 1, dict(end_token=4), ValueError,
     r"^end_token: expected an int in \[0, V\) = \[0, 4\) \(V from step's log_probs\), got 4$"),
    (None, 1, dict(end_token=-1), ValueError, r"^end_token: expected an int in \[0, V\).*got -1$"),
    (None, 1, dict(end_token=1.0), TypeError, r"^end_token: expected an int, got float 1.0$"),
    (None, 1, dict(length_penalty="0.6"), TypeError,
     r"^length_penalty: expected a real number, got str '0.6'$"),
    (None, 1, dict(length_penalty=float("nan")), ValueError,
     r"^length_penalty: expected a finite number, got nan$"),
    (None, 1.0, {}, TypeError, r"^start: expected an integer scalar, got float$"),
    (None, jnp.ones((), jnp.float32), {}, TypeError,
     r"^start: expected an integer scalar, got an array of shape \(\) and dtype float32$"),
    (None, np.array([1]), {}, ValueError,
     r"^start: expected an integer scalar, got shape \(1,\); for a batch, jax.vmap"),
    ("rank", 1, {}, ValueError,
     r"^step: expected log_probs of shape \(V,\) for one hypothesis .*got shape \(1, 4\)$"),
    ("int", 1, {}, TypeError, r"^step: expected floating-point log_probs, got dtype int32$"),
    ("single", 1, {}, TypeError, r"^step: expected to return \(carry, log_probs\), got "),
    ("carry", 1, {}, TypeError, r"^step's returned carry: beam_search expects a carry structured"),
    ("not callable", 1, {}, TypeError, r"^step: expected a callable, got str$"),
])
def test_errors_name_the_argument(step, start, overrides, error, message):
  fn = (MARKOV.step if step is None else step if step == "not callable"
        else _bad_step(step))
  carry = jnp.zeros(4) if step is None else jnp.zeros(())
  with pytest.raises(error, match=message):
    jaxrnn.beam_search(fn, carry, start, **{**GOOD, **overrides})


def test_errors_raise_at_trace_time():
  fn = jax.jit(lambda bias: jaxrnn.beam_search(MARKOV.step, bias, 1, beam_size=2,
                                               max_length=3, end_token=7))
  with pytest.raises(ValueError, match=r"^end_token: expected an int in \[0, V\)"):
    jax.eval_shape(fn, jnp.zeros(4))
