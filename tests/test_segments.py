"""Segment resets (several sequences packed into one row) and the learned
initial carry."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import CASE_IDS, CASES, D, H

# Three sequences of lengths 3, 4 and 2 packed into a row of 12 steps, with
# 3 steps of padding at the end.
SEGMENTS = ((0, 3), (3, 7), (7, 9))
LENGTH, T = 9, 12
RESET = np.zeros(T, bool)
RESET[[3, 7]] = True


def packed_inputs(seed):
  xs = ref.random_xs(seed, (T, D))
  reset = RESET.copy()
  reset[LENGTH:] = True  # flags on padding never take effect
  return xs.at[LENGTH:].set(jnp.nan), jnp.asarray(reset)


@pytest.mark.parametrize("remat", [None, 2])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_packed_row_equals_separate_runs(case, remat):
  cell = case.make()
  params = ref.random_params(cell, 1)
  xs, reset = packed_inputs(2)
  zero = cell.init_carry()
  p = ref.np_params(params)
  for reverse in (False, True):
    layer = jaxrnn.rnn(cell, reverse=reverse, remat=remat)
    ys, carry = jax.jit(lambda p_, x, r: layer.apply(p_, x, length=LENGTH, reset=r))(
        params, xs, reset)
    for s, e in SEGMENTS:  # NumPy, each segment alone from zeros
      want, _ = ref.run(case.step, p, np.asarray(xs[s:e]), ref.np_carry(zero),
                        case.out_size, reverse=reverse)
      ref.assert_tree_close(ys[s:e], want, err_msg=f"{s}:{e} reverse={reverse}")
    # ... and the NumPy run of the packed row with its resets.
    want, _ = ref.run(case.step, p, np.asarray(xs), ref.np_carry(zero), case.out_size,
                      LENGTH, reverse, reset=RESET)
    ref.assert_tree_close(ys, want, err_msg=f"packed reverse={reverse}")
    assert bool(jnp.all(ys[LENGTH:] == 0))
    last = SEGMENTS[0] if reverse else SEGMENTS[-1]
    _, want_c = ref.run(case.step, p, np.asarray(xs[last[0]:last[1]]),
                        ref.np_carry(zero), case.out_size, reverse=reverse)
    ref.assert_tree_close(tuple(carry) if isinstance(carry, tuple) else carry, want_c)


@pytest.mark.parametrize("name", ["lstm", "gru", "elman_tanh"])
def test_packed_gradients_equal_the_sum_over_segments(name):
  """Fused path: d(loss over the packed row) = sum of the segments' grads."""
  cell = ref.BY_NAME[name].make()
  params = ref.random_params(cell, 3)
  xs, reset = packed_inputs(4)
  weights = ref.random_xs(5, (T, ref.BY_NAME[name].out_size))
  for reverse in (False, True):
    layer = jaxrnn.rnn(cell, reverse=reverse)

    def packed_loss(p, x):
      ys, _ = layer.apply(p, x, length=LENGTH, reset=reset)
      return jnp.sum(jnp.tanh(ys) * weights)

    def separate_loss(p, x):
      total = 0.0
      for s, e in SEGMENTS:
        ys, _ = layer.apply(p, x[s:e])
        total = total + jnp.sum(jnp.tanh(ys) * weights[s:e])
      return total

    g_p, g_x = jax.grad(packed_loss, argnums=(0, 1))(params, xs)
    clean = jnp.where(jnp.isnan(xs), 0.0, xs)
    s_p, s_x = jax.grad(separate_loss, argnums=(0, 1))(params, clean)
    ref.assert_tree_close(g_p, s_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_x[:LENGTH], s_x[:LENGTH], rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(g_x[LENGTH:] == 0))


def test_bidirectional_and_stack_respect_segments():
  net = jaxrnn.stack(jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H)),
                     jaxrnn.rnn(jaxrnn.gru(H), reverse=True), jaxrnn.readout(2))
  params = ref.random_params(net, 6)
  xs, reset = packed_inputs(7)
  ys, _ = net.apply(params, xs, length=LENGTH, reset=reset)
  for s, e in SEGMENTS:
    alone, _ = net.apply(params, xs[s:e])
    np.testing.assert_allclose(ys[s:e], alone, rtol=1e-5, atol=1e-6)
  assert bool(jnp.all(ys[LENGTH:] == 0))


def test_reset_at_step_zero_discards_the_given_carry():
  """Truncated BPTT: a row whose chunk starts a new sequence restarts."""
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  params = ref.random_params(layer, 8)
  xs = ref.random_xs(9, (5, D))
  stale = jnp.full((H,), 3.0)
  fresh, _ = layer.apply(params, xs)
  restarted, _ = layer.apply(params, xs, carry=stale, reset=jnp.zeros(5, bool).at[0].set(True))
  continued, _ = layer.apply(params, xs, carry=stale, reset=jnp.zeros(5, bool))
  np.testing.assert_allclose(restarted, fresh, rtol=1e-6)
  assert not np.allclose(continued, fresh)


