"""Variational recurrent dropout, zoneout and inter-layer dropout.

The masks are drawn inside the library, so the tests read them back through
probe networks whose outputs reveal them exactly (linear cells with identity
weights), then check the semantics against NumPy with those masks.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import D, H, T

WIDE = 4000  # units in the probes: enough for rate statistics


def identity(z):
  return z


def probe_params(cell_size, input_size, *, W_h=None, b_x=0.0):
  """ElmanParams with W_x = 0, W_h = I (or given) and b_x constant."""
  return jaxrnn.ElmanParams(
      jnp.zeros((input_size, cell_size)),
      jnp.eye(cell_size) if W_h is None else W_h,
      jnp.full((cell_size,), b_x), jnp.zeros((cell_size,)))


def dropout_mask(key, size, rate):
  """The recurrent-dropout mask an rnn layer draws for ``key``.

  Linear Elman cell, W_x = 0, W_h = I, h_0 = 1: h_1 = 1 ⊙ m = m.
  """
  layer = jaxrnn.rnn(jaxrnn.elman(size, activation=identity), recurrent_dropout=rate)
  ys, _ = layer.apply(probe_params(size, 1), jnp.zeros((2, 1)), carry=jnp.ones(size),
                      key=key)
  return ys


def test_recurrent_mask_is_one_per_sequence_with_the_right_rate():
  rate = 0.3
  ys = dropout_mask(jax.random.key(0), WIDE, rate)
  m = np.asarray(ys[0])
  scale = 1 / (1 - rate)
  assert np.all(np.isclose(m, 0.0) | np.isclose(m, scale, rtol=1e-6))
  assert abs(np.mean(m == 0) - rate) < 4 * np.sqrt(rate * (1 - rate) / WIDE)
  # The same mask at every step: h_2 = m ⊙ m (a fresh mask would give m ⊙ m').
  np.testing.assert_allclose(ys[1], m * m, rtol=1e-6)


def test_recurrent_dropout_reproducible_and_absent_without_key():
  a = dropout_mask(jax.random.key(1), 64, 0.5)
  b = dropout_mask(jax.random.key(1), 64, 0.5)
  c = dropout_mask(jax.random.key(2), 64, 0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  layer = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.5)
  plain = jaxrnn.rnn(jaxrnn.lstm(H))
  params = ref.random_params(plain, 3)
  xs = ref.random_xs(4)
  ref.assert_tree_close(layer.apply(params, xs), plain.apply(params, xs), rtol=0, atol=0)


def lstm_masked_step(mask):
  def step(p, carry, x):
    h, c = carry
    n = p["W_h"].shape[1] // 4
    z = x @ p["W_x"] + p["b_x"] + (h * mask) @ p["W_h"] + p["b_h"]
    c_new = ref.sigmoid(z[n:2 * n]) * c + ref.sigmoid(z[:n]) * np.tanh(z[2 * n:3 * n])
    h_new = ref.sigmoid(z[3 * n:]) * np.tanh(c_new)
    return (h_new, c_new), h_new
  return step


def gru_masked_step(mask):
  """Gal & Ghahramani: the mask on h_{t-1} in the products, not in z ⊙ h."""
  def step(p, h, x):
    n = p["W_h"].shape[0]
    zx, zh = x @ p["W_x"] + p["b_x"], (h * mask) @ p["W_h"] + p["b_h"]
    r = ref.sigmoid(zx[:n] + zh[:n])
    z = ref.sigmoid(zx[n:2 * n] + zh[n:2 * n])
    n_t = np.tanh(zx[2 * n:] + r * zh[2 * n:])
    h_new = (1 - z) * n_t + z * h
    return h_new, h_new
  return step


@pytest.mark.parametrize("fused_vjp", [None, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_dropout_against_numpy(kind, fused_vjp):
  """Outputs and gradients with the mask read back from the probe."""
  rate, key = 0.4, jax.random.key(5)
  mask = np.asarray(dropout_mask(key, H, rate)[0], np.float64)
  cell = jaxrnn.lstm(H) if kind == "lstm" else jaxrnn.gru(H)
  step = (lstm_masked_step if kind == "lstm" else gru_masked_step)(mask)
  layer = jaxrnn.rnn(cell, recurrent_dropout=rate, fused_vjp=fused_vjp)
  params = ref.random_params(cell, 6)
  carry = ref.random_like(cell.init_carry(), 7)
  xs = ref.random_xs(8)
  ys, c = jax.jit(lambda p, x: layer.apply(p, x, length=4, carry=carry, key=key))(params, xs)
  want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry), H, 4)
  ref.assert_tree_close(ys, want_ys)
  ref.assert_tree_close(tuple(c) if kind == "lstm" else c, want_c)


def test_recurrent_dropout_fused_and_autodiff_gradients_agree(x64):
  layer_f = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.3)
  layer_a = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.3, fused_vjp=False)
  params = ref.random_params(layer_f, 9, dtype=jnp.float64)
  xs = ref.random_xs(10, dtype=np.float64)
  keys = jax.random.split(jax.random.key(11), 3)
  batch = jnp.stack([xs, -xs, 2 * xs])
  lengths = jnp.array([T, 2, 0])

  def loss(layer, p):
    ys, _ = jax.vmap(layer.apply, in_axes=(None, 0))(p, batch, length=lengths, key=keys)
    return jnp.sum(jnp.sin(ys))

  ref.assert_tree_close(jax.grad(lambda p: loss(layer_f, p))(params),
                        jax.grad(lambda p: loss(layer_a, p))(params), rtol=1e-10, atol=1e-12)


def counter_run(zoneout, key, steps=6, size=WIDE):
  """Linear Elman with W_h = I, b = 1: the candidate is h_{t-1} + 1, so each
  increment h_t - h_{t-1} is 1 where the unit was updated and 0 where it
  was zoned out (with a key), or 1 - p (the expectation) without one."""
  layer = jaxrnn.rnn(jaxrnn.elman(size, activation=identity), zoneout=zoneout)
  ys, _ = layer.apply(probe_params(size, 1, b_x=1.0), jnp.zeros((steps, 1)), key=key)
  return np.diff(np.concatenate([np.zeros((1, size)), np.asarray(ys)]), axis=0)


def test_zoneout_masks_per_step_with_the_right_rate():
  rate = 0.25
  inc = counter_run(rate, jax.random.key(0))
  assert set(np.round(np.unique(inc), 5)) <= {0.0, 1.0}
  kept = inc == 0
  assert abs(kept.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / kept.size)
  assert not np.array_equal(kept[0], kept[1])  # a fresh mask every step
  np.testing.assert_array_equal(inc, counter_run(rate, jax.random.key(0)))
  assert not np.array_equal(inc, counter_run(rate, jax.random.key(1)))


def test_zoneout_without_key_is_its_expectation():
  np.testing.assert_allclose(counter_run(0.25, None, size=8), np.full((6, 8), 0.75),
                             rtol=1e-6)


def test_lstm_zoneout_expectation_against_numpy():
  """Krueger et al.: c_t = p_c c_{t-1} + (1 - p_c) c̃_t and h_t = p_h h_{t-1}
  + (1 - p_h) o ⊙ tanh(c̃_t), with per-state rates."""
  rates = jaxrnn.LSTMState(h=0.05, c=0.5)
  layer = jaxrnn.rnn(jaxrnn.lstm(H), zoneout=rates)
  params = ref.random_params(layer, 12)
  carry = ref.random_like(layer.init_carry(), 13)
  xs = ref.random_xs(14)

  def step(p, state, x):
    (h_new, c_new), _ = ref.lstm_step(p, state, x)
    h = 0.05 * state[0] + 0.95 * h_new
    c = 0.5 * state[1] + 0.5 * c_new
    return (h, c), h

  ys, c = layer.apply(params, xs, length=4, carry=carry)
  want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry), H, 4)
  ref.assert_tree_close(ys, want_ys)
  ref.assert_tree_close(tuple(c), want_c)


def test_zoneout_keeps_padding_guarantees_and_gradients():
  layer = jaxrnn.rnn(jaxrnn.gru(H), zoneout=0.3, reverse=True)
  params = ref.random_params(layer, 15)
  xs = ref.random_xs(16)
  key = jax.random.key(3)
  a, ca = layer.apply(params, xs, length=3, key=key)
  b, cb = layer.apply(params, xs.at[3:].set(jnp.nan), length=3, key=key)
  ref.assert_tree_close((a, ca), (b, cb), rtol=0, atol=0)
  assert bool(jnp.all(a[3:] == 0))
  g = jax.grad(lambda x: jnp.sum(layer.apply(params, x, length=3, key=key)[0]))(
      xs.at[3:].set(jnp.nan))
  assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(g[3:] == 0))


def test_stack_dropout_between_layers():
  """Two identity readouts: the output is x ⊙ mask / (1 - p) per step and unit."""
  rate, size = 0.5, 400
  net = jaxrnn.stack(jaxrnn.readout(size), jaxrnn.readout(size), dropout=rate)
  eye = jaxrnn.ReadoutParams(jnp.eye(size), jnp.zeros(size))
  xs = jnp.ones((6, size))
  ys, _ = net.apply((eye, eye), xs, length=5, key=jax.random.key(0))
  ys = np.asarray(ys)
  assert set(np.unique(ys[:5])) <= {0.0, 2.0}
  assert np.all(ys[5] == 0)
  assert abs(np.mean(ys[:5] == 0) - rate) < 4 * np.sqrt(0.25 / ys[:5].size)
  assert not np.array_equal(ys[0], ys[1])  # fresh per step
  again, _ = net.apply((eye, eye), xs, length=5, key=jax.random.key(0))
  np.testing.assert_array_equal(ys, again)
  clean, _ = net.apply((eye, eye), xs, length=5)
  np.testing.assert_array_equal(clean[:5], np.ones((5, size)))
  # No dropout after the last layer.
  single = jaxrnn.stack(jaxrnn.readout(size), dropout=rate)
  out, _ = single.apply((eye,), xs, key=jax.random.key(0))
  np.testing.assert_array_equal(out, xs)


def test_keys_reach_every_layer_and_direction_under_vmap():
  net = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), recurrent_dropout=0.5,
                           zoneout=0.2),
      jaxrnn.rnn(jaxrnn.gru(H), recurrent_dropout=0.5), jaxrnn.readout(2), dropout=0.5)
  params = net.init_params(jax.random.key(0), D)
  xs = jnp.stack([ref.random_xs(1)] * 2)
  apply = jax.jit(jax.vmap(net.apply, in_axes=(None, 0)))
  keys = jax.random.split(jax.random.key(7), 2)
  ys, _ = apply(params, xs, key=keys)
  assert not np.allclose(ys[0], ys[1])  # different keys, different masks
  ys2, _ = apply(params, xs, key=keys)
  np.testing.assert_array_equal(ys, ys2)
  same, _ = apply(params, xs, key=jnp.stack([keys[0], keys[0]]))
  np.testing.assert_array_equal(same[0], same[1])
  ev, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs)
  plain = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), zoneout=0.2),
      jaxrnn.rnn(jaxrnn.gru(H)), jaxrnn.readout(2))
  pv, _ = jax.vmap(plain.apply, in_axes=(None, 0))(params, xs)
  np.testing.assert_allclose(ev, pv, rtol=1e-6, atol=1e-7)


def test_bad_rates_and_keys():
  with pytest.raises(ValueError, match=r"^recurrent_dropout: expected a rate in \[0, 1\)"):
    jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=1.0)
  with pytest.raises(TypeError, match="^zoneout: "):
    jaxrnn.rnn(jaxrnn.lstm(H), zoneout=(0.1, 0.2, 0.3))
  with pytest.raises(ValueError, match="^zoneout: "):
    jaxrnn.rnn(jaxrnn.lstm(H), zoneout=jaxrnn.LSTMState(h=0.1, c=-0.5))
  with pytest.raises(ValueError, match="^dropout: "):
    jaxrnn.stack(jaxrnn.readout(2), dropout=2.0)
  with pytest.raises(ValueError, match="^recurrent_dropout: this cell"):
    jaxrnn.rnn(jaxrnn.Cell(jaxrnn.elman(H).init_params, jaxrnn.elman(H).init_carry,
                           jaxrnn.elman(H).cell_apply), recurrent_dropout=0.1)
  layer = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.1)
  params = layer.init_params(jax.random.key(0), D)
  with pytest.raises(TypeError, match="^key: expected a PRNG key"):
    layer.apply(params, jnp.ones((T, D)), key=3)
  with pytest.raises(ValueError, match=r"^key: expected ONE PRNG key .*split"):
    layer.apply(params, jnp.ones((T, D)), key=jax.random.split(jax.random.key(0), 2))
