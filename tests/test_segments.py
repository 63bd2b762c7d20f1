"""Segment resets (several sequences packed into one row) and the learned
initial carry."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import CASE_IDS, D, H

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


@functools.lru_cache(maxsize=None)
def packed_program(name, remat):
  """``(cell, f)``: ``f(params, xs, reset, carry)`` returns the results of
  the forward and the reversed layer on a packed row, jitted."""
  cell = ref.BY_NAME[name].make()
  layers = [jaxrnn.rnn(cell, reverse=reverse, remat=remat) for reverse in (False, True)]
  return cell, jax.jit(lambda p, x, r, c: [layer.apply(p, x, length=LENGTH, reset=r, carry=c)
                                           for layer in layers])


# Every cell without remat, and remat (chunks of 2 steps, so that resets
# fall inside chunks and on their borders) for one cell per path: the fused
# path with a hand-written tangent, without one, and the reference scan.
# Chunking is the engine's, the same for every cell of a path.
PACKED = [(name, None) for name in CASE_IDS] + [
    (name, 2) for name in ("elman_tanh", "lstm_proj", "gru_before")]


@pytest.mark.parametrize("name, remat", PACKED, ids=[f"{n}-remat{r}" for n, r in PACKED])
def test_packed_row_equals_separate_runs(name, remat):
  case = ref.BY_NAME[name]
  cell, f = packed_program(name, remat)
  params = ref.random_params(cell, 1)
  xs, reset = packed_inputs(2)
  zero = cell.init_carry()
  # The carry given: the first segment in scan order starts from it.
  given = ref.random_like(zero, 3)
  p = ref.np_params(params)
  for reverse, (ys, carry) in zip((False, True), f(params, xs, reset, given)):
    for s, e in SEGMENTS:  # NumPy, each segment alone (from zeros, or the carry given)
      first = e == LENGTH if reverse else s == 0
      want, _ = ref.run(case.step, p, np.asarray(xs[s:e]), ref.np_carry(given if first else zero),
                        case.out_size, reverse=reverse)
      ref.assert_tree_close(ys[s:e], want, err_msg=f"{s}:{e} reverse={reverse}")
    # ... and the NumPy run of the packed row with its resets.
    want, _ = ref.run(case.step, p, np.asarray(xs), ref.np_carry(given), case.out_size,
                      LENGTH, reverse, reset=RESET)
    ref.assert_tree_close(ys, want, err_msg=f"packed reverse={reverse}")
    np.testing.assert_array_equal(ys[LENGTH:], 0)
    last = SEGMENTS[0] if reverse else SEGMENTS[-1]
    _, want_c = ref.run(case.step, p, np.asarray(xs[last[0]:last[1]]),
                        ref.np_carry(zero), case.out_size, reverse=reverse)
    ref.assert_tree_close(tuple(carry) if isinstance(carry, tuple) else carry, want_c)


# One direction per cell, both among them: the tangent scan restarts the
# same way for every cell of the fused path.
PACKED_GRADIENTS = {"lstm": (True,), "gru": (False,), "elman_tanh": (True,)}


@pytest.mark.parametrize("name", sorted(PACKED_GRADIENTS))
def test_packed_gradients_equal_the_sum_over_segments(name):
  """Fused path: d(loss over the packed row) = sum of the segments' grads."""
  cell = ref.BY_NAME[name].make()
  params = ref.random_params(cell, 3)
  xs, reset = packed_inputs(4)
  clean = jnp.asarray(np.nan_to_num(np.asarray(xs), nan=0.0))
  weights = np.asarray(ref.random_xs(5, (T, ref.BY_NAME[name].out_size)))
  # unroll 1: a smaller program
  layers = [jaxrnn.rnn(cell, reverse=reverse, unroll=1) for reverse in PACKED_GRADIENTS[name]]

  def packed_loss(p, x, layer):
    ys, _ = layer.apply(p, x, length=LENGTH, reset=reset)
    return jnp.sum(jnp.tanh(ys) * weights)

  # The segments alone: each at the start of its own sequence, as long as
  # the longest and cut at its own length (one vmapped scan).
  longest = max(e - s for s, e in SEGMENTS)
  starts = np.array([s for s, _ in SEGMENTS])
  lengths = np.array([e - s for s, e in SEGMENTS])
  steps = starts[:, None] + np.arange(longest)  # (segments, longest) indices into the row
  in_segment = np.arange(longest) < lengths[:, None]

  def separate_loss(p, x, layer):
    ys, _ = jax.vmap(lambda x, n: layer.apply(p, x, length=n))(
        jnp.where(in_segment[..., None], x[np.minimum(steps, T - 1)], 0.0), lengths)
    return jnp.sum(jnp.tanh(ys) * jnp.where(in_segment[..., None],
                                            weights[np.minimum(steps, T - 1)], 0.0))

  @jax.jit  # both gradients of every layer, one program
  def gradients(p, x, clean):
    return [(jax.grad(packed_loss, argnums=(0, 1))(p, x, layer),
             jax.grad(separate_loss, argnums=(0, 1))(p, clean, layer)) for layer in layers]

  for reverse, ((g_p, g_x), (s_p, s_x)) in zip(PACKED_GRADIENTS[name],
                                               gradients(params, xs, clean)):
    msg = f"reverse={reverse}"
    ref.assert_tree_close(g_p, s_p, rtol=1e-5, atol=1e-6, err_msg=msg)
    np.testing.assert_allclose(g_x[:LENGTH], s_x[:LENGTH], rtol=1e-5, atol=1e-6, err_msg=msg)
    np.testing.assert_array_equal(g_x[LENGTH:], 0, err_msg=msg)