def test_learned_carry_params_forward_and_gradients(x64):
  cell = jaxrnn.lstm(H)
  layer = jaxrnn.rnn(cell, learned_carry=True)
  params = layer.init_params(jax.random.key(0), D, jnp.float64)
  assert isinstance(params, jaxrnn.LearnedCarryParams)
  assert isinstance(params.initial_carry, jaxrnn.LSTMState)
  np.testing.assert_array_equal(params.initial_carry.c, np.zeros(H))
  params = ref.random_like(params, 1)
  xs = ref.random_xs(2, (6, D), np.float64)
  plain = jaxrnn.rnn(cell)
  # Starts from the learned carry: equal to passing it explicitly.
  ys, c = layer.apply(params, xs, length=5)
  ys2, c2 = plain.apply(params.cell, xs, length=5, carry=params.initial_carry)
  ref.assert_tree_close((ys, c), (ys2, c2), rtol=0, atol=0)
  # Its gradient is the gradient w.r.t. the carry argument.
  g = jax.grad(lambda p: jnp.sum(jnp.sin(layer.apply(p, xs, length=5)[0])))(params)
  g_c = jax.grad(lambda c0: jnp.sum(jnp.sin(plain.apply(params.cell, xs, length=5,
                                                         carry=c0)[0])))(params.initial_carry)
  ref.assert_tree_close(g.initial_carry, g_c, rtol=1e-12, atol=1e-14)
  # Segment resets restart from the learned carry, on the default (fused)
  # path: outputs and gradients against the NumPy LSTM.
  reset = np.zeros(6, bool)
  reset[3] = True
  weights = np.asarray(ref.random_xs(3, (6, H)), np.float64)

  @jax.jit
  def packed(p):
    ys, _ = layer.apply(p, xs, reset=jnp.asarray(reset))
    return jnp.sum(jnp.sin(ys) * weights), ys

  def packed_np(p_cell, initial):
    ys, _ = ref.run(ref.lstm_step, p_cell, xs, initial, H, reset=reset, initial=initial)
    return np.sum(np.sin(ys) * weights), ys

  (value, ys), g = jax.value_and_grad(packed, has_aux=True)(params)
  p_np, c_np = ref.np_params(params.cell), ref.np_carry(params.initial_carry)
  want, want_ys = packed_np(p_np, c_np)
  np.testing.assert_allclose(value, want, rtol=1e-12)
  ref.assert_tree_close(ys, want_ys, rtol=1e-12, atol=1e-12)
  rng = np.random.default_rng(4)
  eps = 1e-6
  d_p = {k: rng.standard_normal(v.shape) for k, v in p_np.items() if v is not None}
  d_c = tuple(rng.standard_normal(c.shape) for c in c_np)
  move = lambda e: ({k: v if v is None else v + e * d_p[k] for k, v in p_np.items()},
                    tuple(c + e * d for c, d in zip(c_np, d_c)))
  fd = (packed_np(*move(eps))[0] - packed_np(*move(-eps))[0]) / (2 * eps)
  analytic = (sum(np.sum(np.asarray(getattr(g.cell, k)) * d) for k, d in d_p.items())
              + sum(np.sum(np.asarray(a) * d) for a, d in zip(g.initial_carry, d_c)))
  np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)


def test_learned_carry_trains_with_optax():
  import optax
  layer = jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), learned_carry=True)
  params = layer.init_params(jax.random.key(0), D)
  xs = ref.random_xs(3, (4, D))
  opt = optax.sgd(0.1)
  state = opt.init(params)
  loss = lambda p: jnp.sum(layer.apply(p, xs)[0] - 1.0) ** 2
  grads = jax.grad(loss)(params)
  updates, state = opt.update(grads, state)
  new = optax.apply_updates(params, updates)
  assert float(jnp.max(jnp.abs(new.forward.initial_carry))) > 0
  assert float(loss(new)) < float(loss(params))


def test_bad_resets():
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = layer.init_params(jax.random.key(0), D)
  xs = jnp.ones((5, D))
  with pytest.raises(ValueError, match=r"^reset: expected shape \(T,\) = \(5,\) \(one flag "
                     r"per step of ONE sequence; vmap it with xs\), got shape \(4,\)$"):
    layer.apply(params, xs, reset=jnp.zeros((4,), bool))
  with pytest.raises(TypeError, match=r"^reset: expected a bool array, got dtype int32$"):
    layer.apply(params, xs, reset=jnp.zeros((5,), jnp.int32))
  learned = jaxrnn.rnn(jaxrnn.lstm(H), learned_carry=True)
  with pytest.raises(TypeError, match=r"^params: rnn\(\.\.\., learned_carry=True\) expects "
                     r"LearnedCarryParams, got LSTMParams; were these params made by another "
                     r"cell or layer\?$"):
    learned.apply(params, xs)


def test_no_torch_equivalent_for_learned_carry_or_zoneout():
  from jaxrnn import interop
  layer = jaxrnn.rnn(jaxrnn.lstm(H), learned_carry=True)
  with pytest.raises(ValueError, match=r"^layer: torch modules start from a given or zero "
                     r"state; a learned initial carry \(learned_carry=True\) has no torch "
                     r"equivalent$"):
    interop.to_torch(layer, layer.init_params(jax.random.key(0), D))
  layer = jaxrnn.stack(jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), zoneout=0.1))
  with pytest.raises(ValueError, match=r"^layer\.layers\[0\]: torch has no zoneout; "
                     r"zoneout=0\.1 changes the evaluated model and has no torch equivalent$"):
    interop.to_torch(layer, layer.init_params(jax.random.key(0), D))
