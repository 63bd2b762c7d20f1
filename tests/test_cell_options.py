"""Peephole and layer-normalised LSTMs, layer-normalised GRUs.

References are float64 NumPy implementations of the papers' equations:
Gers & Schmidhuber 2000 (peepholes: the input and forget gates see
c_{t-1}, the output gate sees c_t) and Ba, Kiros & Hinton 2016, section
3.1 (LN over all gate pre-activations of each product; h_t = o_t
tanh(LN(c_t)), the carried c_t unnormalised).
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import D, H, T

EPS = 1e-5


def np_ln(v, p, eps=EPS):
  scale, offset = p  # np.asarray(LayerNormParams) stacks (scale, offset)
  mu = v.mean()
  var = ((v - mu) ** 2).mean()
  return (v - mu) / np.sqrt(var + eps) * scale + offset


def lstm_ext_step(p, carry, x, *, peephole, layer_norm):
  h, c = carry
  n = p["W_h"].shape[1] // 4
  zx, zh = x @ p["W_x"], h @ p["W_h"]
  if layer_norm:
    zx, zh = np_ln(zx, p["ln_x"]), np_ln(zh, p["ln_h"])
  z = zx + zh + ref._b(p["b_x"], 4 * n) + ref._b(p["b_h"], 4 * n)
  z_i, z_f, z_g, z_o = z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
  if peephole:
    z_i = z_i + p["W_c"][0] * c
    z_f = z_f + p["W_c"][1] * c
  c_new = ref.sigmoid(z_f) * c + ref.sigmoid(z_i) * np.tanh(z_g)
  if peephole:
    z_o = z_o + p["W_c"][2] * c_new
  h_new = ref.sigmoid(z_o) * np.tanh(np_ln(c_new, p["ln_c"]) if layer_norm else c_new)
  if p.get("W_hr") is not None:
    h_new = h_new @ p["W_hr"]
  return (h_new, c_new), h_new


def gru_ln_step(p, h, x):
  n = p["W_h"].shape[0]
  zx, zh = np_ln(x @ p["W_x"], p["ln_x"]), np_ln(h @ p["W_h"], p["ln_h"])
  b_x, b_h = ref._b(p["b_x"], 3 * n), ref._b(p["b_h"], 3 * n)
  r = ref.sigmoid(zx[:n] + b_x[:n] + zh[:n] + b_h[:n])
  z = ref.sigmoid(zx[n:2 * n] + b_x[n:2 * n] + zh[n:2 * n] + b_h[n:2 * n])
  n_t = np.tanh(zx[2 * n:] + b_x[2 * n:] + r * (zh[2 * n:] + b_h[2 * n:]))
  h_new = (1 - z) * n_t + z * h
  return h_new, h_new


CASES = {
    "peephole": (lambda: jaxrnn.lstm(H, peephole=True),
                 functools.partial(lstm_ext_step, peephole=True, layer_norm=False), H),
    "ln_lstm": (lambda: jaxrnn.lstm(H, layer_norm=True),
                functools.partial(lstm_ext_step, peephole=False, layer_norm=True), H),
    "ln_peephole_proj": (
        lambda: jaxrnn.lstm(H, peephole=True, layer_norm=True, proj_size=2),
        functools.partial(lstm_ext_step, peephole=True, layer_norm=True), 2),
    "ln_gru": (lambda: jaxrnn.gru(H, layer_norm=True), gru_ln_step, H),
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
    xs_junk = xs.at[length:].set(jnp.nan)
    (ys, c), (ys_r, c_r) = f(params, xs_junk, length, carry)
    for reverse, got_ys, got_c in ((False, ys, c), (True, ys_r, c_r)):
      want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry),
                                out, length, reverse)
      ref.assert_tree_close(got_ys, want_ys, err_msg=f"{name} {length} {reverse}")
      ref.assert_tree_close(tuple(got_c) if isinstance(got_c, tuple) else got_c,
                            want_c, err_msg=f"{name} carry {length} {reverse}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_cell_apply_and_hoisting_agree(name):
  """cell_apply on one step == recurrence(project_inputs) == NumPy."""
  make, step, out = CASES[name]
  cell = make()
  params = ref.random_params(cell, 4)
  carry = ref.random_like(cell.init_carry(), 5)
  x = ref.random_xs(6, (D,))
  got_c, got_y = cell.cell_apply(params, carry, x)
  want_c, want_y = step(ref.np_params(params), ref.np_carry(carry), np.asarray(x, np.float64))
  ref.assert_tree_close(got_y, want_y)
  ref.assert_tree_close(tuple(got_c) if isinstance(got_c, tuple) else got_c, want_c)


def test_defaults_start_as_the_plain_cell():
  """Zero peepholes and unit-gain LN params are what init_params draws."""
  params = jaxrnn.lstm(H, peephole=True, layer_norm=True).init_params(jax.random.key(0), D)
  np.testing.assert_array_equal(params.W_c, np.zeros((3, H)))
  np.testing.assert_array_equal(params.ln_x.scale, np.ones(4 * H))
  np.testing.assert_array_equal(params.ln_h.offset, np.zeros(4 * H))
  np.testing.assert_array_equal(params.ln_c.scale, np.ones(H))
  plain = jaxrnn.lstm(H, peephole=True).init_params(jax.random.key(0), D)
  base = jaxrnn.lstm(H).init_params(jax.random.key(0), D)
  for a, b in zip(plain[:4], base[:4]):  # the options do not change W_x, W_h, b
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["peephole", "ln_lstm", "ln_gru"])
def test_gradients_match_finite_differences(name, x64):
  cell = CASES[name][0]()
  layer = jaxrnn.rnn(cell)
  params = ref.random_params(cell, 7, dtype=jnp.float64)
  xs = ref.random_xs(8, dtype=np.float64)
  weights = ref.random_xs(9, (T, H), np.float64)

  def loss(p, x):
    ys, _ = layer.apply(p, x, length=4)
    return jnp.sum(jnp.sin(ys) * weights)

  g_p, g_x = jax.grad(loss, argnums=(0, 1))(params, xs)
  direction = ref.random_like(params, 10)
  eps = 1e-6
  plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction)
  minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction)
  fd = (loss(plus, xs) - loss(minus, xs)) / (2 * eps)
  analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(g_p),
                                                jax.tree_util.tree_leaves(direction)))
  np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)
  dx = ref.random_xs(11, dtype=np.float64)
  fd_x = (loss(params, xs + eps * dx) - loss(params, xs - eps * dx)) / (2 * eps)
  np.testing.assert_allclose(jnp.vdot(g_x, dx), fd_x, rtol=1e-7, atol=1e-9)


def test_bfloat16_params_accumulate_in_float32():
  layer = jaxrnn.rnn(jaxrnn.lstm(H, peephole=True, layer_norm=True))
  params = layer.init_params(jax.random.key(0), D, jnp.bfloat16)
  ys, carry = layer.apply(params, ref.random_xs(1, dtype=jnp.bfloat16))
  assert ys.dtype == jnp.float32 and carry.c.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(ys)))
  p32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
  ys32, _ = layer.apply(p32, ref.random_xs(1, dtype=jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(ys, ys32, atol=2e-2)


def test_options_are_recorded_and_not_fused():
  cell = jaxrnn.lstm(H, peephole=True, layer_norm=True)
  assert dict(cell.config)["peephole"] and dict(cell.config)["layer_norm"]
  assert cell.fused is None and jaxrnn.gru(H, layer_norm=True).fused is None
  with pytest.raises(ValueError, match="^fused_vjp: "):
    jaxrnn.rnn(cell, fused_vjp=True)


def test_bad_options_and_params_raise():
  with pytest.raises(ValueError, match="^layer_norm: .*reset_after"):
    jaxrnn.gru(H, layer_norm=True, reset_after=False)
  with pytest.raises(TypeError, match="^peephole: expected a bool"):
    jaxrnn.lstm(H, peephole="yes")
  with pytest.raises(ValueError, match="^layer_norm_eps: "):
    jaxrnn.lstm(H, layer_norm=True, layer_norm_eps=0.0)
  cell = jaxrnn.lstm(H, peephole=True, layer_norm=True)
  params = cell.init_params(jax.random.key(0), D)
  x = jnp.ones(D)
  with pytest.raises(ValueError, match=r"^params.W_c: .*\(3, 4\)"):
    cell.cell_apply(params._replace(W_c=jnp.ones((2, H))), cell.init_carry(), x)
  with pytest.raises(ValueError, match=r"^params.W_c: .*got None"):
    cell.cell_apply(params._replace(W_c=None), cell.init_carry(), x)
  with pytest.raises(TypeError, match=r"^params.ln_c: .*LayerNormParams"):
    cell.cell_apply(params._replace(ln_c=None), cell.init_carry(), x)
  with pytest.raises(ValueError, match=r"^params.ln_x.scale: "):
    cell.cell_apply(params._replace(ln_x=jaxrnn.LayerNormParams(jnp.ones(3), jnp.ones(3))),
                    cell.init_carry(), x)
  plain = jaxrnn.lstm(H)
  with pytest.raises(ValueError, match=r"^params.W_c: .*no peepholes"):
    plain.cell_apply(params._replace(ln_x=None, ln_h=None, ln_c=None), plain.init_carry(), x)


def test_no_torch_equivalent():
  from jaxrnn import interop
  for cell in (jaxrnn.lstm(H, peephole=True), jaxrnn.gru(H, layer_norm=True)):
    layer = jaxrnn.rnn(cell)
    with pytest.raises(ValueError, match="no torch equivalent"):
      interop.to_torch(layer, layer.init_params(jax.random.key(0), D))