def test_bidirectional_and_stack_respect_segments():
  net = jaxrnn.stack(jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H)),
                     jaxrnn.rnn(jaxrnn.gru(H), reverse=True), jaxrnn.readout(2))
  params = ref.random_params(net, 6)
  xs, reset = packed_inputs(7)

  @jax.jit
  def packed_and_alone(params, xs, reset):
    ys, _ = net.apply(params, xs, length=LENGTH, reset=reset)
    return ys, [net.apply(params, xs[s:e])[0] for s, e in SEGMENTS]

  ys, alone = packed_and_alone(params, xs, reset)
  for (s, e), want in zip(SEGMENTS, alone):
    np.testing.assert_allclose(ys[s:e], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(ys[LENGTH:], 0)


def test_reset_at_step_zero_discards_the_given_carry():
  """Truncated BPTT: a row whose chunk starts a new sequence restarts."""
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  params = ref.random_params(layer, 8)
  xs = ref.random_xs(9, (5, D))
  stale = jnp.full((H,), 3.0)
  first = np.zeros(5, bool)
  first[0] = True

  @jax.jit
  def runs(params, xs, stale):
    return (layer.apply(params, xs)[0],
            layer.apply(params, xs, carry=stale, reset=jnp.asarray(first))[0],
            layer.apply(params, xs, carry=stale, reset=jnp.zeros(5, bool))[0])

  fresh, restarted, continued = runs(params, xs, stale)
  np.testing.assert_allclose(restarted, fresh, rtol=1e-6)
  assert not np.allclose(continued, fresh)


def test_learned_carry_params_forward_and_gradients(x64):
  cell = jaxrnn.lstm(H)
  layer = jaxrnn.rnn(cell, learned_carry=True)
  shapes = jax.eval_shape(lambda k: layer.init_params(k, D, jnp.float64), jax.random.key(0))
  assert isinstance(shapes, jaxrnn.LearnedCarryParams)
  assert isinstance(shapes.initial_carry, jaxrnn.LSTMState)
  assert jax.tree_util.tree_leaves(shapes)[0].dtype == jnp.float64
  params = ref.random_like(shapes, 1)
  xs = ref.random_xs(2, (6, D), np.float64)
  plain = jaxrnn.rnn(cell)
  # Segment resets restart from the learned carry, on the default (fused)
  # path: outputs and gradients against the NumPy LSTM.
  reset = np.zeros(6, bool)
  reset[3] = True
  weights = np.asarray(ref.random_xs(3, (6, H)), np.float64)

  def packed(p):
    ys, _ = layer.apply(p, xs, reset=jnp.asarray(reset))
    return jnp.sum(jnp.sin(ys) * weights), ys

  @jax.jit
  def program(params, key):
    init = layer.init_params(key, D, jnp.float64).initial_carry
    learned = layer.apply(params, xs, length=5)
    explicit = plain.apply(params.cell, xs, length=5, carry=params.initial_carry)
    g = jax.grad(lambda p: jnp.sum(jnp.sin(layer.apply(p, xs, length=5)[0])))(params)
    g_c = jax.grad(lambda c0: jnp.sum(jnp.sin(plain.apply(params.cell, xs, length=5,
                                                           carry=c0)[0])))(params.initial_carry)
    return init, learned, explicit, g, g_c, jax.value_and_grad(packed, has_aux=True)(params)

  init, learned, explicit, g, g_c, ((value, ys), g_packed) = program(params, jax.random.key(0))
  np.testing.assert_array_equal(init.c, np.zeros(H))
  # Starts from the learned carry: equal to passing it explicitly.
  ref.assert_tree_close(learned, explicit, rtol=0, atol=0)
  # Its gradient is the gradient w.r.t. the carry argument.
  ref.assert_tree_close(g.initial_carry, g_c, rtol=1e-12, atol=1e-14)

  def packed_np(p_cell, initial):
    ys, _ = ref.run(ref.lstm_step, p_cell, xs, initial, H, reset=reset, initial=initial)
    return np.sum(np.sin(ys) * weights), ys

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
  analytic = (sum(np.sum(np.asarray(getattr(g_packed.cell, k)) * d) for k, d in d_p.items())
              + sum(np.sum(np.asarray(a) * d) for a, d in zip(g_packed.initial_carry, d_c)))
  np.testing.assert_allclose(analytic, fd, rtol=1e-7, atol=1e-9)


def test_learned_carry_trains_with_optax():
  import optax
  layer = jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), learned_carry=True)
  xs = ref.random_xs(3, (4, D))
  opt = optax.sgd(0.1)
  loss = lambda p: jnp.sum(layer.apply(p, xs)[0] - 1.0) ** 2

  params = layer.init_params(jax.random.key(0), D)
  np.testing.assert_array_equal(params.forward.initial_carry, 0)  # init_params' zeros
  value_and_grad = jax.jit(jax.value_and_grad(loss))  # one program, both points
  before, grads = value_and_grad(params)
  updates, _ = opt.update(grads, opt.init(params))
  new = optax.apply_updates(params, updates)
  assert float(jnp.max(jnp.abs(new.forward.initial_carry))) > 0
  assert float(value_and_grad(new)[0]) < float(before)


def test_bad_resets():
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = ref.random_params(layer, 0)
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
    interop.to_torch(layer, ref.random_params(layer, 0))
  layer = jaxrnn.stack(jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), zoneout=0.1))
  with pytest.raises(ValueError, match=r"^layer\.layers\[0\]: torch has no zoneout; "
                     r"zoneout=0\.1 changes the evaluated model and has no torch equivalent$"):
    interop.to_torch(layer, ref.random_params(layer, 0))
