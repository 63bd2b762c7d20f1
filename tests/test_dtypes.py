"""The dtype policy: float64 under x64; bfloat16 params and inputs accumulate
and return float32."""

import functools
import re

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


@functools.lru_cache(maxsize=None)
def float64_cells():
  """``{case: (params, init_carry, carry, x, (carry, y))}``: one step of every
  cell under x64, one program (x64 on while it runs; once per process)."""
  jax.config.update("jax_enable_x64", True)
  try:
    cells = {c.name: c.make() for c in CASES}
    params = {n: ref.random_params(cell, 1) for n, cell in cells.items()}  # init's dtypes
    carries = {n: ref.random_like(cell.init_carry(), 2) for n, cell in cells.items()}
    x = ref.random_xs(3, (D,), np.float64)
    out = jax.jit(lambda p, c, x: {n: cell.cell_apply(p[n], c[n], x)
                                   for n, cell in cells.items()})(params, carries, x)
    return {n: (params[n], cells[n].init_carry(), carries[n], x, out[n]) for n in cells}
  finally:
    jax.config.update("jax_enable_x64", False)


@pytest.mark.xdist_group("dtypes_cells")  # one worker: each program below once
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_float64_under_x64(case):
  params, init_carry, carry, x, out = float64_cells()[case.name]
  assert _dtypes(params) == {jnp.dtype(jnp.float64)}
  assert _dtypes(init_carry) == {jnp.dtype(jnp.float64)}
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
  ys, _ = jax.jit(lambda p, x: head.apply(p, x, length=3))(params, xs)
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
# bfloat16: products take bfloat16 operands and accumulate in float32; every
# other operation (gates, carries, outputs) is float32. The NumPy model of
# that policy rounds each product's operands to bfloat16 and computes in
# float64, so what remains is float32 rounding: the tolerances below sit a
# small factor above the errors measured on these seeds (in comments).


def _bf16_params(layer_or_cell, seed):
  # Random values (not the initialisers) cast to bfloat16; init_params with
  # dtype=jnp.bfloat16 is test_init_params_bfloat16.
  params = ref.random_params(layer_or_cell, seed, scale=0.8)
  params = jax.tree_util.tree_map(lambda v: np.asarray(v).astype(jnp.bfloat16), params)
  assert _dtypes(params) == {jnp.dtype(jnp.bfloat16)}
  return params


@pytest.mark.parametrize("make", [jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru,
                                  lambda size: jaxrnn.readout(2)],
                         ids=["elman", "lstm", "gru", "readout"])
def test_init_params_bfloat16(make):
  params = jax.eval_shape(lambda k: make(H).init_params(k, D, dtype=jnp.bfloat16),
                          jax.random.key(0))
  assert _dtypes(params) == {jnp.dtype(jnp.bfloat16)}


@functools.lru_cache(maxsize=None)
def bfloat16_cells():
  """``{case: (params, carry0, x, (carry, y))}``: one step of every cell with
  bfloat16 params and input, one program."""
  cells = {c.name: c.make() for c in CASES}
  params = {n: _bf16_params(cell, 10) for n, cell in cells.items()}
  carries = {n: ref.random_like(cell.init_carry(), 12)  # float32: rounded in products
             for n, cell in cells.items()}
  x = ref.random_xs(11, (D,), jnp.bfloat16)
  out = jax.jit(lambda p, c, x: {n: cell.cell_apply(p[n], c[n], x)
                                 for n, cell in cells.items()})(params, carries, x)
  return {n: (params[n], carries[n], x, out[n]) for n in cells}


@pytest.mark.xdist_group("dtypes_cells")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_bfloat16(case):
  params, carry0, x, (carry, y) = bfloat16_cells()[case.name]
  assert _dtypes((carry, y)) == {jnp.dtype(jnp.float32)}
  want = case.step(ref.np_params(params), ref.np_carry(carry0), np.asarray(x, np.float64),
                   dot=ref.bf16_dot)
  # Measured: at most 7.3e-8 (against 3.5e-3 for a reference that does not
  # round the products' operands).
  ref.assert_tree_close((carry, y), want, rtol=0, atol=5e-7)


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
    want = (ref.ref_run(case, params, xs, zeros, length, dot=ref.bf16_dot),
            ref.ref_run(case, params, xs, zeros, length, reverse=True, dot=ref.bf16_dot))
    # Measured: at most 1.5e-7 (3.1e-3 without rounding the operands).
    ref.assert_tree_close(out, want, rtol=0, atol=1e-6)
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
  want = ref.ref_stack(params, xs, zeros, 3, dot=ref.bf16_dot)
  # Measured: 8.2e-8 (3.0e-3 without rounding the operands).
  ref.assert_tree_close((ys, carries), want, rtol=0, atol=1e-6)


