"""Peephole and layer-normalised LSTMs, layer-normalised GRUs.

The references are the float64 NumPy LSTM and GRU of tests/reference.py,
which hold the papers' equations: Gers & Schmidhuber 2000 (peepholes: the
input and forget gates see c_{t-1}, the output gate sees c_t) and Ba, Kiros
& Hinton 2016, section 3.1 (LN over all gate pre-activations of each
product; h_t = o_t tanh(LN(c_t)), the carried c_t unnormalised).
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from jaxrnn._src.engine.hooks import hooks_of
from reference import D, H, T

CASES = {
    "peephole": (lambda: jaxrnn.lstm(H, peephole=True), ref.lstm_step, H),
    "ln_lstm": (lambda: jaxrnn.lstm(H, layer_norm=True), ref.lstm_step, H),
    "ln_peephole_proj": (
        lambda: jaxrnn.lstm(H, peephole=True, layer_norm=True, proj_size=2),
        ref.lstm_step, 2),
    "ln_gru": (lambda: jaxrnn.gru(H, layer_norm=True), ref.gru_step, H),
}


@functools.lru_cache(maxsize=None)
def program(name):
  cell = CASES[name][0]()
  fwd, rev = jaxrnn.rnn(cell), jaxrnn.rnn(cell, reverse=True)

  @jax.jit
  def f(params, xs, length, carry):
    return (fwd.apply(params, xs, length=length, carry=carry),
            rev.apply(params, xs, length=length, carry=carry))

  return cell, f


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_numpy(name):
  make, step, out = CASES[name]
  cell, f = program(name)
  params = ref.random_params(cell, 1)
  carry = ref.random_like(cell.init_carry(), 2)
  xs = ref.random_xs(3)
  for length in (0, 1, 3, T):
    xs_junk = np.array(xs)
    xs_junk[length:] = np.nan
    (ys, c), (ys_r, c_r) = f(params, xs_junk, length, carry)
    for reverse, got_ys, got_c in ((False, ys, c), (True, ys_r, c_r)):
      want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry),
                                out, length, reverse)
      ref.assert_tree_close(got_ys, want_ys, err_msg=f"{name} {length} {reverse}")
      ref.assert_tree_close(tuple(got_c) if isinstance(got_c, tuple) else got_c,
                            want_c, err_msg=f"{name} carry {length} {reverse}")


def test_defaults_start_as_the_plain_cell():
  """Zero peepholes and unit-gain LN params are what init_params draws."""
  params, plain, base = (cell.init_params(jax.random.key(0), D) for cell in (
      jaxrnn.lstm(H, peephole=True, layer_norm=True), jaxrnn.lstm(H, peephole=True),
      jaxrnn.lstm(H)))
  np.testing.assert_array_equal(params.W_c, np.zeros((3, H)))
  np.testing.assert_array_equal(params.ln_x.scale, np.ones(4 * H))
  np.testing.assert_array_equal(params.ln_h.offset, np.zeros(4 * H))
  np.testing.assert_array_equal(params.ln_c.scale, np.ones(H))
  for a, b in zip(plain[:4], base[:4]):  # the options do not change W_x, W_h, b
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["peephole", "ln_lstm", "ln_gru"])
def test_gradients_match_finite_differences(name, x64):
  cell = CASES[name][0]()
  layer = jaxrnn.rnn(cell, unroll=1)  # one step per iteration: a smaller program
  params = ref.random_params(cell, 7, dtype=jnp.float64)
  xs = ref.random_xs(8, dtype=np.float64)
  weights = ref.random_xs(9, (T, H), np.float64)

  def loss(p, x):
    ys, _ = layer.apply(p, x, length=4)
    return jnp.sum(jnp.sin(ys) * weights)

  # One program: the gradient, and the loss at the moved points.
  value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  loss_at = lambda p, x: float(value_and_grad(p, x)[0])  # noqa: E731
  _, (g_p, g_x) = value_and_grad(params, xs)
  numpy = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
  p_np, x_np, direction = numpy((params, xs, ref.random_like(params, 10)))
  eps = 1e-6
  plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, p_np, direction)
  minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, p_np, direction)
  fd = (loss_at(plus, x_np) - loss_at(minus, x_np)) / (2 * eps)
  analytic = sum(np.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(g_p),
                                               jax.tree_util.tree_leaves(direction)))
  np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)
  dx = np.asarray(ref.random_xs(11, dtype=np.float64))
  fd_x = (loss_at(p_np, x_np + eps * dx) - loss_at(p_np, x_np - eps * dx)) / (2 * eps)
  np.testing.assert_allclose(np.vdot(g_x, dx), fd_x, rtol=1e-7, atol=1e-9)


def test_bfloat16_params_accumulate_in_float32():
  """bfloat16 params and inputs: float32 results, equal to the NumPy LSTM
  whose products take bfloat16-rounded operands and sum exactly (the
  policy; the layer norm's statistics are float32 in the library)."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H, peephole=True, layer_norm=True))
  params = jax.tree_util.tree_map(lambda v: np.asarray(v).astype(jnp.bfloat16),
                                  ref.random_params(layer, 1, scale=0.8))
  xs = ref.random_xs(2, dtype=jnp.bfloat16)
  ys, carry = jax.jit(layer.apply)(params, xs)
  assert ys.dtype == jnp.float32 and carry.c.dtype == jnp.float32
  want_ys, want_c = ref.run(functools.partial(ref.lstm_step, dot=ref.bf16_dot),
                            ref.np_params(params), xs, (np.zeros(H), np.zeros(H)), H)
  # Measured: 1.3e-7 (2.2e-4 for a reference that does not round the
  # products' operands).
  ref.assert_tree_close((ys, tuple(carry)), (want_ys, want_c), rtol=0, atol=1e-6)


def test_options_are_recorded_and_differentiated_by_jax():
  """Peepholes and layer norm keep the fused path (one recurrent product);
  JAX differentiates their pointwise equation (no hand-written tangent)."""
  cell = jaxrnn.lstm(H, peephole=True, layer_norm=True)
  assert dict(cell.config)["peephole"] and dict(cell.config)["layer_norm"]
  for options_cell in (cell, jaxrnn.gru(H, layer_norm=True)):
    product = hooks_of(options_cell).product
    assert product is not None and product.tangent is None


def test_bad_options_and_params_raise():
  with pytest.raises(ValueError, match=r"^layer_norm: needs reset_after=True \(one "
                     r"recurrent product to normalise\), got reset_after=False$"):
    jaxrnn.gru(H, layer_norm=True, reset_after=False)
  with pytest.raises(TypeError, match=r"^peephole: expected a bool, got str 'yes'$"):
    jaxrnn.lstm(H, peephole="yes")
  with pytest.raises(ValueError, match=r"^layer_norm_eps: expected a positive number, "
                     r"got 0\.0$"):
    jaxrnn.lstm(H, layer_norm=True, layer_norm_eps=0.0)
  cell = jaxrnn.lstm(H, peephole=True, layer_norm=True)
  owner = r"lstm\(hidden_size=4, peephole=True, layer_norm=True\)"
  params = ref.random_params(cell, 0)
  x = jnp.ones(D)
  with pytest.raises(ValueError, match=rf"^params\.W_c: {owner} expects shape \(3, 4\), "
                     r"got shape \(2, 4\)$"):
    cell.cell_apply(params._replace(W_c=jnp.ones((2, H))), cell.init_carry(), x)
  with pytest.raises(ValueError, match=rf"^params\.W_c: {owner} expects shape \(3, 4\), "
                     r"got None$"):
    cell.cell_apply(params._replace(W_c=None), cell.init_carry(), x)
  with pytest.raises(TypeError, match=rf"^params\.ln_c: {owner} expects "
                     r"LayerNormParams\(scale, offset\), got None$"):
    cell.cell_apply(params._replace(ln_c=None), cell.init_carry(), x)
  with pytest.raises(ValueError, match=rf"^params\.ln_x\.scale: {owner} expects shape "
                     r"\(16,\), got shape \(3,\)$"):
    cell.cell_apply(params._replace(ln_x=jaxrnn.LayerNormParams(jnp.ones(3), jnp.ones(3))),
                    cell.init_carry(), x)
  plain = jaxrnn.lstm(H)
  with pytest.raises(ValueError, match=r"^params\.W_c: lstm\(hidden_size=4\) has no "
                     r"peepholes, got an array$"):
    plain.cell_apply(params._replace(ln_x=None, ln_h=None, ln_c=None), plain.init_carry(), x)


def test_no_torch_equivalent():
  from jaxrnn import interop
  for cell in (jaxrnn.lstm(H, peephole=True), jaxrnn.gru(H, layer_norm=True)):
    layer = jaxrnn.rnn(cell)
    option = "peephole" if dict(cell.config)["kind"] == "lstm" else "layer_norm"
    with pytest.raises(ValueError, match=rf"^layer cell: torch's recurrent modules have "
                       rf"no {option}; (lstm|gru)\(\.\.\., {option}=True\) has no torch "
                       r"equivalent$"):
      interop.to_torch(layer, ref.random_params(layer, 0))
