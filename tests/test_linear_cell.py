"""`linear_cell`: a user's diagonal linear recurrence against a NumPy loop.

Every method (the multiply-add scan, the associative scan, the reference
scan of ``cell_apply``) with lengths, reverse over the valid prefix and
resets, under ``jit(vmap)``; gradients of the fast methods equal plain
autodiff of the reference; bad user functions get errors that name them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref

B, T, D, H = 3, 6, 2, 4
LENGTHS = np.array([6, 4, 0], np.int32)
RESET = np.zeros((B, T), bool)
RESET[0, 3] = RESET[1, 2] = True


def init(key, input_size, dtype=None):
  k_a, k_b, k_o = jax.random.split(key, 3)
  return {"W_a": jax.random.normal(k_a, (input_size, H), dtype),
          "W_b": jax.random.normal(k_b, (input_size, H), dtype),
          "W_o": jax.random.normal(k_o, (input_size, H), dtype)}


def coefficients(params, x):
  return jax.nn.sigmoid(x @ params["W_a"]), jnp.tanh(x @ params["W_b"])


def output(params, h, x):
  return h * jax.nn.sigmoid(x @ params["W_o"])


CELL = jaxrnn.linear_cell(init, coefficients, H, output=output)


def numpy_run(p, xs, length, reverse, reset):
  """The recurrence, step by step, in float64 (the `reference.run` contract)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  sig = lambda z: 1 / (1 + np.exp(-z))

  def step(p, h, x):
    h = sig(x @ p["W_a"]) * h + np.tanh(x @ p["W_b"])
    return h, h * sig(x @ p["W_o"])

  return ref.run(step, p, xs, np.zeros(H), H, length, reverse, reset)


@functools.lru_cache(maxsize=None)
def _program(method, reverse):
  layer = jaxrnn.rnn(CELL, method=method, reverse=reverse)
  run = lambda p, x, n, r: layer.apply(p, x, length=n, reset=r)
  loss = lambda p, xs, n, r: jnp.sum(jnp.sin(jax.vmap(run, in_axes=(None, 0, 0, 0))(
      p, xs, n, r)[0]))
  return jax.jit(lambda p, xs, n, r: (jax.vmap(run, in_axes=(None, 0, 0, 0))(p, xs, n, r),
                                      jax.grad(loss, argnums=(0, 1))(p, xs, n, r)))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_every_method_matches_a_numpy_loop(method, reverse):
  params = ref.random_like(jax.eval_shape(lambda k: CELL.init_params(k, D), jax.random.key(0)),
                           seed=1)
  xs = np.random.default_rng(2).standard_normal((B, T, D)).astype(np.float32)
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan
  args = (params, jnp.asarray(xs), jnp.asarray(LENGTHS), jnp.asarray(RESET))
  (ys, final), grads = _program(method, reverse)(*args)
  (ref_ys, ref_final), ref_grads = _program("reference", reverse)(*args)
  for b, n in enumerate(LENGTHS):
    want_ys, want_h = numpy_run(params, xs[b], n, reverse, RESET[b])
    ref.assert_tree_close(ys[b], want_ys)
    ref.assert_tree_close(final[b], want_h)
    ref.assert_tree_close(ref_ys[b], want_ys)
  ref.assert_tree_close(grads, ref_grads, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(grads[1])[2] == 0)  # the empty row


def test_output_defaults_to_the_state_and_cell_apply_is_one_step():
  cell = jaxrnn.linear_cell(init, coefficients, H)
  params = ref.random_like(jax.eval_shape(lambda k: cell.init_params(k, D), jax.random.key(0)),
                           seed=3)
  x = jnp.asarray([0.5, -1.0])
  h, y = cell.cell_apply(params, jnp.ones(H), x)
  a, b = coefficients(params, x)
  np.testing.assert_allclose(h, a + b, rtol=1e-6)
  np.testing.assert_array_equal(h, y)
  assert cell.output_size == H and CELL.output_size is None
  assert dict(cell.config) == {"kind": "linear_cell", "hidden_size": H}


def test_bad_user_functions_are_named():
  with pytest.raises(TypeError, match="coefficients: expected a callable"):
    jaxrnn.linear_cell(init, None, H)
  with pytest.raises(TypeError, match="output: expected a callable or None"):
    jaxrnn.linear_cell(init, coefficients, H, output=3)
  with pytest.raises(ValueError, match="hidden_size"):
    jaxrnn.linear_cell(init, coefficients, 0)
  wrong = jaxrnn.linear_cell(init, lambda p, x: (jnp.ones(H), jnp.ones(H + 1)), H)
  params = wrong.init_params(jax.random.key(0), D)
  with pytest.raises(ValueError, match=r"coefficients: expected \(a, b\) of shapes \(4,\) and "
                                       r"\(4,\) \(hidden_size=4\), got shapes \(\(4,\), \(5,\)\)"):
    jaxrnn.rnn(wrong).apply(params, jnp.ones((T, D)))
  with pytest.raises(ValueError, match="zoneout|recurrent_dropout"):
    jaxrnn.rnn(CELL, recurrent_dropout=0.1)
