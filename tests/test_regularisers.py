"""Variational recurrent dropout, zoneout and inter-layer dropout.

The masks are drawn inside the library, so the tests read them back through
probe networks whose outputs reveal them exactly (linear cells with identity
weights), then check the semantics against NumPy with those masks.
"""

import functools

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


def probe_params(cell_size, input_size, *, b_x=0.0):
  """ElmanParams with W_x = 0, W_h = I and b_x constant (NumPy arrays of
  JAX's default float dtype)."""
  dtype = jax.dtypes.canonicalize_dtype(np.float64)
  return jaxrnn.ElmanParams(
      np.zeros((input_size, cell_size), dtype), np.eye(cell_size, dtype=dtype),
      np.full((cell_size,), b_x, dtype), np.zeros((cell_size,), dtype))


@functools.lru_cache(maxsize=None)
def _mask_probe(size, rate):
  """The jitted probe of `dropout_mask`, one per size and rate."""
  layer = jaxrnn.rnn(jaxrnn.elman(size, activation=identity), recurrent_dropout=rate)
  return jax.jit(lambda params, key: layer.apply(params, jnp.zeros((2, 1)),
                                                 carry=jnp.ones(size), key=key)[0])


def dropout_mask(key, size, rate):
  """The recurrent-dropout mask an rnn layer draws for ``key``.

  Linear Elman cell, W_x = 0, W_h = I, h_0 = 1: h_1 = 1 ⊙ m = m.
  """
  return np.asarray(_mask_probe(size, rate)(probe_params(size, 1), key))


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
  a = dropout_mask(jax.random.key(1), WIDE, 0.3)
  b = dropout_mask(jax.random.key(1), WIDE, 0.3)
  c = dropout_mask(jax.random.key(2), WIDE, 0.3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  layer = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.5)
  plain = jaxrnn.rnn(jaxrnn.lstm(H))
  params = ref.random_params(plain, 3)
  xs = ref.random_xs(4)
  without_key, want = jax.jit(lambda p, x: (layer.apply(p, x), plain.apply(p, x)))(params, xs)
  ref.assert_tree_close(without_key, want, rtol=0, atol=0)


RATE = 0.4  # of the recurrent dropout checked against NumPy


@pytest.mark.parametrize("method", ["auto", "reference"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_dropout_against_numpy(kind, method):
  """Outputs and gradients with the mask read back from the probe."""
  key = jax.random.key(5)
  mask = np.asarray(dropout_mask(key, H, RATE)[0], np.float64)
  cell = jaxrnn.lstm(H) if kind == "lstm" else jaxrnn.gru(H)
  # Gal & Ghahramani: the mask on h_{t-1} in the products (for the GRU not
  # in z ⊙ h_{t-1}).
  step = functools.partial(ref.lstm_step if kind == "lstm" else ref.gru_step, h_mask=mask)
  layer = jaxrnn.rnn(cell, recurrent_dropout=RATE, method=method)
  params = ref.random_params(cell, 6)
  carry = ref.random_like(cell.init_carry(), 7)
  xs = ref.random_xs(8)
  ys, c = jax.jit(lambda p, x: layer.apply(p, x, length=4, carry=carry, key=key))(params, xs)
  want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry), H, 4)
  ref.assert_tree_close(ys, want_ys)
  ref.assert_tree_close(tuple(c) if kind == "lstm" else c, want_c)


