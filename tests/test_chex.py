"""Cells and layers under chex: jit, eager and device variants against a Python loop.

The reference is written here, independently of the layers' scan: a Python
``for`` loop over ``cell.cell_apply``, one sequence at a time, that never
reads a padded step (the padding holds NaN). ``chex.assert_max_traces``
shows that new ``length`` and ``reset`` values and new batches of the same
padded shape never retrace a jitted layer.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxrnn

B, T, D = 3, 6, 2
LENGTHS = np.array([6, 4, 0], np.int32)  # full, padded, empty
TOL = {"rtol": 1e-5, "atol": 1e-5}

# (name, cell factory, rnn options, output size)
CELLS = (
    ("elman", lambda: jaxrnn.elman(4), {}, 4),
    ("elman_relu", lambda: jaxrnn.elman(4, activation="relu"), {}, 4),
    ("lstm", lambda: jaxrnn.lstm(4), {}, 4),
    ("lstm_proj_peephole", lambda: jaxrnn.lstm(4, proj_size=3, peephole=True), {}, 3),
    ("gru", lambda: jaxrnn.gru(4), {}, 4),
    ("gru_reset_before", lambda: jaxrnn.gru(4, reset_after=False), {}, 4),
    ("mgu", lambda: jaxrnn.mgu(4), {}, 4),
    ("min_gru", lambda: jaxrnn.min_gru(4), {"method": "sequential"}, 4),
    ("min_gru_parallel", lambda: jaxrnn.min_gru(4), {"method": "parallel"}, 4),
    ("min_lstm_parallel", lambda: jaxrnn.min_lstm(4), {"method": "parallel"}, 4),
    ("lru", lambda: jaxrnn.lru(4), {"method": "sequential"}, D),  # reads out to D
)


# ---------------------------------------------------------------------------
# The reference: a Python loop over cell_apply.


def loop_rnn(cell, params, xs, length, *, reverse=False, reset=None, carry=None):
  """One sequence, step by step: ``(ys, carry)`` with ys zero at padding."""
  step = jax.jit(cell.cell_apply)
  initial = cell.init_carry(xs.dtype)
  carry = initial if carry is None else carry
  n = int(length)
  y_shape = jax.eval_shape(cell.cell_apply, params, carry, xs[0])[1]
  ys = [jnp.zeros(y_shape.shape, y_shape.dtype)] * xs.shape[0]
  for i, t in enumerate(range(n - 1, -1, -1) if reverse else range(n)):
    # A segment starts at t (forward) or ends at t (reverse: t + 1 starts one).
    starts = reset is not None and (reset[t + 1] if reverse and t + 1 < n else
                                    (reset[t] if not reverse else False))
    if starts:
      carry = initial
    carry, ys[t] = step(params, carry, xs[t])
  return jnp.stack(ys), carry


def loop_batch(fn, xs, lengths, **per_example):
  """``fn(x, n, **kw)`` on every example; outputs stacked over the batch."""
  take = lambda tree, b: jax.tree_util.tree_map(lambda leaf: leaf[b], tree)  # noqa: E731
  outs = [fn(xs[b], lengths[b], **{k: take(v, b) for k, v in per_example.items()})
          for b in range(xs.shape[0])]
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *outs)


def readout_ref(params, xs, length):
  valid = (np.arange(xs.shape[0]) < int(length))[:, None]
  return jnp.where(valid, xs @ params.W_hy + params.b_y[None, :], 0.0), ()


def inputs(seed=0, lengths=LENGTHS):
  """``(xs, lengths)`` with NaN in every padded step."""
  xs = np.random.default_rng(seed).standard_normal((len(lengths), T, D)).astype(np.float32)
  for b, n in enumerate(lengths):
    xs[b, n:] = np.nan
  return jnp.asarray(xs), jnp.asarray(lengths)


def batched(layer):
  """``jax.vmap(layer.apply)`` over a batch, params shared."""
  return lambda params, xs, lengths, **kw: jax.vmap(layer.apply, in_axes=(None, 0))(
      params, xs, length=lengths, **kw)


# ---------------------------------------------------------------------------


class CellsAndLayersTest(chex.TestCase):
  """Every variant (jit, eager, device-placed args) equals the Python loop."""

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(*CELLS)
  def test_rnn_matches_the_loop(self, make_cell, options, output_size):
    cell = make_cell()
    layer = jaxrnn.rnn(cell, **options)
    params = layer.init_params(jax.random.key(1), D)
    xs, lengths = inputs()
    ys, carry = self.variant(batched(layer))(params, xs, lengths)
    chex.assert_shape(ys, (B, T, output_size))
    chex.assert_tree_all_finite((ys, carry))
    ref_ys, ref_carry = loop_batch(functools.partial(loop_rnn, cell, params), xs, lengths)
    chex.assert_trees_all_close(ys, ref_ys, **TOL)
    chex.assert_trees_all_close(carry, ref_carry, **TOL)
    chex.assert_trees_all_equal(ys[1, 4:], jnp.zeros_like(ys[1, 4:]))  # exact zeros
    chex.assert_trees_all_equal(carry, jax.tree_util.tree_map(
        lambda c, c0: c.at[2].set(c0), carry, cell.init_carry()))  # length 0: initial

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(*CELLS)
  def test_reversed_rnn_with_resets_and_a_carry_matches_the_loop(
      self, make_cell, options, output_size):
    cell = make_cell()
    xs, lengths = inputs(seed=2)
    reset = jnp.asarray(np.random.default_rng(3).random((B, T)) < 0.3)
    carry0 = jax.tree_util.tree_map(
        lambda c: jax.random.normal(jax.random.key(4), (B,) + c.shape, c.dtype),
        cell.init_carry())
    for reverse in (False, True):
      layer = jaxrnn.rnn(cell, reverse=reverse, **options)
      params = layer.init_params(jax.random.key(1), D)
      ys, carry = self.variant(batched(layer))(params, xs, lengths, reset=reset, carry=carry0)
      ref_ys, ref_carry = loop_batch(
          functools.partial(loop_rnn, cell, params, reverse=reverse), xs, lengths,
          reset=reset, carry=carry0)
      chex.assert_shape(ys, (B, T, output_size))
      chex.assert_trees_all_close(ys, ref_ys, **TOL)
      chex.assert_trees_all_close(carry, ref_carry, **TOL)

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(
      ("concat", "concat", lambda a, b: jnp.concatenate([a, b], -1)),
      ("sum", "sum", lambda a, b: a + b),
  )
  def test_bidirectional_matches_two_loops(self, merge, merge_ref):
    forward, backward = jaxrnn.lstm(4), jaxrnn.gru(4)
    layer = jaxrnn.bidirectional(forward, backward, merge=merge)
    params = layer.init_params(jax.random.key(5), D)
    xs, lengths = inputs(seed=6)
    ys, carry = self.variant(batched(layer))(params, xs, lengths)
    f_ys, f_carry = loop_batch(functools.partial(loop_rnn, forward, params.forward), xs, lengths)
    b_ys, b_carry = loop_batch(
        functools.partial(loop_rnn, backward, params.backward, reverse=True), xs, lengths)
    chex.assert_shape(ys, (B, T, 8 if merge == "concat" else 4))
    chex.assert_trees_all_close(ys, merge_ref(f_ys, b_ys), **TOL)
    chex.assert_trees_all_close(carry, jaxrnn.BidirectionalCarry(f_carry, b_carry), **TOL)

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_stack_matches_chained_loops(self):
    first, second = jaxrnn.gru(5), jaxrnn.elman(4)
    layer = jaxrnn.stack(jaxrnn.rnn(first), jaxrnn.rnn(second, reverse=True), jaxrnn.readout(3))
    params = layer.init_params(jax.random.key(7), D)
    params = params[:2] + (params[2]._replace(b_y=jnp.ones(3)),)  # y != 0 at h == 0
    xs, lengths = inputs(seed=8)
    ys, carries = self.variant(batched(layer))(params, xs, lengths)

    def reference(x, n):
      h1, c1 = loop_rnn(first, params[0], x, n)
      h2, c2 = loop_rnn(second, params[1], h1, n, reverse=True)
      out, _ = readout_ref(params[2], h2, n)
      return out, (c1, c2, ())

    ref_ys, ref_carries = loop_batch(reference, xs, lengths)
    chex.assert_shape(ys, (B, T, 3))
    chex.assert_trees_all_close(ys, ref_ys, **TOL)
    chex.assert_trees_all_close(carries, ref_carries, **TOL)


# ---------------------------------------------------------------------------
# Tracing: new values never retrace; only a new padded shape does.

LAYERS = (
    ("rnn", lambda: jaxrnn.rnn(jaxrnn.lstm(4))),
    ("bidirectional", lambda: jaxrnn.bidirectional(jaxrnn.gru(3), jaxrnn.gru(3))),
    ("stack", lambda: jaxrnn.stack(jaxrnn.rnn(jaxrnn.mgu(4)), jaxrnn.readout(2))),
)


@pytest.mark.parametrize("name, make_layer", LAYERS)
def test_lengths_resets_and_new_batches_never_retrace(name, make_layer):
  layer = make_layer()
  params = layer.init_params(jax.random.key(0), D)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss_and_grad(params, xs, lengths, reset):
    def loss(p):
      ys, _ = jax.vmap(layer.apply, in_axes=(None, 0))(p, xs, length=lengths, reset=reset)
      return jnp.sum(ys ** 2)
    return jax.value_and_grad(loss)(params)

  rng = np.random.default_rng(1)
  for seed in range(4):  # new values, same padded shape (B, T, D)
    lengths = rng.integers(0, T + 1, size=B).astype(np.int32)
    xs, lengths = inputs(seed=seed, lengths=lengths)
    reset = jnp.asarray(rng.random((B, T)) < 0.3)
    value, grads = loss_and_grad(params, xs, lengths, reset)
    chex.assert_tree_all_finite((value, grads))
  with pytest.raises(AssertionError, match="retrac|traced"):  # the counter is live
    loss_and_grad(params, jnp.zeros((B, T + 1, D)), lengths, jnp.zeros((B, T + 1), bool))


def test_python_int_lengths_of_one_sequence_never_retrace_once_traced():
  """A jitted apply of ONE sequence: length is an argument, not a constant."""
  layer = jaxrnn.rnn(jaxrnn.gru(3))
  params = layer.init_params(jax.random.key(0), D)
  chex.clear_trace_counter()
  apply = jax.jit(chex.assert_max_traces(
      lambda p, x, n: layer.apply(p, x, length=n), n=1))
  xs = jnp.ones((T, D))
  outs = [apply(params, xs, jnp.int32(n))[0] for n in range(T + 1)]
  for n, ys in enumerate(outs):
    chex.assert_trees_all_equal(ys[n:], jnp.zeros_like(ys[n:]))
