"""CTC: `ctc_loss` against PyTorch, `ctc_greedy_decode` against a Python loop,
`ctc_beam_search` against brute-force enumeration of every alignment and a
dict-of-prefixes Python beam search. Everything runs as jit(vmap(...)) over a
batch of examples whose padded frames hold NaN."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxrnn

# dtype x blank pairs: each float dtype meets a blank at either end of the classes.
DTYPE_BLANK = [pytest.param("float32", 0, id="f32-blank0"),
               pytest.param("float64", None, id="f64-blank-last")]


def _dtype_and_blank(request, dtype, blank, num_classes):
  if dtype == "float64":
    request.getfixturevalue("x64")
  return dtype, num_classes - 1 if blank is None else blank


def random_logits(shape, lengths, seed, scale=2.0):
  """``(B, T, V)`` logits with NaN at padded frames, and a clean float64 copy."""
  clean = scale * np.random.default_rng(seed).standard_normal(shape)
  junk = clean.copy()
  junk[np.arange(shape[1])[None, :] >= np.asarray(lengths)[:, None]] = np.nan
  return junk, clean


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def collapse(path, blank):
  """Merge repeats, then drop blanks."""
  return tuple(c for k, c in enumerate(path) if c != blank and (k == 0 or c != path[k - 1]))


def brute_force(logits, length, blank):
  """{labelling: log-probability} from all V**length alignments."""
  lp = np_log_softmax(logits[:length])
  num_classes = lp.shape[-1]
  paths = np.array(list(itertools.product(range(num_classes), repeat=length)), int)
  path_scores = lp[np.arange(length), paths].sum(-1) if length else np.zeros(1)
  out = {}
  for path, score in zip(paths.reshape(len(paths), length), path_scores):
    key = collapse(list(path), blank)
    out[key] = np.logaddexp(out.get(key, -np.inf), score)
  return out


def python_beam_search(logits, length, beam_size, blank):
  """Hannun et al.'s prefix beam search with a dict of prefixes -> (log p_b, log p_nb)."""
  lp = np_log_softmax(logits)
  beams = {(): (0.0, -np.inf)}
  for t in range(length):
    grown = {}

    def add(prefix, pb=-np.inf, pnb=-np.inf):
      old_pb, old_pnb = grown.get(prefix, (-np.inf, -np.inf))
      grown[prefix] = (np.logaddexp(old_pb, pb), np.logaddexp(old_pnb, pnb))

    for prefix, (pb, pnb) in beams.items():
      total = np.logaddexp(pb, pnb)
      add(prefix, pb=total + lp[t, blank])
      if prefix:
        add(prefix, pnb=pnb + lp[t, prefix[-1]])
      for c in range(lp.shape[-1]):
        if c != blank:
          add(prefix + (c,), pnb=(pb if prefix and prefix[-1] == c else total) + lp[t, c])
    ranked = sorted(grown.items(), key=lambda kv: -np.logaddexp(*kv[1]))
    beams = dict(ranked[:beam_size])
  return [(prefix, np.logaddexp(*scores)) for prefix, scores in beams.items()]


def torch_ctc(logits, length, labels, label_length, blank):
  """PyTorch's loss and its gradient w.r.t. the logits (float64)."""
  x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
  loss = torch.nn.functional.ctc_loss(
      torch.log_softmax(x, -1)[:, None], torch.tensor(labels[:label_length], dtype=torch.long),
      torch.tensor([length]), torch.tensor([label_length]), blank=blank, reduction="none")
  loss.sum().backward()
  return loss.item(), x.grad.numpy()


# ctc_loss ----------------------------------------------------------------------------

T, V = 6, 4
# (length, labels, label_length): labels over the non-blank classes "abc"; "-" is
# junk padding (-1), and padding may also copy a real label.
LOSS_CASES = [
    (6, "abbc", 3),   # repeated label, padded with a copy of a label
    (6, "bbbb", 0),   # empty label
    (4, "cc--", 2),   # a repeat needs 3 frames; frames 4, 5 are NaN
    (2, "abaa", 2),   # exactly enough frames
    (1, "aaaa", 1),   # one frame
    (6, "abca", 4),   # full label
    (3, "bbaa", 3),   # no alignment: "bba" needs 4 frames
]
IMPOSSIBLE = 6


@functools.lru_cache(maxsize=None)
def batched_loss_and_grad(blank):
  loss = functools.partial(jaxrnn.ctc_loss, blank=blank)
  return jax.jit(jax.vmap(jax.value_and_grad(loss)))


