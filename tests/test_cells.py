"""Cells on one example: `cell_apply` against NumPy, weight layout, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import CASE_IDS, CASES, D, H, P

PARAMS_TYPES = {"elman": jaxrnn.ElmanParams, "lstm": jaxrnn.LSTMParams,
                "gru": jaxrnn.GRUParams}
NUM_GATES = {"elman": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_apply_matches_numpy(case):
  cell = case.make()
  params = ref.random_params(cell, 0)
  assert isinstance(params, PARAMS_TYPES[case.kind])
  carry = ref.random_like(cell.init_carry(), 1)
  xs = ref.random_xs(2, (3, D))
  p_np, c_np = ref.np_params(params), ref.np_carry(carry)
  for t in range(3):  # a few chained steps from a non-zero carry
    carry, y = cell.cell_apply(params, carry, xs[t])
    c_np, y_np = case.step(p_np, c_np, np.asarray(xs[t], np.float64))
    assert y.shape == (case.out_size,)
    ref.assert_tree_close((carry, y), (c_np, y_np), err_msg=f"step {t}")
  # The hoisted form used by rnn: recurrence(p, c, project_inputs(p, x)).
  carry0 = ref.random_like(cell.init_carry(), 3)
  zx = cell.project_inputs(params, xs[0])
  got = cell.recurrence(params, carry0, zx)
  want = case.step(p_np, ref.np_carry(carry0), np.asarray(xs[0], np.float64))
  ref.assert_tree_close(got, want)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cell_sizes_and_carry(case):
  cell = case.make()
  assert cell.hidden_size == H
  assert cell.output_size == case.out_size
  assert dict(cell.config)["kind"] == case.kind
  carry = cell.init_carry()
  if case.kind == "lstm":
    assert isinstance(carry, jaxrnn.LSTMState)
    assert carry.h.shape == (case.out_size,) and carry.c.shape == (H,)
  else:
    assert carry.shape == (H,)
  for leaf in jax.tree_util.tree_leaves(carry):
    assert leaf.dtype == jnp.float32
    np.testing.assert_array_equal(leaf, 0)
  for leaf in jax.tree_util.tree_leaves(cell.init_carry(jnp.bfloat16)):
    assert leaf.dtype == jnp.bfloat16
  for leaf in jax.tree_util.tree_leaves(cell.init_carry(dtype=jnp.float16)):
    assert leaf.dtype == jnp.float16


def _concat_form_step(case, p, carry, x):
  """One step written with W_m = [W_x; W_h] applied to [x, h] (NumPy)."""
  W_m = np.concatenate([p["W_x"], p["W_h"]], axis=0)
  b_x, b_h = p["b_x"], p["b_h"]
  if case.kind == "elman":
    act = {"elman_tanh": np.tanh, "elman_relu": ref.relu}[case.name]
    h = act(np.concatenate([x, carry]) @ W_m + b_x + b_h)
    return h, h
  if case.kind == "lstm":
    h, c = carry
    z = np.concatenate([x, h]) @ W_m + b_x + b_h
    i, f, g, o = np.split(z, 4)
    c = ref.sigmoid(f) * c + ref.sigmoid(i) * np.tanh(g)
    h = ref.sigmoid(o) * np.tanh(c)
    if p["W_hr"] is not None:
      h = h @ p["W_hr"]
    return (h, c), h
  h = carry
  xh = np.concatenate([x, h])
  r, z = np.split(ref.sigmoid(xh @ W_m[:, :2 * H] + b_x[:2 * H] + b_h[:2 * H]), 2)
  W_n = W_m[:, 2 * H:]
  if case.name == "gru":
    # The recurrent part of n sits inside r * (...): apply W_m's n columns to
    # [x, 0] and [0, h] separately.
    x_part = np.concatenate([x, np.zeros(H)]) @ W_n + b_x[2 * H:]
    h_part = np.concatenate([np.zeros(D), h]) @ W_n + b_h[2 * H:]
    n = np.tanh(x_part + r * h_part)
  else:
    n = np.tanh(np.concatenate([x, r * h]) @ W_n + b_x[2 * H:] + b_h[2 * H:])
  h = (1 - z) * n + z * h
  return h, h


CONCAT_CASES = [ref.BY_NAME[n] for n in
                ("elman_tanh", "elman_relu", "lstm", "lstm_proj", "gru", "gru_before")]


@pytest.mark.parametrize("case", CONCAT_CASES, ids=[c.name for c in CONCAT_CASES])
def test_weight_layout_matches_concatenated_form(case):
  cell = case.make()
  params = ref.random_params(cell, 10)
  G = NUM_GATES[case.kind]
  rows_h = case.out_size
  assert params.W_x.shape == (D, G * H)
  assert params.W_h.shape == (rows_h, G * H)
  assert params.b_x.shape == params.b_h.shape == (G * H,)
  carry = ref.random_like(cell.init_carry(), 11)
  x = ref.random_xs(12, (D,))
  got = cell.cell_apply(params, carry, x)
  want = _concat_form_step(case, ref.np_params(params), ref.np_carry(carry),
                           np.asarray(x, np.float64))
  ref.assert_tree_close(got, want)


INIT_CASES = [ref.BY_NAME[n] for n in ("elman_tanh", "lstm", "lstm_proj", "gru")]


@pytest.mark.parametrize("case", INIT_CASES, ids=[c.name for c in INIT_CASES])
def test_default_init(case):
  big_d = 128  # enough entries to check the input matrix's scale
  cell = case.make()
  params = cell.init_params(jax.random.key(0), big_d)
  assert isinstance(params, PARAMS_TYPES[case.kind])
  G = NUM_GATES[case.kind]
  rows_h = case.out_size
  assert params.W_x.shape == (big_d, G * H)
  assert params.W_h.shape == (rows_h, G * H)
  for leaf in jax.tree_util.tree_leaves(params):
    assert leaf.dtype == jnp.float32
  # Input matrix: LeCun normal, variance 1 / fan_in.
  W_x = np.asarray(params.W_x, np.float64)
  assert abs(W_x.mean()) < 0.2 / np.sqrt(big_d)
  np.testing.assert_allclose(W_x.std(), 1 / np.sqrt(big_d), rtol=0.15)
  # Recurrent matrix: each gate's block is orthogonal on its own.
  W_h = np.asarray(params.W_h, np.float64)
  for g in range(G):
    block = W_h[:, g * H:(g + 1) * H]  # (rows_h, H)
    gram = block @ block.T if rows_h < H else block.T @ block
    np.testing.assert_allclose(gram, np.eye(min(rows_h, H)), atol=1e-5)
  if G > 1:  # ... and the gates are different draws
    assert not np.allclose(W_h[:, :H], W_h[:, H:2 * H])
  # Biases: zero, except the LSTM forget slice of b_x, which is forget_bias.
  np.testing.assert_array_equal(params.b_h, 0)
  b_x = np.asarray(params.b_x)
  if case.kind == "lstm":
    np.testing.assert_array_equal(b_x[H:2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(b_x, np.s_[H:2 * H]), 0)
    if case.name == "lstm_proj":
      assert params.W_hr.shape == (H, P)
    else:
      assert params.W_hr is None
  else:
    np.testing.assert_array_equal(b_x, 0)
  # Deterministic in the key.
  again = cell.init_params(jax.random.key(0), big_d)
  ref.assert_tree_close(again, params, rtol=0, atol=0)
  other = cell.init_params(jax.random.key(1), big_d)
  assert not np.allclose(other.W_x, params.W_x)


@pytest.mark.parametrize("forget_bias", [0.0, 2.5])
def test_lstm_forget_bias(forget_bias):
  params = jaxrnn.lstm(H, forget_bias=forget_bias).init_params(jax.random.key(0), D)
  expected = np.zeros(4 * H)
  expected[H:2 * H] = forget_bias
  np.testing.assert_array_equal(params.b_x, expected)
  np.testing.assert_array_equal(params.b_h, 0)


def test_custom_initializers():
  inits = dict(input_init=jax.nn.initializers.constant(0.1),
               recurrent_init=lambda key, shape, dtype: jnp.eye(*shape, dtype=dtype),
               bias_init=jax.nn.initializers.constant(0.25))
  for make, G in ((jaxrnn.elman, 1), (jaxrnn.gru, 3), (jaxrnn.lstm, 4)):
    params = make(H, **inits).init_params(jax.random.key(0), D)
    np.testing.assert_array_equal(params.W_x, np.full((D, G * H), 0.1, np.float32))
    np.testing.assert_array_equal(params.W_h, np.tile(np.eye(H), (1, G)))
    np.testing.assert_array_equal(params.b_h, 0.25)
    expected_b_x = np.full(G * H, 0.25, np.float32)
    if G == 4:
      expected_b_x[H:2 * H] += 1.0  # forget_bias on top of bias_init
    np.testing.assert_allclose(params.b_x, expected_b_x)
  params = jaxrnn.lstm(H, proj_size=P, projection_init=jax.nn.initializers.ones
                       ).init_params(jax.random.key(0), D)
  np.testing.assert_array_equal(params.W_hr, np.ones((H, P)))


@pytest.mark.parametrize("make", [jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru],
                         ids=["elman", "lstm", "gru"])
def test_bias_false(make):
  cell = make(H, bias=False)
  params = cell.init_params(jax.random.key(0), D)
  assert params.b_x is None and params.b_h is None
  # No bias leaves at all in the pytree.
  assert len(jax.tree_util.tree_leaves(params)) == 2
  assert dict(cell.config)["bias"] is False


@pytest.mark.parametrize("fn, name, np_fn", [
    (jnp.tanh, "tanh", np.tanh), (jax.lax.tanh, "tanh", np.tanh),
    (jax.nn.relu, "relu", ref.relu)])
def test_elman_recognises_jax_activation_functions(fn, name, np_fn):
  # JAX's own tanh/relu select the named activation, and with it the fused
  # scans; any other callable runs the plain ones.
  cell = jaxrnn.elman(H, activation=fn)
  assert dict(cell.config)["activation"] == name and cell.fused is not None
  assert jaxrnn.elman(H, activation=lambda z: jnp.tanh(z)).fused is None
  layer = jaxrnn.rnn(cell)
  params = ref.random_params(layer, 0)
  xs = ref.random_xs(1)
  ys, _ = layer.apply(params, xs)
  want, _ = ref.run(lambda p, h, x: ref.elman_step(p, h, x, np_fn),
                    ref.np_params(params), np.asarray(xs, np.float64),
                    np.zeros(H), H)
  np.testing.assert_allclose(ys, want, rtol=2e-5, atol=2e-5)