def test_recurrent_dropout_gradients_match_numpy(x64):
  """A vmapped minibatch, one key per example: the gradient of every
  parameter along random directions against central differences of the
  NumPy LSTM with each example's mask (read back from the probe). On the
  default (fused) path, whose tangent scan applies the mask itself; on the
  reference path JAX differentiates the step whose values are checked
  above."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=RATE, unroll=1)  # a smaller program
  params = ref.random_params(layer, 9, dtype=jnp.float64)
  xs = ref.random_xs(10, dtype=np.float64)
  keys = [jax.random.key(11 + k) for k in range(3)]
  batch = np.stack([xs, -xs, 2 * xs])
  lengths = [T, 2, 0]
  masks = [np.asarray(dropout_mask(k, H, RATE)[0], np.float64) for k in keys]
  assert not np.array_equal(masks[0], masks[1])

  def loss(p, keys):
    ys, _ = jax.vmap(layer.apply, in_axes=(None, 0))(p, batch, length=jnp.asarray(lengths),
                                                     key=jnp.stack(keys))
    return jnp.sum(jnp.sin(ys))

  def loss_np(p):
    total = 0.0
    for x, n, m in zip(np.asarray(batch), lengths, masks):
      step = functools.partial(ref.lstm_step, h_mask=m)
      ys, _ = ref.run(step, p, x, (np.zeros(H), np.zeros(H)), H, n)
      total += np.sum(np.sin(ys))
    return total

  value, grads = jax.jit(jax.value_and_grad(loss))(params, keys)
  p_np = ref.np_params(params)
  np.testing.assert_allclose(value, loss_np(p_np), rtol=1e-12)
  rng = np.random.default_rng(12)
  eps = 1e-6
  for name, g in grads._asdict().items():
    if g is None:
      continue
    d = rng.standard_normal(g.shape)
    fd = (loss_np(dict(p_np, **{name: p_np[name] + eps * d}))
          - loss_np(dict(p_np, **{name: p_np[name] - eps * d}))) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(g) * d), fd, rtol=1e-7, atol=1e-9,
                               err_msg=name)


@functools.lru_cache(maxsize=None)
def _counter(zoneout, size, with_key):
  layer = jaxrnn.rnn(jaxrnn.elman(size, activation=identity), zoneout=zoneout)
  if with_key:
    return jax.jit(lambda p, xs, key: layer.apply(p, xs, key=key)[0])
  return jax.jit(lambda p, xs, key: layer.apply(p, xs)[0])


def counter_run(zoneout, key, steps=6, size=WIDE):
  """Linear Elman with W_h = I, b = 1: the candidate is h_{t-1} + 1, so each
  increment h_t - h_{t-1} is 1 where the unit was updated and 0 where it
  was zoned out (with a key), or 1 - p (the expectation) without one."""
  run = _counter(zoneout, size, key is not None)
  ys = run(probe_params(size, 1, b_x=1.0), jnp.zeros((steps, 1)), key)
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

  ys, c = jax.jit(lambda p, x, c: layer.apply(p, x, length=4, carry=c))(params, xs, carry)
  want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry), H, 4)
  ref.assert_tree_close(ys, want_ys)
  ref.assert_tree_close(tuple(c), want_c)


def test_zoneout_keeps_padding_guarantees_and_gradients():
  layer = jaxrnn.rnn(jaxrnn.gru(H), zoneout=0.3, reverse=True)
  params = ref.random_params(layer, 15)
  xs = np.asarray(ref.random_xs(16))
  junk = xs.copy()
  junk[3:] = np.nan
  key = jax.random.key(3)
  apply = jax.jit(lambda x: layer.apply(params, x, length=3, key=key))
  (a, ca), (b, cb) = apply(xs), apply(junk)
  g = jax.jit(jax.grad(lambda x: jnp.sum(layer.apply(params, x, length=3, key=key)[0])))(junk)
  ref.assert_tree_close((a, ca), (b, cb), rtol=0, atol=0)
  np.testing.assert_array_equal(a[3:], 0)
  assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[3:] == 0)


def test_stack_dropout_between_layers():
  """Two identity readouts: the output is x ⊙ mask / (1 - p) per step and unit."""
  rate, size = 0.5, 400
  net = jaxrnn.stack(jaxrnn.readout(size), jaxrnn.readout(size), dropout=rate)
  # No dropout after the last layer.
  single = jaxrnn.stack(jaxrnn.readout(size), dropout=rate)
  eye = jaxrnn.ReadoutParams(jnp.eye(size), jnp.zeros(size))
  xs = jnp.ones((6, size))

  @jax.jit
  def program(key):
    return (net.apply((eye, eye), xs, length=5, key=key)[0],
            net.apply((eye, eye), xs, length=5)[0], single.apply((eye,), xs, key=key)[0])

  ys, clean, out = map(np.asarray, program(jax.random.key(0)))
  assert set(np.unique(ys[:5])) <= {0.0, 2.0}
  assert np.all(ys[5] == 0)
  assert abs(np.mean(ys[:5] == 0) - rate) < 4 * np.sqrt(0.25 / ys[:5].size)
  assert not np.array_equal(ys[0], ys[1])  # fresh per step
  np.testing.assert_array_equal(ys, program(jax.random.key(0))[0])
  np.testing.assert_array_equal(clean[:5], np.ones((5, size)))
  np.testing.assert_array_equal(out, xs)


def test_keys_reach_every_layer_and_direction_under_vmap():
  net = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), recurrent_dropout=0.5,
                           zoneout=0.2),
      jaxrnn.rnn(jaxrnn.gru(H), recurrent_dropout=0.5), jaxrnn.readout(2), dropout=0.5)
  params = ref.random_params(net, 0)
  xs = np.stack([ref.random_xs(1)] * 2)
  apply = jax.jit(lambda p, x, keys: jax.vmap(net.apply, in_axes=(None, 0))(
      p, x, key=jnp.stack(keys)))
  keys = [jax.random.key(7), jax.random.key(8)]
  ys, _ = apply(params, xs, keys)
  assert not np.allclose(ys[0], ys[1])  # different keys, different masks
  ys2, _ = apply(params, xs, keys)
  np.testing.assert_array_equal(ys, ys2)
  same, _ = apply(params, xs, [keys[0], keys[0]])
  np.testing.assert_array_equal(same[0], same[1])
  # Without a key, each part is checked on its own: recurrent dropout is
  # absent, zoneout is its expectation, and so are the inter-layer dropout
  # and both directions (the tests above and below).


# ---------------------------------------------------------------------------
# Keys: every layer and direction draws its own masks from the key it is
# given.

PROBE = 64  # units of the mask probes


def _probe_layer(**options):
  return jaxrnn.rnn(jaxrnn.elman(PROBE, activation=identity), recurrent_dropout=0.5,
                    **options)


def _assert_mask(m, err_msg=""):
  """``m`` is a dropout mask of rate 0.5: entries 0 or 2, not all equal."""
  m = np.asarray(m)
  assert set(np.unique(m)) == {0.0, 2.0}, err_msg


def test_bidirectional_directions_draw_their_own_masks():
  """Probe cells in both directions (h_1 = m ⊙ h_0 with h_0 = 1): one step
  reveals each direction's mask; they must differ and follow the key."""
  layer = jaxrnn.bidirectional(jaxrnn.elman(PROBE, activation=identity),
                               jaxrnn.elman(PROBE, activation=identity),
                               recurrent_dropout=0.5)
  p = probe_params(PROBE, 1)
  params = jaxrnn.BidirectionalParams(p, p)
  ones = jaxrnn.BidirectionalCarry(jnp.ones(PROBE), jnp.ones(PROBE))
  apply = jax.jit(lambda key: (layer.apply(params, jnp.zeros((1, 1)), carry=ones, key=key)[0],
                               layer.apply(params, jnp.zeros((1, 1)), carry=ones)[0]))
  masks = {}
  for seed in (0, 1):
    ys, no_key = map(np.asarray, apply(jax.random.key(seed)))
    m_f, m_b = ys[0, :PROBE], ys[0, PROBE:]
    _assert_mask(m_f, f"forward, key {seed}")
    _assert_mask(m_b, f"backward, key {seed}")  # fails if it got no key
    assert not np.array_equal(m_f, m_b)  # fails if both got the same key
    masks[seed] = (m_f, m_b)
  for half in (0, 1):
    assert not np.array_equal(masks[0][half], masks[1][half])
  np.testing.assert_array_equal(no_key, 1.0)


