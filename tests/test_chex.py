"""Cells and layers under chex: jit, eager and device variants against a Python loop.

The reference is written here, independently of the layers' scan: a Python
``for`` loop over ``cell.cell_apply``, one sequence at a time, that never
reads a padded step (the padding holds NaN). The inputs are host (NumPy)
arrays: the ``without_jit`` variant runs eagerly on them, ``with_device``
eagerly on their device copies, ``with_jit`` compiled.
``chex.assert_max_traces`` shows that new ``length`` and ``reset`` values and
new batches of the same padded shape never retrace a jitted layer.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxrnn
import reference as ref

B, T, D = 3, 6, 2
LENGTHS = np.array([6, 4, 0], np.int32)  # full, padded, empty
TOL = {"rtol": 1e-5, "atol": 1e-5}

# name: (cell, rnn options, output size). Built once: the loop's jitted step
# compiles once per cell for the whole module.
CELLS = {
    "elman": (jaxrnn.elman(4), {}, 4),
    "elman_relu": (jaxrnn.elman(4, activation="relu"), {}, 4),
    "lstm": (jaxrnn.lstm(4), {}, 4),
    "lstm_proj_peephole": (jaxrnn.lstm(4, proj_size=3, peephole=True), {}, 3),
    "gru": (jaxrnn.gru(4), {}, 4),
    "gru_reset_before": (jaxrnn.gru(4, reset_after=False), {}, 4),
    "mgu": (jaxrnn.mgu(4), {}, 4),
    "min_gru": (jaxrnn.min_gru(4), {"method": "sequential"}, 4),
    "min_gru_parallel": (jaxrnn.min_gru(4), {"method": "parallel"}, 4),
    "min_lstm_parallel": (jaxrnn.min_lstm(4), {"method": "parallel"}, 4),
    "lru": (jaxrnn.lru(4), {"method": "sequential"}, D),  # reads out to D
}

# Pairwise, not the full product. A run compiles one program per (cell,
# variant, option); the options are: no reset and no carry given, resets
# and an initial carry, and the same reversed. The three variants take the
# options in rotation, option = (cell index + variant index) mod 3, a Latin
# square: each cell runs under every variant and with every option, and
# each variant meets every option (33 programs instead of 99).
VARIANTS = (chex.ChexVariantType.WITH_JIT, chex.ChexVariantType.WITHOUT_JIT,
            chex.ChexVariantType.WITH_DEVICE)
OPTIONS = ("plain", "resets_and_carry", "reversed_resets_and_carry")


# ---------------------------------------------------------------------------
# The reference: a Python loop over cell_apply.


@functools.lru_cache(maxsize=None)
def jitted_step(name):
  return jax.jit(CELLS[name][0].cell_apply)


def loop_rnn(name, params, xs, length, *, reverse=False, reset=None, carry=None):
  """One sequence, step by step: ``(ys, carry)`` with ys zero at padding."""
  cell, step = CELLS[name][0], jitted_step(name)
  initial = cell.init_carry(xs.dtype)
  carry = initial if carry is None else carry
  n = int(length)
  y_shape = jax.eval_shape(cell.cell_apply, params, carry, xs[0])[1]
  ys = [np.zeros(y_shape.shape, y_shape.dtype)] * xs.shape[0]
  for t in range(n - 1, -1, -1) if reverse else range(n):
    # A segment starts at t (forward) or ends at t (reverse: t + 1 starts one).
    starts = reset is not None and (reset[t + 1] if reverse and t + 1 < n else
                                    (reset[t] if not reverse else False))
    if starts:
      carry = initial
    carry, y = step(params, carry, xs[t])
    ys[t] = np.asarray(y)
  return np.stack(ys), carry


def loop_batch(fn, xs, lengths, **per_example):
  """``fn(x, n, **kw)`` on every example; outputs stacked over the batch."""
  take = lambda tree, b: jax.tree_util.tree_map(lambda leaf: leaf[b], tree)  # noqa: E731
  outs = [fn(xs[b], lengths[b], **{k: take(v, b) for k, v in per_example.items()})
          for b in range(xs.shape[0])]
  return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *outs)


def readout_ref(params, xs, length):
  valid = (np.arange(xs.shape[0]) < int(length))[:, None]
  return np.where(valid, xs @ params.W_hy + params.b_y[None, :], 0.0), ()


def inputs(seed=0, lengths=LENGTHS):
  """Host arrays ``(xs, lengths)`` with NaN in every padded step."""
  xs = np.random.default_rng(seed).standard_normal((len(lengths), T, D)).astype(np.float32)
  for b, n in enumerate(lengths):
    xs[b, n:] = np.nan
  return xs, np.asarray(lengths, np.int32)


def batched(layer):
  """``jax.vmap(layer.apply)`` over a batch, params shared."""
  return lambda params, xs, lengths, **kw: jax.vmap(layer.apply, in_axes=(None, 0))(
      params, xs, length=lengths, **kw)


# ---------------------------------------------------------------------------


class CellsAndLayersTest(chex.TestCase):
  """Every variant (jit, eager, device-placed args) equals the Python loop."""

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(*((name, index, name)
                                    for index, name in enumerate(CELLS)))
  def test_rnn_matches_the_loop(self, index, name):
    cell, options, output_size = CELLS[name]
    option = OPTIONS[(index + VARIANTS.index(self.variant.type)) % len(OPTIONS)]
    reverse = option.startswith("reversed")
    layer = jaxrnn.rnn(cell, reverse=reverse, **options)
    params = ref.random_params(layer, index, D)
    xs, lengths = inputs(seed=index)
    given = {}
    if option != "plain":
      rng = np.random.default_rng(100 + index)
      given["reset"] = rng.random((B, T)) < 0.3
      given["carry"] = jax.tree_util.tree_map(
          lambda c: rng.standard_normal((B,) + c.shape).astype(c.dtype), cell.init_carry())
    ys, carry = self.variant(batched(layer))(params, xs, lengths, **given)
    chex.assert_shape(ys, (B, T, output_size))
    chex.assert_tree_all_finite((ys, carry))
    ref_ys, ref_carry = loop_batch(
        functools.partial(loop_rnn, name, params, reverse=reverse), xs, lengths, **given)
    chex.assert_trees_all_close(ys, ref_ys, **TOL)
    chex.assert_trees_all_close(carry, ref_carry, **TOL)
    ys, carry = jax.device_get((ys, carry))
    for b, n in enumerate(LENGTHS):  # exact zeros at padded steps
      np.testing.assert_array_equal(ys[b, n:], 0)
    # Length 0: the final carry is the initial one.
    initial = given.get("carry", jax.tree_util.tree_map(
        lambda c: np.broadcast_to(c, (B,) + c.shape), cell.init_carry()))
    chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda c: c[2], carry),
                                jax.tree_util.tree_map(lambda c: c[2], initial))

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_bidirectional_matches_two_loops(self):
    # Both merges from one program per variant (the same two scans).
    forward, backward = CELLS["lstm"][0], CELLS["gru"][0]
    layers = {merge: jaxrnn.bidirectional(forward, backward, merge=merge)
              for merge in ("concat", "sum")}
    params = ref.random_params(layers["concat"], 5, D)
    xs, lengths = inputs(seed=6)

    def both(params, xs, lengths):
      return {merge: batched(layer)(params, xs, lengths) for merge, layer in layers.items()}

    out = self.variant(both)(params, xs, lengths)
    f_ys, f_carry = loop_batch(functools.partial(loop_rnn, "lstm", params.forward), xs, lengths)
    b_ys, b_carry = loop_batch(
        functools.partial(loop_rnn, "gru", params.backward, reverse=True), xs, lengths)
    for merge, want in (("concat", np.concatenate([f_ys, b_ys], -1)), ("sum", f_ys + b_ys)):
      ys, carry = out[merge]
      chex.assert_shape(ys, (B, T, 8 if merge == "concat" else 4))
      chex.assert_trees_all_close(ys, want, **TOL)
      chex.assert_trees_all_close(carry, jaxrnn.BidirectionalCarry(f_carry, b_carry), **TOL)

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  def test_stack_matches_chained_loops(self):
    layer = jaxrnn.stack(jaxrnn.rnn(CELLS["gru"][0]),
                         jaxrnn.rnn(CELLS["elman"][0], reverse=True), jaxrnn.readout(3))
    params = ref.random_params(layer, 7, D)  # b_y != 0: y != 0 at h == 0
    xs, lengths = inputs(seed=8)
    ys, carries = self.variant(batched(layer))(params, xs, lengths)

    def reference(x, n):
      h1, c1 = loop_rnn("gru", params[0], x, n)
      h2, c2 = loop_rnn("elman", params[1], h1, n, reverse=True)
      out, _ = readout_ref(params[2], h2, n)
      return out, (c1, c2, ())

    ref_ys, ref_carries = loop_batch(reference, xs, lengths)
    chex.assert_shape(ys, (B, T, 3))
    chex.assert_trees_all_close(ys, ref_ys, **TOL)
    chex.assert_trees_all_close(carries, ref_carries, **TOL)


# ---------------------------------------------------------------------------
# Tracing: new values never retrace; only a new padded shape does.

# unroll=1: what is counted is tracing, and the loop's body then compiles once.
LAYERS = (
    ("rnn", lambda: jaxrnn.rnn(jaxrnn.lstm(4), unroll=1)),
    ("bidirectional", lambda: jaxrnn.bidirectional(jaxrnn.gru(3), jaxrnn.gru(3), unroll=1)),
    ("stack", lambda: jaxrnn.stack(jaxrnn.rnn(jaxrnn.mgu(4), unroll=1), jaxrnn.readout(2))),
)


@pytest.mark.parametrize("name, make_layer", LAYERS)
def test_lengths_resets_and_new_batches_never_retrace(name, make_layer):
  layer = make_layer()
  params = ref.random_params(layer, 0, D)
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
  params = ref.random_params(layer, 0, D)
  chex.clear_trace_counter()
  apply = jax.jit(chex.assert_max_traces(
      lambda p, x, n: layer.apply(p, x, length=n), n=1))
  xs = jnp.ones((T, D))
  outs = [np.asarray(apply(params, xs, jnp.int32(n))[0]) for n in range(T + 1)]
  for n, ys in enumerate(outs):
    np.testing.assert_array_equal(ys[n:], 0)
    assert np.all(ys[:n] != 0)
