"""Task losses and sequence readouts against float64 NumPy loops.

Padded steps hold NaN (and labels out of range): they must reach neither a
value nor a gradient.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref

B, T, C = 3, 6, 5
LENGTHS = np.array([6, 2, 0])


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(axis=-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_cross_entropy(z, y):
  """Cross-entropy of one score vector ``z: (C,)`` and one label."""
  return -np_log_softmax(z)[int(y)]


def np_labelling(logits, labels, lengths, reduction):
  out = np.zeros(len(lengths))
  for b, n in enumerate(lengths):
    losses = [np_cross_entropy(logits[b, t], labels[b, t]) for t in range(n)]
    if n == 0:
      continue
    out[b] = {"sum": sum(losses), "mean": sum(losses) / n, "last": losses[-1]}[reduction]
  return out


def _data(seed=0, junk=np.nan):
  rng = np.random.default_rng(seed)
  logits = 3.0 * rng.standard_normal((B, T, C))
  labels = rng.integers(0, C, (B, T))
  clean_logits, clean_labels = logits.copy(), labels.copy()
  pad = np.arange(T)[None, :] >= LENGTHS[:, None]
  logits[pad] = junk
  labels[pad] = -100
  return (jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int32),
          clean_logits, clean_labels)


# ---------------------------------------------------------------------------
# Cross-entropies. Each test compiles its computations as one program (the
# values and gradients together): eagerly, every op of every shape compiles
# on its own.


def test_per_step_cross_entropy_matches_numpy():
  logits, labels, clean_logits, clean_labels = _data(junk=0.0)
  got = jax.jit(jaxrnn.per_step_cross_entropy)(jnp.asarray(clean_logits, jnp.float32),
                                               jnp.asarray(clean_labels))
  assert got.shape == (B, T) and got.dtype == jnp.float32
  want = np.array([[np_cross_entropy(clean_logits[b, t], clean_labels[b, t])
                    for t in range(T)] for b in range(B)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def loss_and_grad(z, y):
  """``classification_loss(z, y)`` and the gradient of its sum."""
  return (jaxrnn.classification_loss(z, y),
          jax.grad(lambda z: jnp.sum(jaxrnn.classification_loss(z, y)))(z))


def test_cross_entropy_is_stable_for_huge_logits():
  logits = jnp.array([[1e4, 0.0, -1e4], [-3e38, 3e38, 0.0]], jnp.float32)
  got, grad = jax.jit(loss_and_grad)(logits, jnp.array([1, 1]))
  np.testing.assert_allclose(got, [1e4, 0.0])
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, [[1, -1, 0], [0, 0, 0]], atol=1e-6)


def test_label_out_of_range_is_nan():
  got = jax.jit(jaxrnn.classification_loss)(jnp.zeros((3, 4)), jnp.array([4, -1, 3]))
  assert np.isnan(got[0]) and np.isnan(got[1]) and np.isfinite(got[2])


def test_classification_loss_matches_numpy_and_gradient():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((2, 3, C))
  labels = rng.integers(0, C, (2, 3))
  got, grad = jax.jit(loss_and_grad)(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
  assert got.shape == (2, 3)
  want = np.vectorize(lambda i, j: np_cross_entropy(logits[i, j], labels[i, j]))(
      *np.indices((2, 3)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # d/dz of -log softmax(z)_y is softmax(z) - onehot(y).
  want_grad = np.exp(np_log_softmax(logits)) - np.eye(C)[labels]
  np.testing.assert_allclose(grad, want_grad, atol=1e-6)


def test_bfloat16_logits_compute_in_float32():
  logits = jnp.asarray(np.random.default_rng(2).standard_normal((T, C)), jnp.bfloat16)
  labels = np.arange(T) % C
  got = jax.jit(jaxrnn.per_step_cross_entropy)(logits, jnp.asarray(labels))
  assert got.dtype == jnp.float32
  z = np.asarray(logits.astype(jnp.float32), np.float64)
  np.testing.assert_allclose(got, [np_cross_entropy(z[t], labels[t]) for t in range(T)],
                             rtol=1e-5)


def test_float64(x64):
  logits, labels, clean_logits, clean_labels = _data(3)
  got = jax.jit(jaxrnn.labelling_loss)(logits.astype(jnp.float64), labels,
                                       jnp.asarray(LENGTHS))
  assert got.dtype == jnp.float64
  clean = np.asarray(np.where(np.isnan(logits), 0, logits), np.float64)
  np.testing.assert_allclose(got, np_labelling(clean, clean_labels, LENGTHS, "mean"),
                             rtol=1e-12)


# ---------------------------------------------------------------------------
# labelling_loss and language_model_loss

REDUCTIONS = ("mean", "sum", "last")


def every_reduction(loss, *args):
  """``{reduction: (per-sequence losses, grad of their sum wrt args[0])}``."""
  def one(reduction):
    per_sequence = lambda z: loss(z, *args[1:], reduction=reduction)  # noqa: E731
    return per_sequence(args[0]), jax.grad(lambda z: jnp.sum(per_sequence(z)))(args[0])
  return {reduction: one(reduction) for reduction in REDUCTIONS}


def test_labelling_loss_matches_numpy_with_nan_padding():
  logits, labels, clean_logits, clean_labels = _data(4)
  results = jax.jit(functools.partial(every_reduction, jaxrnn.labelling_loss))(
      logits, labels, jnp.asarray(LENGTHS))
  z = np.asarray(logits, np.float64)
  for reduction, (per_seq, grad) in results.items():
    want = np_labelling(z, clean_labels, LENGTHS, reduction)
    np.testing.assert_allclose(per_seq, want, rtol=1e-5, atol=1e-6, err_msg=reduction)
    assert np.all(np.isfinite(grad))
    want_grad = np.zeros((B, T, C))
    for b, n in enumerate(LENGTHS):
      steps = {"mean": range(n), "sum": range(n),
               "last": range(n - 1, n) if n else ()}[reduction]
      scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
      for t in steps:
        want_grad[b, t] = scale * (np.exp(np_log_softmax(z[b, t]))
                                   - np.eye(C)[clean_labels[b, t]])
    np.testing.assert_allclose(grad, want_grad, atol=1e-6, err_msg=reduction)


def test_labelling_loss_without_length_and_one_sequence():
  _, _, clean_logits, clean_labels = _data(5)
  z = jnp.asarray(clean_logits, jnp.float32)

  @jax.jit
  def losses(z, labels, lengths):
    return (jaxrnn.labelling_loss(z, labels),
            jaxrnn.labelling_loss(z[0], labels[0], 4, reduction="sum"),
            jax.vmap(lambda z, y, n: jaxrnn.labelling_loss(z, y, n))(z, labels, lengths))

  got, one, under_vmap = losses(z, jnp.asarray(clean_labels), jnp.asarray(LENGTHS))
  np.testing.assert_allclose(got, np_labelling(clean_logits, clean_labels, [T] * B, "mean"),
                             rtol=1e-5)
  assert one.shape == ()
  np.testing.assert_allclose(one, np_labelling(clean_logits[:1], clean_labels[:1], [4], "sum"),
                             rtol=1e-5)
  np.testing.assert_allclose(under_vmap, np_labelling(clean_logits, clean_labels, LENGTHS, "mean"),
                             rtol=1e-5, atol=1e-6)


def test_language_model_loss_matches_numpy():
  rng = np.random.default_rng(6)
  lengths = np.array([6, 3, 1, 0])
  logits = rng.standard_normal((4, T, C))
  tokens = rng.integers(0, C, (4, T))
  pad = np.arange(T)[None, :] >= lengths[:, None]
  # The logits at the last valid step predict nothing: junk them as well.
  unused = pad | (np.arange(T)[None, :] == lengths[:, None] - 1)
  junk_logits = np.where(unused[..., None], np.nan, logits)
  junk_tokens = np.where(pad, 10 ** 6, tokens)
  results = jax.jit(functools.partial(every_reduction, jaxrnn.language_model_loss))(
      jnp.asarray(junk_logits, jnp.float32), jnp.asarray(junk_tokens), jnp.asarray(lengths))
  for reduction, (got, grad) in results.items():
    want = np.zeros(4)
    for b, n in enumerate(lengths):
      pairs = [np_cross_entropy(logits[b, t], tokens[b, t + 1]) for t in range(n - 1)]
      if pairs:
        want[b] = {"sum": sum(pairs), "mean": np.mean(pairs), "last": pairs[-1]}[reduction]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=reduction)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(np.asarray(grad)[unused], 0.0)
    assert np.any(np.asarray(grad)[~unused] != 0.0)


def test_language_model_loss_without_length():
  rng = np.random.default_rng(7)
  logits = rng.standard_normal((T, C))
  tokens = rng.integers(0, C, (T,))
  got = jax.jit(jaxrnn.language_model_loss)(jnp.asarray(logits, jnp.float32),
                                            jnp.asarray(tokens))
  want = np.mean([np_cross_entropy(logits[t], tokens[t + 1]) for t in range(T - 1)])
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------------------
# last_step and pooled

LENGTH_CASES = (0, 1, 4, T)
WEIGHTS = np.arange(1.0, 4.0)


def _ys_with_junk(seed, n, junk=np.nan):
  ys = np.random.default_rng(seed).standard_normal((T, 3))
  clean = ys.copy()
  ys[n:] = junk
  return jnp.asarray(ys, jnp.float32), clean


def test_last_step_matches_indexing_and_gradient():
  # Every length, as a Python int (a constant) and as an array, in one program.
  @jax.jit
  def results(ys_by_n):
    out = {}
    for n, ys in zip(LENGTH_CASES, ys_by_n):
      def weighted(y, n=n):
        return jnp.sum(jaxrnn.last_step(y, jnp.asarray(n)) * WEIGHTS)
      out[n] = (jaxrnn.last_step(ys, n), jaxrnn.last_step(ys, jnp.asarray(n)),
                jax.grad(weighted)(ys))
    return out

  data = [_ys_with_junk(8, n) for n in LENGTH_CASES]
  for n, (by_int, by_array, grad) in results([ys for ys, _ in data]).items():
    clean = data[LENGTH_CASES.index(n)][1]
    want = clean[n - 1] if n else np.zeros(3)
    np.testing.assert_allclose(by_int, want, rtol=1e-6)
    np.testing.assert_allclose(by_array, want, rtol=1e-6)
    want_grad = np.zeros((T, 3))
    if n:
      want_grad[n - 1] = [1, 2, 3]
    np.testing.assert_array_equal(grad, want_grad)


def test_last_step_without_length_and_under_vmap():
  ys, clean = _ys_with_junk(9, T)

  @jax.jit
  def results(ys):
    batch = jnp.stack([ys, 2 * ys, 3 * ys])
    return jaxrnn.last_step(ys), jax.vmap(jaxrnn.last_step)(batch, jnp.array([2, 0, T]))

  last, got = results(ys)
  np.testing.assert_array_equal(last, clean[-1].astype(np.float32))
  np.testing.assert_allclose(got, [clean[1], np.zeros(3), 3 * clean[-1]], rtol=1e-6)


def test_pooled_matches_numpy_and_ignores_padding():
  # Every (mode, length), with a constant and with a traced length, in one program.
  cases = [(mode, n) for mode in ("mean", "max") for n in LENGTH_CASES]

  @jax.jit
  def results(big, nan, lengths):
    out = {}
    for i, (mode, n) in enumerate(cases):
      def weighted(y, k, mode=mode):
        return jnp.sum(jaxrnn.pooled(y, k, mode=mode) * WEIGHTS)
      out[mode, n] = (jaxrnn.pooled(big[i], n, mode=mode),
                      *jax.value_and_grad(weighted)(nan[i], lengths[i]))
    return out

  # Padding larger than any valid value: max must not pick it.
  big = [_ys_with_junk(10, n, junk=1e6) for _, n in cases]
  nan = [_ys_with_junk(10, n)[0] for _, n in cases]
  got = results([ys for ys, _ in big], nan, jnp.asarray([n for _, n in cases]))
  for i, (mode, n) in enumerate(cases):
    clean = big[i][1]
    constant, value, grad = got[mode, n]
    want = np.zeros(3) if n == 0 else (clean[:n].mean(0) if mode == "mean" else clean[:n].max(0))
    np.testing.assert_allclose(constant, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(value, want @ WEIGHTS, rtol=1e-6, atol=1e-6)
    want_grad = np.zeros((T, 3))
    if n and mode == "mean":
      want_grad[:n] = WEIGHTS / n
    elif n:
      want_grad[clean[:n].argmax(0), np.arange(3)] = WEIGHTS
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, err_msg=f"{mode} {n}")


def test_pooled_without_length_and_vmap():
  ys, clean = _ys_with_junk(11, T)

  @jax.jit
  def results(ys):
    return jaxrnn.pooled(ys), jax.vmap(lambda y, n: jaxrnn.pooled(y, n, mode="max"))(
        jnp.stack([ys, -ys]), jnp.array([3, 2]))

  mean, got = results(ys)
  np.testing.assert_allclose(mean, clean.mean(0), rtol=1e-6)
  np.testing.assert_allclose(got, [clean[:3].max(0), (-clean[:2]).max(0)], rtol=1e-6)


def test_classify_rnn_outputs_end_to_end():
  """An Elman + readout classifier on padded data: NaN padding changes nothing."""
  net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.elman(4), unroll=1), jaxrnn.readout(C))
  params = ref.random_params(net, 0, 2)
  xs = np.random.default_rng(12).standard_normal((B, T, 2)).astype(np.float32)
  lengths = jnp.array([6, 2, 3])
  labels = np.array([0, 3, 4])

  def loss(params, xs):
    ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs, length=lengths)
    logits = jax.vmap(jaxrnn.last_step)(ys, lengths)
    return jnp.mean(jaxrnn.classification_loss(logits, labels))

  f = jax.jit(jax.value_and_grad(loss))
  clean_value, clean_grad = f(params, jnp.asarray(xs))
  xs[1, 2:] = np.nan
  xs[2, 3:] = np.nan
  value, grad = f(params, jnp.asarray(xs))
  np.testing.assert_array_equal(value, clean_value)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(clean_grad)):
    np.testing.assert_array_equal(a, b)
  # Reference: the NumPy Elman over the valid steps, then the readout.
  p_rnn, p_out = ref.np_params(params[0]), ref.np_params(params[1])
  want = []
  for b, n in enumerate([6, 2, 3]):
    _, h = ref.run(ref.elman_step, p_rnn, xs[b], np.zeros(4), 4, n)
    want.append(np_cross_entropy(h @ p_out["W_hy"] + p_out["b_y"], labels[b]))
  want = np.mean(want)
  np.testing.assert_allclose(value, want, rtol=1e-5)


# ---------------------------------------------------------------------------
# Errors


def zeros(shape, dtype=np.float32):
  """Host zeros: the checks read shapes and dtypes, nothing to compile."""
  return np.zeros(shape, dtype)


@pytest.mark.parametrize("call, error, match", [
    (lambda: jaxrnn.per_step_cross_entropy(zeros(C), zeros((), jnp.int32)),
     ValueError, r"^logits: expected shape \(\.\.\., T, C\), got shape \(5,\)$"),
    (lambda: jaxrnn.per_step_cross_entropy(zeros((T, C)), zeros(T)),
     TypeError, r"^labels: expected integer class indices, got dtype float32$"),
    (lambda: jaxrnn.per_step_cross_entropy(zeros((T, C)), zeros(T + 1, jnp.int32)),
     ValueError, r"^labels: expected shape \(6,\) \(logits\.shape\[:-1\]\), got \(7,\)$"),
    (lambda: jaxrnn.classification_loss(zeros((2, C), jnp.int32), zeros(2, jnp.int32)),
     TypeError, r"^logits: expected a floating-point array, got dtype int32$"),
    (lambda: jaxrnn.labelling_loss(zeros((B, T, C)), zeros((B, T), jnp.int32),
                                   zeros(B)),
     TypeError, r"^length: expected integers, got dtype float32$"),
    (lambda: jaxrnn.labelling_loss(zeros((B, T, C)), zeros((B, T), jnp.int32),
                                   zeros(2, jnp.int32)),
     ValueError, r"^length: expected shape \(3,\) \(one length per sequence\), got \(2,\)$"),
    (lambda: jaxrnn.labelling_loss(zeros((T, C)), zeros(T, jnp.int32), reduction="max"),
     ValueError, r"^reduction: expected one of \('sum', 'mean', 'last'\), got 'max'$"),
    (lambda: jaxrnn.last_step(zeros((B, T, C))),
     ValueError, r"^ys: last_step expects shape \(T, O\), got shape \(3, 6, 5\) \(rank 3\); "
                 r"last_step works on ONE sequence: for a minibatch use "
                 r"jax\.vmap\(last_step\) over ys and length$"),
    (lambda: jaxrnn.last_step(zeros((T, C)), T + 1),
     ValueError, r"^length: expected an integer in \[0, T\] = \[0, 6\], got 7$"),
    (lambda: jaxrnn.pooled(zeros((T, C)), 2, mode="sum"),
     ValueError, r"^mode: expected one of \('mean', 'max'\), got 'sum'$"),
    (lambda: jaxrnn.pooled(zeros(T), 2),
     ValueError, r"^ys: pooled expects shape \(T, O\), got shape \(6,\) \(rank 1\)$"),
])
def test_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()