def test_stacked_layers_draw_their_own_masks():
  """Two identical probe layers under one key: the final carries reveal
  the first layer's mask, the outputs the second's."""
  net = jaxrnn.stack(_probe_layer(), _probe_layer())
  params = (probe_params(PROBE, 1), probe_params(PROBE, PROBE))  # W_x = 0
  ones = (jnp.ones(PROBE), jnp.ones(PROBE))
  apply = jax.jit(lambda key: net.apply(params, jnp.zeros((1, 1)), carry=ones, key=key))
  masks = {}
  for seed in (0, 1):
    ys, (m_0, m_1) = apply(jax.random.key(seed))
    np.testing.assert_array_equal(ys[0], m_1)
    _assert_mask(m_0, f"layer 0, key {seed}")
    _assert_mask(m_1, f"layer 1, key {seed}")
    assert not np.array_equal(m_0, m_1)  # fails if both layers got one key
    masks[seed] = (m_0, m_1)
  for k in (0, 1):
    assert not np.array_equal(masks[0][k], masks[1][k])


def test_regulariser_on_one_layer_of_a_stack():
  """Only the middle layer has zoneout: the first layer ignores the key,
  the middle layer's carry and the net's outputs follow it."""
  net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.gru(H), zoneout=0.3),
                     jaxrnn.readout(2))
  params = ref.random_params(net, 40)
  xs = ref.random_xs(41)
  apply = jax.jit(lambda key: net.apply(params, xs, length=4, key=key))
  (ys_a, c_a), (ys_b, c_b) = apply(jax.random.key(0)), apply(jax.random.key(1))
  ys_n, c_n = jax.jit(lambda: net.apply(params, xs, length=4))()
  ref.assert_tree_close(c_a[0], c_n[0], rtol=0, atol=0)  # deterministic layer
  ref.assert_tree_close(c_b[0], c_n[0], rtol=0, atol=0)
  for other in (c_b[1], c_n[1]):
    assert np.max(np.abs(np.asarray(c_a[1]) - np.asarray(other))) > 1e-3
  for other in (ys_b, ys_n):
    assert np.max(np.abs(np.asarray(ys_a) - np.asarray(other))) > 1e-3