@pytest.mark.parametrize("dtype, blank", DTYPE_BLANK)
def test_loss_and_gradient_match_torch(request, dtype, blank):
  dtype, blank = _dtype_and_blank(request, dtype, blank, V)
  nonblank = [c for c in range(V) if c != blank]
  lengths = np.array([n for n, _, _ in LOSS_CASES])
  label_lengths = np.array([m for _, _, m in LOSS_CASES])
  labels = np.array([[-1 if ch == "-" else nonblank["abc".index(ch)] for ch in s]
                     for _, s, _ in LOSS_CASES])
  junk, clean = random_logits((len(LOSS_CASES), T, V), lengths, seed=blank)
  values, grads = batched_loss_and_grad(blank)(
      jnp.asarray(junk, dtype), jnp.asarray(lengths), jnp.asarray(labels),
      jnp.asarray(label_lengths))
  assert values.dtype == dtype and grads.dtype == dtype
  tol = 2e-5 if dtype == "float32" else 1e-10
  for b, (n, _, m) in enumerate(LOSS_CASES):
    want, want_grad = torch_ctc(clean[b], n, labels[b], m, blank)
    assert np.all(np.isfinite(grads[b])), b
    np.testing.assert_array_equal(grads[b, n:], 0)   # NaN padding never reaches it
    if b == IMPOSSIBLE:
      # torch says inf; optax's log_epsilon = -1e5 gives a large finite value.
      assert want == np.inf
      assert 9e4 < values[b] < 2e5
      continue
    np.testing.assert_allclose(values[b], want, rtol=tol, atol=tol, err_msg=str(b))
    np.testing.assert_allclose(grads[b], want_grad, rtol=tol, atol=tol, err_msg=str(b))


# ctc_greedy_decode ---------------------------------------------------------------------


@pytest.mark.parametrize("blank", [0, 2])
def test_greedy_decode_matches_python(blank):
  num_steps, num_classes = 8, 3
  lengths = np.array(list(range(num_steps + 1)) * 2 + [4])
  junk, clean = random_logits((len(lengths), num_steps, num_classes), lengths, seed=10 + blank)
  # Frames a a _ a (then NaN) decode to a a: merging comes before dropping blanks.
  a = 1
  frames = [a, a, blank, a]
  junk[-1, :4] = clean[-1, :4] = np.eye(num_classes)[frames]
  tokens, num_tokens = jax.jit(jax.vmap(functools.partial(
      jaxrnn.ctc_greedy_decode, blank=blank)))(jnp.asarray(junk, jnp.float32), lengths)
  assert tokens.dtype == jnp.int32 and num_tokens.dtype == jnp.int32
  assert tokens.shape == (len(lengths), num_steps) and num_tokens.shape == (len(lengths),)
  for b, n in enumerate(lengths):
    best = list(np.argmax(clean[b, :n], axis=-1))
    want = collapse(best, blank)
    assert num_tokens[b] == len(want), b
    assert tuple(tokens[b, :len(want)]) == want, b
    np.testing.assert_array_equal(tokens[b, len(want):], -1)
  assert tuple(tokens[-1, :num_tokens[-1]]) == (a, a)


# ctc_beam_search ---------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def batched_beam_search(beam_size, blank):
  return jax.jit(jax.vmap(functools.partial(jaxrnn.ctc_beam_search, beam_size=beam_size,
                                            blank=blank)))


def beams_of(tokens, num_tokens, scores, b):
  """Example b's live (labelling, score) pairs, after checking its slots."""
  assert np.all(scores[b, :-1] >= scores[b, 1:]), "scores must descend"
  out = []
  for k in range(len(scores[b])):
    n = int(num_tokens[b, k])
    np.testing.assert_array_equal(tokens[b, k, n:], -1)
    if scores[b, k] == -np.inf:
      assert n == 0
    else:
      out.append((tuple(int(c) for c in tokens[b, k, :n]), float(scores[b, k])))
  return out


@pytest.mark.parametrize("dtype, blank", DTYPE_BLANK)
def test_beam_search_is_exact_when_nothing_is_pruned(request, dtype, blank):
  """A beam holding every prefix (<= 2**0 + ... + 2**5 = 63 of them) returns all
  labellings with their exact probabilities, from enumerating all 3**5 alignments."""
  num_steps, num_classes, beam_size = 5, 3, 64
  dtype, blank = _dtype_and_blank(request, dtype, blank, num_classes)
  lengths = np.array([5, 4, 2, 0, 5])
  junk, clean = random_logits((len(lengths), num_steps, num_classes), lengths, seed=20)
  # Masked classes (-inf logits): labellings of probability 0 never show up, and
  # the prefixes ending in class a die at frame 2 (their slots must read as empty).
  a, b = [c for c in range(num_classes) if c != blank]
  masked = ([0, 2, 2, 3], [a, blank, a, b])
  junk[4][masked] = clean[4][masked] = -np.inf
  tokens, num_tokens, scores = batched_beam_search(beam_size, blank)(
      jnp.asarray(junk, dtype), jnp.asarray(lengths))
  assert scores.dtype == dtype and tokens.dtype == num_tokens.dtype == jnp.int32
  assert tokens.shape == (len(lengths), beam_size, num_steps)
  tol = 1e-5 if dtype == "float32" else 1e-11
  for b, n in enumerate(lengths):
    want = {k: v for k, v in brute_force(clean[b], n, blank).items() if v > -np.inf}
    got = beams_of(tokens, num_tokens, scores, b)
    # Dead slots neither merged into live ones nor duplicated them.
    assert len(got) == len(want) == len(dict(got)), b
    assert got[0][0] == max(want, key=want.get)
    for labelling, score in got:
      np.testing.assert_allclose(score, want[labelling], rtol=tol, atol=tol)
  assert beams_of(tokens, num_tokens, scores, 3) == [((), 0.0)]


