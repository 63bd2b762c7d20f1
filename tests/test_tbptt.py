"""Truncated BPTT against full BPTT and a hand-written Python loop over chunks.

The model in most tests is an Elman network written out step by step in this
file (not jaxrnn's scan), with a squared-error loss summed over valid steps.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
import reference as ref

B, T, D, H = 3, 11, 2, 4
LENGTHS = np.array([11, 6, 3])


class Params(NamedTuple):
  W_x: jax.Array  # (D, H)
  W_h: jax.Array  # (H, H)
  b: jax.Array  # (H,)


def init_params(seed=0):
  rng = np.random.default_rng(seed)
  return Params(*(jnp.asarray(0.6 * rng.standard_normal(s), jnp.float32)
                  for s in [(D, H), (H, H), (H,)]))


def elman_loss(params, h, xs, targets, lengths):
  """Sum over valid steps of |h_t - target_t|^2; steps t >= length keep h."""
  def step(carry, inputs):
    h, loss = carry
    x_t, target_t, t = inputs
    h_new = jnp.tanh(x_t @ params.W_x + h @ params.W_h + params.b[None])
    valid = (t < lengths)[:, None]
    loss = loss + jnp.sum(jnp.where(valid, (h_new - target_t) ** 2, 0.0))
    return (jnp.where(valid, h_new, h), loss), None

  steps = (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(targets, 0, 1), jnp.arange(xs.shape[1]))
  (h, loss), _ = jax.lax.scan(step, (h, jnp.zeros(())), steps)
  return loss, h


def loss_fn(params, carry, chunk):
  xs, targets, lengths = chunk
  return elman_loss(params, carry, xs, targets, lengths)


def data(seed=1):
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((B, T, D)).astype(np.float32)
  targets = rng.standard_normal((B, T, H)).astype(np.float32)
  return xs, targets


@functools.partial(jax.jit, static_argnums=3)  # eagerly, each op would compile alone
def make_chunks(xs, targets, lengths, chunk_length):
  num_chunks = -(-xs.shape[1] // chunk_length)
  return jaxrnn.split_chunks((xs, targets), chunk_length) + (
      jaxrnn.chunk_lengths(jnp.asarray(lengths), chunk_length, num_chunks),)


def recorder(num_chunks):
  """An optimizer that never moves the params and records every gradient."""

  def init(params):
    return (jnp.zeros((), jnp.int32),
            jax.tree.map(lambda p: jnp.zeros((num_chunks,) + p.shape, p.dtype), params))

  def update(grads, state, params=None):
    del params
    k, seen = state
    seen = jax.tree.map(lambda s, g: s.at[k].set(g), seen, grads)
    return jax.tree.map(jnp.zeros_like, grads), (k + 1, seen)

  return optax.GradientTransformation(init, update)


# Compiled once for the module: the per-chunk gradient of the Python loop,
# the full-sequence loss and gradient, and the parameter update. One worker
# runs every test here, so that each compiles once.
pytestmark = pytest.mark.xdist_group("tbptt")
CHUNK_GRAD = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
FULL_GRAD = jax.jit(jax.value_and_grad(elman_loss, has_aux=True))
APPLY_UPDATES = jax.jit(optax.apply_updates)
ADAM = optax.adam(0.05)


def python_loop(params, opt_state, carry, xs, targets, lengths, chunk_length,
                optimizer, reset=None, initial=None):
  """The reference: slice by hand, one value_and_grad and update per chunk."""
  num_chunks = -(-xs.shape[1] // chunk_length)
  grad_fn = CHUNK_GRAD
  update = jax.jit(optimizer.update)
  losses = []
  for k in range(num_chunks):
    lo, hi = k * chunk_length, (k + 1) * chunk_length
    x_k = np.zeros((B, chunk_length, D), np.float32)
    y_k = np.zeros((B, chunk_length, H), np.float32)
    x_k[:, :xs[:, lo:hi].shape[1]] = xs[:, lo:hi]
    y_k[:, :targets[:, lo:hi].shape[1]] = targets[:, lo:hi]
    n_k = np.array([min(max(int(n) - lo, 0), chunk_length) for n in lengths])
    if reset is not None:
      carry = jnp.where(jnp.asarray(reset[k])[:, None], jnp.asarray(initial)[None], carry)
    (loss, carry), grads = grad_fn(
        params, carry, (jnp.asarray(x_k), jnp.asarray(y_k), jnp.asarray(n_k)))
    updates, opt_state = update(grads, opt_state, params)
    params = APPLY_UPDATES(params, updates)
    carry = jax.lax.stop_gradient(carry)
    losses.append(loss)
  return params, opt_state, carry, jnp.stack(losses)


@functools.lru_cache(maxsize=None)
def adam_run():
  """``jax.jit(tbptt(loss_fn, ADAM))``, shared by the tests that run it."""
  return jax.jit(jaxrnn.tbptt(loss_fn, ADAM))


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, **tol)


# ---------------------------------------------------------------------------
# split_chunks, chunk_lengths, reset_carry


def test_split_chunks_by_hand():
  xs = np.arange(2 * 7 * 3).reshape(2, 7, 3)
  got = jaxrnn.split_chunks(xs, 3, pad_value=-1)
  assert got.shape == (3, 2, 3, 3)
  for k in range(3):
    for b in range(2):
      for i in range(3):
        t = 3 * k + i
        want = xs[b, t] if t < 7 else [-1, -1, -1]
        np.testing.assert_array_equal(got[k, b, i], want)
  whole = jaxrnn.split_chunks(xs, 7)
  assert whole.shape == (1, 2, 7, 3)
  np.testing.assert_array_equal(whole[0], xs)
  longer = jaxrnn.split_chunks(xs, 10)
  assert longer.shape == (1, 2, 10, 3)
  np.testing.assert_array_equal(longer[0, :, 7:], 0)


def test_split_chunks_pytree_and_jit():
  xs, targets = data()
  got = jax.jit(lambda t: jaxrnn.split_chunks(t, 4))({"x": xs, "y": targets})
  assert got["x"].shape == (3, B, 4, D) and got["y"].shape == (3, B, 4, H)
  np.testing.assert_array_equal(got["y"][1, 2], targets[2, 4:8])


def test_chunk_lengths_by_hand():
  got = jaxrnn.chunk_lengths(jnp.asarray(LENGTHS), 4, 3)
  want = [[min(max(n - 4 * k, 0), 4) for n in LENGTHS] for k in range(3)]
  np.testing.assert_array_equal(got, want)
  assert got.dtype == jnp.int32 and got.shape == (3, B)


def test_reset_carry_rows():
  carry = jaxrnn.LSTMState(h=jnp.arange(6.0).reshape(3, 2), c=-jnp.arange(6.0).reshape(3, 2))
  initial = jaxrnn.LSTMState(h=jnp.array([7.0, 8.0]), c=jnp.array([9.0, 10.0]))
  got = jax.jit(jaxrnn.reset_carry)(carry, jnp.array([True, False, True]), initial)
  np.testing.assert_array_equal(got.h, [[7, 8], [2, 3], [7, 8]])
  np.testing.assert_array_equal(got.c, [[9, 10], [-2, -3], [9, 10]])


def zeros(shape, dtype=np.float32):
  """Host zeros: the checks read shapes and dtypes, nothing to compile."""
  return np.zeros(shape, dtype)


@pytest.mark.parametrize("call, error, match", [
    (lambda: jaxrnn.split_chunks(zeros((2, 5)), 0),
     ValueError, r"^chunk_length: expected a positive int, got 0$"),
    (lambda: jaxrnn.split_chunks(zeros(5), 2),
     ValueError, r"^xs: expected shape \(B, T, \.\.\.\), got shape \(5,\)$"),
    (lambda: jaxrnn.split_chunks((zeros((2, 5)), zeros((2, 4))), 2),
     ValueError, r"^xs: every array needs the same \(B, T\), got shapes \[\(2, 5\), "
                 r"\(2, 4\)\]$"),
    (lambda: jaxrnn.chunk_lengths(zeros(3), 2, 2), TypeError,
     r"^lengths: expected integers, got dtype float32$"),
    (lambda: jaxrnn.chunk_lengths(zeros((3, 1), jnp.int32), 2, 2),
     ValueError, r"^lengths: expected shape \(B,\), got shape \(3, 1\)$"),
    (lambda: jaxrnn.chunk_lengths(zeros(3, jnp.int32), 2, 0), ValueError,
     r"^num_chunks: expected a positive int, got 0$"),
    (lambda: jaxrnn.reset_carry(zeros((3, 2)), zeros(3, bool), zeros((3, 2))),
     ValueError, r"^initial: leaf \(root\) has shape \(3, 2\) but carry's is \(3, 2\); "
                 r"expected carry leaves \(B, \.\.\.\) = \(3, 3, 2\) for ONE example's initial "
                 r"carry and reset of shape \(B,\)$"),
    (lambda: jaxrnn.reset_carry(zeros((3, 2)), zeros(3), zeros(2)),
     TypeError, r"^reset: expected booleans, got dtype float32$"),
    (lambda: jaxrnn.reset_carry(zeros((3, 2)), zeros((3, 1), bool), zeros(2)),
     ValueError, r"^reset: expected shape \(B,\), got shape \(3, 1\)$"),
    (lambda: jaxrnn.reset_carry((zeros((3, 2)),), zeros(3, bool), zeros(2)),
     TypeError, r"^initial: expected a carry structured like carry \(PyTreeDef\(\(\*,\)\)\), "
                r"got PyTreeDef\(\*\)$"),
    (lambda: jaxrnn.tbptt(loss_fn, 50),
     TypeError, r"^optimizer: expected an optax-like GradientTransformation with init and "
                r"update, got int; cut the sequences first with split_chunks\(xs, "
                r"chunk_length\) and pass the chunks to the returned function$"),
    (lambda: jaxrnn.tbptt_step(3, optax.sgd(0.1)), TypeError,
     r"^loss_fn: expected a callable, got int$"),
])
def test_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_run_errors():
  xs, targets = data()
  params = init_params()
  optimizer = optax.sgd(0.1)
  run = jaxrnn.tbptt(loss_fn, optimizer)
  chunks = make_chunks(xs, targets, LENGTHS, 4)
  with pytest.raises(ValueError, match=r"^reset: expected shape \(num_chunks, B\) = \(3, 3\), "
                     r"got \(2, 3\)$"):
    run(params, optimizer.init(params), jnp.zeros((B, H)), chunks, jnp.zeros((2, B), bool))
  with pytest.raises(TypeError, match=r"^reset: expected booleans, got dtype float32$"):
    run(params, optimizer.init(params), jnp.zeros((B, H)), chunks, jnp.zeros((3, B)))
  with pytest.raises(ValueError, match=r"^initial: leaf \(root\) has shape \(5,\) but carry's "
                     r"is \(3, 4\); expected carry leaves \(B, \.\.\.\) = \(3, 5\) for ONE "
                     r"example's initial carry and reset of shape \(B,\)$"):
    run(params, optimizer.init(params), jnp.zeros((B, H)), chunks, jnp.zeros((3, B), bool),
        jnp.zeros(5))
  bad = jaxrnn.tbptt(lambda p, c, ch: (jnp.zeros(B), c), optimizer)
  with pytest.raises(ValueError, match=r"^loss_fn: must return a scalar floating loss, got "
                     r"shape \(3,\) dtype float32; reduce over the batch \(e\.g\. jnp\.mean\)(\n|$)"):
    bad(params, optimizer.init(params), jnp.zeros((B, H)), chunks)
  bad = jaxrnn.tbptt(lambda p, c, ch: (jnp.zeros(()), (c,)), optimizer)
  with pytest.raises(TypeError, match=r"^loss_fn: must return \(loss, new_carry\) with "
                     r"new_carry structured like carry \(PyTreeDef\(\*\)\), got "
                     r"PyTreeDef\(\(\*,\)\)(\n|$)"):
    bad(params, optimizer.init(params), jnp.zeros((B, H)), chunks)


# ---------------------------------------------------------------------------
# tbptt


@pytest.mark.parametrize("chunk_length", [T, 16])
def test_one_chunk_is_full_bptt(chunk_length):
  xs, targets = data()
  params = init_params()
  h0 = jnp.asarray(np.random.default_rng(2).standard_normal((B, H)), jnp.float32)
  run = jax.jit(jaxrnn.tbptt(loss_fn, recorder(1)))
  chunks = make_chunks(xs, targets, LENGTHS, chunk_length)
  _, (count, seen), _, losses = run(params, recorder(1).init(params), h0, chunks)
  assert int(count) == 1
  (loss, h_final), grads = FULL_GRAD(
      params, h0, jnp.asarray(xs), jnp.asarray(targets), jnp.asarray(LENGTHS))
  np.testing.assert_allclose(losses, [loss], rtol=1e-6)
  assert_trees_close(jax.tree.map(lambda s: s[0], seen), grads, rtol=1e-5, atol=1e-6)


def test_chunks_match_python_loop_with_adam():
  xs, targets = data(3)
  params = init_params(4)
  optimizer = ADAM
  h0 = jnp.zeros((B, H))
  run = adam_run()
  got = run(params, optimizer.init(params), h0, make_chunks(xs, targets, LENGTHS, 4))
  want = python_loop(params, optimizer.init(params), h0, xs, targets, LENGTHS, 4, optimizer)
  assert_trees_close(got, want, rtol=2e-5, atol=1e-6)
  # Three updates happened, and truncation changed the gradient: the first
  # chunk's recorded gradient differs from the full-sequence gradient.
  assert int(got[1][0].count) == 3
  _, (_, seen), _, _ = jax.jit(jaxrnn.tbptt(loss_fn, recorder(3)))(
      params, recorder(3).init(params), h0, make_chunks(xs, targets, LENGTHS, 4))
  full = FULL_GRAD(params, h0, jnp.asarray(xs), jnp.asarray(targets),
                   jnp.asarray(LENGTHS))[1]
  summed = jax.tree.map(lambda s: jnp.sum(s, axis=0), seen)
  assert not np.allclose(summed.W_h, full.W_h, rtol=1e-3)


def test_resets_match_python_loop():
  xs, targets = data(5)
  params = init_params(6)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
  h0 = jnp.asarray(np.random.default_rng(7).standard_normal((B, H)), jnp.float32)
  initial = jnp.asarray([0.5, -0.5, 0.25, 0.0], jnp.float32)
  reset = np.array([[True, False, False], [False, True, False], [False, True, True]])
  lengths = np.array([T, T, T])
  run = jax.jit(jaxrnn.tbptt(loss_fn, optimizer))
  got = run(params, optimizer.init(params), h0, make_chunks(xs, targets, lengths, 4),
            jnp.asarray(reset), initial)
  want = python_loop(params, optimizer.init(params), h0, xs, targets, lengths, 4,
                     optimizer, reset, initial)
  assert_trees_close(got, want, rtol=2e-5, atol=1e-6)


def test_reset_makes_a_row_independent_of_its_past():
  xs, targets = data(8)
  params = init_params(9)
  optimizer = recorder(3)
  reset = jnp.asarray(np.array([[False] * B, [False, True, False], [False] * B]))
  run = jax.jit(jaxrnn.tbptt(loss_fn, optimizer))
  lengths = np.full(B, T)

  def go(xs, h0, reset):
    return run(params, optimizer.init(params), h0, make_chunks(xs, targets, lengths, 4), reset)

  h0 = jnp.zeros((B, H))
  other_xs, other_h0 = xs.copy(), h0.at[1].set(3.0)
  other_xs[1, :4] = 10.0 * np.random.default_rng(10).standard_normal((4, D))
  base, other = go(xs, h0, reset), go(other_xs, other_h0, reset)
  _, (_, seen_a), carry_a, losses_a = base
  _, (_, seen_b), carry_b, losses_b = other
  assert not np.allclose(losses_a[0], losses_b[0])  # chunk 0 saw different data
  np.testing.assert_allclose(losses_a[1:], losses_b[1:], rtol=1e-6)
  np.testing.assert_allclose(carry_a, carry_b, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(seen_a), jax.tree.leaves(seen_b)):
    np.testing.assert_allclose(a[1:], b[1:], rtol=1e-5, atol=1e-6)
  # Without the reset, row 1's past does reach chunks 1 and 2.
  no_reset = jnp.zeros((3, B), bool)
  _, _, _, losses_c = go(xs, h0, no_reset)
  _, _, _, losses_d = go(other_xs, other_h0, no_reset)
  assert not np.allclose(losses_c[1:], losses_d[1:], rtol=1e-4)


def test_carry_stops_gradients_between_chunks():
  """d(loss of chunk 1)/d(inputs of chunk 0) is zero; without truncation it is not."""
  xs, targets = data(11)
  params = init_params(12)
  optimizer = optax.sgd(0.0)
  run = jaxrnn.tbptt(loss_fn, optimizer)
  h0 = jnp.zeros((B, H))
  lengths = np.full(B, T)

  def second_chunk_loss(xs):
    chunks = make_chunks(xs, targets, lengths, 4)
    return run(params, optimizer.init(params), h0, chunks)[3][1]

  grad = jax.jit(jax.grad(second_chunk_loss))(jnp.asarray(xs))
  np.testing.assert_array_equal(grad[:, :4], 0.0)
  assert np.all(np.abs(grad[:, 4:8]).sum(-1) > 0)
  np.testing.assert_array_equal(grad[:, 8:], 0.0)

  def untruncated(xs):  # the same loss with the carry's gradient kept
    _, h = elman_loss(params, h0, xs[:, :4], targets[:, :4], jnp.asarray(lengths))
    return elman_loss(params, h, xs[:, 4:8], targets[:, 4:8], jnp.asarray(lengths))[0]

  assert np.abs(jax.jit(jax.grad(untruncated))(jnp.asarray(xs))[:, :4]).sum() > 1e-3


def test_tbptt_step_matches_run_and_stops_carry_gradient():
  xs, targets = data(13)
  params = init_params(14)
  optimizer = ADAM
  chunks = make_chunks(xs, targets, LENGTHS, 4)
  h0 = jnp.zeros((B, H))
  step = jax.jit(jaxrnn.tbptt_step(loss_fn, optimizer))
  state = (params, optimizer.init(params), h0)
  losses = []
  for k in range(3):
    *state, loss = step(*state, jax.tree.map(lambda c: c[k], chunks))
    losses.append(loss)
  got = adam_run()(params, optimizer.init(params), h0, chunks)
  assert_trees_close((*state, jnp.stack(losses)), got, rtol=1e-6, atol=1e-7)
  chunk0 = jax.tree.map(lambda c: c[0], chunks)
  d_carry = jax.jit(jax.grad(
      lambda h: jnp.sum(step(params, optimizer.init(params), h, chunk0)[2])))(jnp.ones((B, H)))
  np.testing.assert_array_equal(d_carry, 0.0)


def test_with_a_jaxrnn_lstm_layer():
  """An LSTMState carry through jaxrnn layers: one chunk == full BPTT, padded rows pass."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H), unroll=1)
  params = ref.random_params(layer, 0, D)
  xs, targets = data(15)

  def layer_loss(params, carry, chunk):
    xs, targets, lengths = chunk
    ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, length=lengths, carry=carry)
    per_step = jnp.sum((ys - targets) ** 2, axis=-1)
    return jnp.sum(jaxrnn.sequence_loss(per_step, lengths)), carry

  carry0 = jax.tree.map(lambda c: jnp.zeros((B,) + c.shape), layer.init_carry())
  run = jax.jit(jaxrnn.tbptt(layer_loss, recorder(1)))
  _, (_, seen), carry, _ = run(params, recorder(1).init(params), carry0,
                               make_chunks(xs, targets, LENGTHS, 12))
  (_, full_carry), grads = jax.jit(jax.value_and_grad(layer_loss, has_aux=True))(
      params, carry0, (jnp.asarray(xs), jnp.asarray(targets), jnp.asarray(LENGTHS)))
  assert_trees_close(jax.tree.map(lambda s: s[0], seen), grads, rtol=1e-5, atol=1e-6)
  assert_trees_close(carry, full_carry, rtol=1e-6, atol=1e-7)