def _numpy_gradient(loss, args, eps=1e-6):
  """Central differences of a float64 NumPy ``loss(*args)``, entry by entry."""
  grads = []
  for k, a in enumerate(args):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
      moved = [b.copy() for b in args]
      moved[k][i] += eps
      plus = loss(*moved)
      moved[k][i] -= 2 * eps
      g[i] = (plus - loss(*moved)) / (2 * eps)
    grads.append(g)
  return grads


def test_bfloat16_gradients():
  """bfloat16 gradients (the params' dtype) against central differences of
  the float64 NumPy LSTM at the same bfloat16 numbers."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H), unroll=1)
  params = _bf16_params(layer, 16)
  xs = ref.random_xs(17, dtype=jnp.bfloat16)
  weights = np.asarray(ref.random_xs(18, (T, H)), np.float64)

  def loss(p, x):
    ys, carry = layer.apply(p, x, length=3)
    return jnp.sum(ys * weights.astype(np.float32)) + jnp.sum(carry.c)

  g_params, g_xs = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)
  assert _dtypes((g_params, g_xs)) == {jnp.dtype(jnp.bfloat16)}
  p_np = ref.np_params(params)
  names = ("W_x", "W_h", "b_x", "b_h")

  def loss_np(W_x, W_h, b_x, b_h, x):
    p = dict(p_np, W_x=W_x, W_h=W_h, b_x=b_x, b_h=b_h)
    ys, (_, c) = ref.run(ref.lstm_step, p, x, (np.zeros(H), np.zeros(H)), H, 3)
    return np.sum(ys * weights) + np.sum(c)

  want = _numpy_gradient(loss_np, [p_np[n] for n in names] + [np.asarray(xs, np.float64)])
  got = [getattr(g_params, n) for n in names] + [g_xs]
  # bfloat16 keeps 8 significant bits, so rounding the float32 gradient to
  # it errs by up to 2^-8 = 3.9e-3 of an entry. Measured: at most 2.7e-3 of
  # the largest entry of each gradient (the float32 gradient of the same
  # bfloat16 numbers is within 2.6e-7 of it).
  for name, g, w in zip(names + ("xs",), got, want):
    scale = np.max(np.abs(w))
    np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=0, atol=5e-3 * scale,
                               err_msg=name)


# ---------------------------------------------------------------------------
# The compiled program: every product has bfloat16 operands and a float32
# result; none accumulates in bfloat16, forward or backward.

PRODUCT_TYPES = re.compile(
    r"stablehlo\.(dot_general|convolution).*:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)"
    r"\s*->\s*(tensor<[^>]*>)")


def _products(text):
  """``(operand, operand, result)`` element types of every product."""
  element = lambda t: t[len("tensor<"):-1].split("x")[-1]
  return [tuple(element(t) for t in m.groups()[1:]) for m in PRODUCT_TYPES.finditer(text)]


BF16_LAYERS = {
    "lstm": lambda: jaxrnn.rnn(jaxrnn.lstm(H)),
    "gru": lambda: jaxrnn.rnn(jaxrnn.gru(H), reverse=True),
    "stack": ref.stack_layer,
    "conv_lstm": lambda: jaxrnn.rnn(jaxrnn.conv_lstm(2, 3, (3, 3))),
}


@pytest.mark.parametrize("hoist_inputs", [False, True], ids=["per-step", "hoisted"])
@pytest.mark.parametrize("name", sorted(BF16_LAYERS))
def test_bfloat16_products_accumulate_in_float32(name, hoist_inputs):
  layer = BF16_LAYERS[name]()
  conv = name == "conv_lstm"
  xs = jnp.ones((T, 3, 3, 2) if conv else (T, D), jnp.bfloat16)
  params = jax.eval_shape(lambda k: layer.init_params(k, xs.shape[-1], jnp.bfloat16),
                          jax.random.key(0))

  def loss(p, x):
    ys, _ = layer.apply(p, x, length=3)
    return jnp.sum(ys ** 2)

  with jaxrnn.engine_settings(hoist_inputs=hoist_inputs):
    forward = jax.jit(lambda p, x: layer.apply(p, x, length=3)).lower(params, xs).as_text()
    backward = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).as_text()
  products = _products(forward)
  assert len(products) >= 2, forward  # the input and the recurrent products
  for lhs, rhs, result in products:
    assert (lhs, rhs, result) == ("bf16", "bf16", "f32")
  products = _products(backward)
  assert len(products) >= 3
  assert all(result == "f32" for _, _, result in products), products