@pytest.mark.parametrize("stochastic", ["forward", "backward"])
def test_regulariser_on_one_direction_of_a_bidirectional(stochastic):
  """Recurrent dropout on both directions, but W_h = 0 in one of them (the
  mask then multiplies nothing): that half ignores the key, the other half
  follows it, also when it runs backward."""
  layer = jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), recurrent_dropout=0.5)
  params = ref.random_params(layer, 42)
  quiet = "backward" if stochastic == "forward" else "forward"
  part = getattr(params, quiet)
  params = params._replace(**{quiet: part._replace(W_h=jnp.zeros_like(part.W_h))})
  xs = ref.random_xs(43)
  carry = ref.random_like(layer.init_carry(), 44)  # non-zero: the mask acts at every step
  apply = jax.jit(lambda key: layer.apply(params, xs, length=4, carry=carry, key=key)[0])
  ys_a, ys_b = apply(jax.random.key(0)), apply(jax.random.key(1))
  ys_n = jax.jit(lambda: layer.apply(params, xs, length=4, carry=carry)[0])()
  moving = slice(0, H) if stochastic == "forward" else slice(H, 2 * H)
  still = slice(H, 2 * H) if stochastic == "forward" else slice(0, H)
  np.testing.assert_array_equal(ys_a[:, still], ys_n[:, still])
  np.testing.assert_array_equal(ys_b[:, still], ys_n[:, still])
  for other in (ys_b, ys_n):
    # Every valid step of the stochastic half changes with the key.
    diff = np.abs(np.asarray(ys_a[:4, moving]) - np.asarray(other[:4, moving]))
    assert np.all(diff.max(axis=1) > 1e-4), diff


def test_bad_rates_and_keys():
  with pytest.raises(ValueError, match=r"^recurrent_dropout: expected a rate in \[0, 1\), "
                     r"got 1\.0$"):
    jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=1.0)
  with pytest.raises(TypeError, match=r"^zoneout: expected a rate in \[0, 1\) or rates "
                     r"structured like the cell's carry PyTreeDef\(.*LSTMState.*\), got "
                     r"\(0\.1, 0\.2, 0\.3\)$"):
    jaxrnn.rnn(jaxrnn.lstm(H), zoneout=(0.1, 0.2, 0.3))
  with pytest.raises(ValueError, match=r"^zoneout: expected a rate in \[0, 1\), got -0\.5$"):
    jaxrnn.rnn(jaxrnn.lstm(H), zoneout=jaxrnn.LSTMState(h=0.1, c=-0.5))
  with pytest.raises(ValueError, match=r"^dropout: expected a rate in \[0, 1\), got 2\.0$"):
    jaxrnn.stack(jaxrnn.readout(2), dropout=2.0)
  elman = jaxrnn.elman(H)
  user_cell = jaxrnn.Cell(elman.init_params, elman.init_carry,
                          lambda p, c, x: elman.cell_apply(p, c, x))
  with pytest.raises(ValueError, match=r"^recurrent_dropout: this cell has no recurrent "
                     r"product to drop inputs of \(user cells, the cells linear in the state, "
                     r"and mlstm\)$"):
    jaxrnn.rnn(user_cell, recurrent_dropout=0.1)
  layer = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.1)
  params = ref.random_params(layer, 0)
  with pytest.raises(TypeError, match=r"^key: expected a PRNG key from jax\.random\.key \(or "
                     r"a raw uint32 key of shape \(2,\)\), got int$"):
    layer.apply(params, jnp.ones((T, D)), key=3)
  with pytest.raises(ValueError, match=r"^key: expected ONE PRNG key \(shape \(\)\), got shape "
                     r"\(2,\); for a minibatch pass jax\.random\.split\(key, B\) through "
                     r"jax\.vmap$"):
    layer.apply(params, jnp.ones((T, D)), key=jax.random.split(jax.random.key(0), 2))