@pytest.mark.parametrize("beam_size, blank", [(1, 0), (2, 3), (3, 1)])
def test_small_beams_match_python_beam_search(beam_size, blank):
  """With pruning: the same beams as the dict-based reference, and each score is
  at most the labelling's exact probability (the search kept only some of its
  alignments)."""
  num_steps, num_classes = 7, 4
  lengths = np.array([7, 6, 3, 1])
  junk, clean = random_logits((len(lengths), num_steps, num_classes), lengths, seed=30 + blank,
                              scale=1.0)
  tokens, num_tokens, scores = batched_beam_search(beam_size, blank)(
      jnp.asarray(junk, jnp.float32), jnp.asarray(lengths))
  for b, n in enumerate(lengths):
    want = python_beam_search(clean[b], n, beam_size, blank)
    got = beams_of(tokens, num_tokens, scores, b)
    assert [p for p, _ in got] == [p for p, _ in want], b
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)
    exact = brute_force(clean[b], n, blank)
    for labelling, score in got:
      assert score <= exact[labelling] + 1e-5


# Errors --------------------------------------------------------------------------------

LOGITS = np.zeros((3, 4), np.float32)
LABELS = np.array([1, 2], np.int32)


@pytest.mark.parametrize("call, error, message", [
    (lambda: jaxrnn.ctc_loss(LOGITS[None], 3, LABELS, 2), ValueError,
     r"^logits: ctc_loss expects shape \(T, V\) with T, V >= 1, got shape \(1, 3, 4\) "
     r"\(rank 3\); ctc_loss works on ONE example"),
    (lambda: jaxrnn.ctc_loss(LOGITS.astype(np.int32), 3, LABELS, 2), TypeError,
     r"^logits: expected a floating-point array, got dtype int32$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, LABELS[None], 2), TypeError,
     r"^labels: ctc_loss expects integers of shape \(L,\), got an array of shape \(1, 2\)"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, LABELS.astype(np.float32), 2), TypeError,
     r"^labels: .* dtype float32$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, np.ones(4, np.int32), 2), ValueError,
     r"^labels: ctc_loss expects at most T = 3 labels .*got shape \(4,\)$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 4, LABELS, 2), ValueError,
     r"^length: expected an integer in \[0, T\] = \[0, 3\], got 4$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, LABELS, 3), ValueError,
     r"^label_length: expected an integer in \[0, L\] = \[0, 2\], got 3$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, LABELS, 2, blank=4), ValueError,
     r"^blank: expected an int in \[0, V\) = \[0, 4\), got 4$"),
    (lambda: jaxrnn.ctc_loss(LOGITS, 3, LABELS, 2.0), TypeError,
     r"^label_length: expected an integer scalar, got float$"),
    (lambda: jaxrnn.ctc_greedy_decode(LOGITS, -1), ValueError,
     r"^length: expected an integer in \[0, T\] = \[0, 3\], got -1$"),
    (lambda: jaxrnn.ctc_greedy_decode(LOGITS, 3, blank=True), TypeError,
     r"^blank: expected an int in \[0, V\) = \[0, 4\), got bool True$"),
    (lambda: jaxrnn.ctc_greedy_decode(LOGITS[0], 3), ValueError,
     r"^logits: ctc_greedy_decode expects shape \(T, V\) with T, V >= 1, got shape \(4,\)"),
    (lambda: jaxrnn.ctc_beam_search(LOGITS, 3, beam_size=0), ValueError,
     r"^beam_size: expected a positive int, got 0$"),
    (lambda: jaxrnn.ctc_beam_search(LOGITS, 3, beam_size=2.0), TypeError,
     r"^beam_size: expected a positive int, got float 2.0$"),
    (lambda: jaxrnn.ctc_beam_search(LOGITS, 3, beam_size=2, blank=-1), ValueError,
     r"^blank: expected an int in \[0, V\) = \[0, 4\), got -1$"),
    (lambda: jaxrnn.ctc_beam_search(LOGITS, 5, beam_size=2), ValueError,
     r"^length: expected an integer in \[0, T\] = \[0, 3\], got 5$"),
    (lambda: jaxrnn.ctc_beam_search(LOGITS, None, beam_size=2), TypeError,
     r"^length: expected an integer scalar, got None$"),
])
def test_bad_arguments_raise_at_trace_time(call, error, message):
  with pytest.raises(error, match=message):
    call()
