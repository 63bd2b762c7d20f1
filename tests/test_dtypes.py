"""The dtype policy: float64 under x64; bfloat16 params and inputs accumulate
and return float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import CASE_IDS, CASES, D, H, T

tree_leaves = jax.tree_util.tree_leaves
SEQUENCE_CASES = [ref.BY_NAME[n] for n in ("elman_tanh", "lstm", "lstm_proj", "gru",
                                           "gru_before")]
SEQUENCE_IDS = [c.name for c in SEQUENCE_CASES]


def _dtypes(tree):
  return {leaf.dtype for leaf in tree_leaves(tree)}


def _both_directions(cell):
  fwd, rev = jaxrnn.rnn(cell), jaxrnn.rnn(cell, reverse=True)
  return jax.jit(lambda p, xs, n: (fwd.apply(p, xs, length=n), rev.apply(p, xs, length=n)))


# ---------------------------------------------------------------------------
# float64.


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_float64_under_x64(x64, case):
  cell = case.make()
  params = ref.random_params(cell, 1)  # init_params' shapes and dtypes
  assert _dtypes(params) == {jnp.dtype(jnp.float64)}
  assert _dtypes(cell.init_carry()) == {jnp.dtype(jnp.float64)}
  carry = ref.random_like(cell.init_carry(), 2)
  x = ref.random_xs(3, (D,), np.float64)
  out = cell.cell_apply(params, carry, x)
  assert _dtypes(out) == {jnp.dtype(jnp.float64)}
  want = case.step(ref.np_params(params), ref.np_carry(carry), np.asarray(x))
  ref.assert_tree_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=SEQUENCE_IDS)
def test_rnn_float64_under_x64(x64, case):
  cell = case.make()
  f = _both_directions(cell)
  params = ref.random_params(cell, 4)
  xs = ref.random_xs(5, dtype=np.float64)
  zeros = jax.tree_util.tree_map(np.zeros_like, cell.init_carry())
  for length in (T, 3):
    out = f(params, xs, length)
    assert _dtypes(out) == {jnp.dtype(jnp.float64)}
    want = (ref.ref_run(case, params, xs, zeros, length),
            ref.ref_run(case, params, xs, zeros, length, reverse=True))
    ref.assert_tree_close(out, want, rtol=1e-10, atol=1e-12)


def test_layers_float64_under_x64(x64):
  for layer in (ref.bidirectional_layer(), ref.stack_layer(), jaxrnn.readout(2)):
    params = jax.eval_shape(lambda k: layer.init_params(k, D), jax.random.key(0))
    assert _dtypes(params) == {jnp.dtype(jnp.float64)}
    carry_dtypes = _dtypes(layer.init_carry())
    assert carry_dtypes <= {jnp.dtype(jnp.float64)}
  head = jaxrnn.readout(2)
  params = ref.random_params(head, 6)
  xs = ref.random_xs(7, dtype=np.float64)
  ys, _ = head.apply(params, xs, length=3)
  assert ys.dtype == jnp.float64
  ref.assert_tree_close(ys, ref.run_readout(ref.np_params(params), xs, 3),
                        rtol=1e-12, atol=1e-12)


def test_float32_params_stay_float32_under_x64(x64):
  cell = jaxrnn.gru(H)
  layer = jaxrnn.rnn(cell, unroll=1)
  params = ref.random_params(layer, 8, dtype=jnp.float32)
  assert _dtypes(params) == {jnp.dtype(jnp.float32)}
  assert _dtypes(cell.init_carry(jnp.float32)) == {jnp.dtype(jnp.float32)}
  xs = ref.random_xs(9)
  ys, carry = jax.jit(lambda p, x: layer.apply(p, x, length=3))(params, xs)
  assert ys.dtype == carry.dtype == jnp.float32
  ref.assert_tree_close((ys, carry), ref.ref_run(ref.BY_NAME["gru"], params, xs,
                                                 np.zeros(H), 3))


# ---------------------------------------------------------------------------
# bfloat16: accumulation (and so outputs and carries) in float32.

BF16_ATOL = 3e-2


def _bf16_params(layer_or_cell, seed):
  # Random values (not the initialisers) cast to bfloat16; init_params with
  # dtype=jnp.bfloat16 is test_init_params_bfloat16.
  params = ref.random_params(layer_or_cell, seed)
  params = jax.tree_util.tree_map(lambda v: v.astype(jnp.bfloat16), params)
  assert _dtypes(params) == {jnp.dtype(jnp.bfloat16)}
  return params


@pytest.mark.parametrize("make", [jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru],
                         ids=["elman", "lstm", "gru"])
def test_init_params_bfloat16(make):
  params = make(H).init_params(jax.random.key(0), D, dtype=jnp.bfloat16)
  assert _dtypes(params) == {jnp.dtype(jnp.bfloat16)}


def test_readout_init_params_bfloat16():
  params = jaxrnn.readout(2).init_params(jax.random.key(0), D, dtype=jnp.bfloat16)
  assert _dtypes(params) == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_bfloat16(case):
  cell = case.make()
  params = _bf16_params(cell, 10)
  x = ref.random_xs(11, (D,), jnp.bfloat16)
  carry, y = cell.cell_apply(params, cell.init_carry(), x)
  assert _dtypes((carry, y)) == {jnp.dtype(jnp.float32)}
  zeros = jax.tree_util.tree_map(np.zeros_like, cell.init_carry())
  # The reference gets the same (bf16-rounded) numbers in float64.
  want = case.step(ref.np_params(params), ref.np_carry(zeros), np.asarray(x, np.float64))
  ref.assert_tree_close((carry, y), want, rtol=BF16_ATOL, atol=BF16_ATOL)


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=SEQUENCE_IDS)
def test_rnn_bfloat16(case):
  cell = case.make()
  f = _both_directions(cell)
  params = _bf16_params(cell, 12)
  xs = ref.random_xs(13, dtype=jnp.bfloat16)
  zeros = jax.tree_util.tree_map(np.zeros_like, cell.init_carry())
  for length in (T, 3):
    out = f(params, xs, length)
    assert _dtypes(out) == {jnp.dtype(jnp.float32)}
    want = (ref.ref_run(case, params, xs, zeros, length),
            ref.ref_run(case, params, xs, zeros, length, reverse=True))
    ref.assert_tree_close(out, want, rtol=BF16_ATOL, atol=BF16_ATOL)
    for (ys, _), w in zip(out, want):
      np.testing.assert_array_equal(ys[length:], 0)


def test_stack_bfloat16():
  layer = ref.stack_layer()
  params = _bf16_params(layer, 14)
  xs = ref.random_xs(15, dtype=jnp.bfloat16)
  ys, carries = jax.jit(lambda p, x: layer.apply(p, x, length=3))(params, xs)
  assert ys.dtype == jnp.float32
  assert _dtypes(carries) == {jnp.dtype(jnp.float32)}
  zeros = jax.tree_util.tree_map(np.zeros_like, layer.init_carry())
  want = ref.ref_stack(params, xs, zeros, 3)
  ref.assert_tree_close((ys, carries), want, rtol=BF16_ATOL, atol=BF16_ATOL)


def test_bfloat16_gradients():
  layer = jaxrnn.rnn(jaxrnn.lstm(H), unroll=1)
  params = _bf16_params(layer, 16)
  xs = ref.random_xs(17, dtype=jnp.bfloat16)

  def loss(p, x):
    ys, carry = layer.apply(p, x, length=3)
    return jnp.sum(ys ** 2) + jnp.sum(carry.c)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)
  assert _dtypes(grads) == {jnp.dtype(jnp.bfloat16)}
  for g in tree_leaves(grads):
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
  # Close to the float32 gradients of the same (bf16-rounded) numbers.
  up = lambda t: jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), t)
  grads32 = jax.jit(jax.grad(loss, argnums=(0, 1)))(up(params), up(xs))
  ref.assert_tree_close(up(grads), grads32, rtol=5e-2, atol=5e-2)
