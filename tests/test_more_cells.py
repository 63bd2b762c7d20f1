"""`mgu` and `conv_lstm` against float64 NumPy references of the papers.

The references (tests/reference.py) are written from the equations (Zhou et
al. 2016; Shi et al. 2015: the LSTM with convolution products), with the
'SAME' convolution as explicit loops over output positions and kernel
offsets on a zero-padded map (a cross-correlation, as every deep learning
library computes it); nothing there calls jax.lax. Sequences follow the
``length`` contract literally: only the valid prefix is looked at, a
reversed run visits ``xs[length-1], ..., xs[0]``, padded outputs are zero.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from jaxrnn._src.engine.hooks import hooks_of
from reference import assert_tree_close, np_params, random_like, random_params, sigmoid

D, H, T = 3, 4, 6  # mgu: input size, hidden size, steps
CIN, C, ROWS, COLS, TC = 2, 3, 5, 4, 4  # conv_lstm: channels, map, steps
KERNEL = (3, 3)


# ---------------------------------------------------------------------------
# The NumPy references are tests/reference.py's (the LSTM with convolution
# products for conv_lstm).

mgu_step, conv_lstm_step, run = ref.mgu_step, ref.conv_lstm_step, ref.run


def np_carry(carry):
  if isinstance(carry, jaxrnn.LSTMState):
    return tuple(np.asarray(v, np.float64) for v in carry)
  return np.asarray(carry, np.float64)


def to_state(carry):
  """A NumPy ``(h, c)`` tuple as an `LSTMState` (arrays kept as they are)."""
  return jaxrnn.LSTMState(*carry) if isinstance(carry, tuple) else carry


def rng_array(seed, shape, scale=1.0):
  return scale * np.random.default_rng(seed).standard_normal(shape)


def with_nan_padding(xs, length, dtype=np.float32):
  xs = np.array(xs, dtype)
  xs[length:] = np.nan
  return jnp.asarray(xs)


# ---------------------------------------------------------------------------
# The two cells under test, as (cell, NumPy step, step input shape).


def mgu_setup(**options):
  return jaxrnn.mgu(H, **options), mgu_step, (D,), (H,)


def conv_setup(kernel=KERNEL, **options):
  cell = jaxrnn.conv_lstm(C, kernel, (ROWS, COLS), **options)
  return cell, conv_lstm_step, (ROWS, COLS, CIN), (ROWS, COLS, C)


SETUPS = {
    "mgu": mgu_setup,
    "mgu_nobias": functools.partial(mgu_setup, bias=False),
    "conv": conv_setup,
    "conv_peephole": functools.partial(conv_setup, peephole=True),
    "conv_nobias_1x3": functools.partial(conv_setup, kernel=(1, 3), bias=False),
}
NUM_STEPS = {"mgu": T, "conv": TC}


def setup(name):
  cell, step, in_shape, out_shape = SETUPS[name]()
  num_steps = NUM_STEPS[name.split("_")[0]]
  return cell, step, in_shape, out_shape, num_steps


def params_for(cell, in_shape, seed):
  return random_params(cell, seed, input_size=in_shape[-1])


def leaves(tree):
  return jax.tree_util.tree_leaves(tree)


def to_numpy(tree):
  """Every array leaf as NumPy (indexing it then compiles nothing)."""
  return jax.tree_util.tree_map(np.asarray, tree)


# ---------------------------------------------------------------------------
# One step.


@pytest.mark.parametrize("name", list(SETUPS))
def test_cell_apply_matches_numpy(name):
  cell, step, in_shape, out_shape, _ = setup(name)
  params = params_for(cell, in_shape, 0)
  carry = random_like(cell.init_carry(), 1)
  xs = rng_array(2, (3,) + in_shape)

  hooks = hooks_of(cell)

  @jax.jit
  def steps(params, carry, xs):
    outs = []
    for t in range(3):  # chained steps from a non-zero carry
      carry, y = cell.cell_apply(params, carry, xs[t])
      outs.append((carry, y))
    # The hoisted form used by rnn: every step's input projection at once.
    zx = hooks.project(params, xs)
    return outs, zx, [hooks.step(params, carry, zx[t], None) for t in range(3)]

  outs, zx, recurrences = to_numpy(steps(params, carry, jnp.asarray(xs, jnp.float32)))
  p_np, c_np = np_params(params), np_carry(carry)
  assert zx.shape[:-1] == (3,) + in_shape[:-1]
  for t, (carry_t, y) in enumerate(outs):
    c_np, y_np = step(p_np, c_np, xs[t])
    assert y.shape == out_shape and y.dtype == jnp.float32
    assert_tree_close((carry_t, y), (c_np, y_np), err_msg=f"step {t}")
  for t in range(3):  # all from the carry after the chained steps
    assert_tree_close(recurrences[t], step(p_np, c_np, xs[t]), err_msg=f"recurrence {t}")


def test_conv_lstm_input_projection_is_one_convolution():
  cell = conv_setup()[0]
  params = params_for(cell, (CIN,), 0)
  jaxpr = jax.make_jaxpr(hooks_of(cell).project)(params, jnp.ones((TC, ROWS, COLS, CIN)))
  convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  assert len(convs) == 1
  assert convs[0].invars[0].aval.shape == (TC, ROWS, COLS, CIN)  # T is the batch


def test_init_params_and_carry():
  shapes = jax.eval_shape(lambda k: jaxrnn.mgu(H).init_params(k, D), jax.random.key(0))
  assert isinstance(shapes, jaxrnn.MGUParams)
  assert ((shapes.W_x.shape, shapes.W_h.shape, shapes.b.shape)
          == ((D, 2 * H), (H, 2 * H), (2 * H,)))
  nobias = jax.eval_shape(lambda k: jaxrnn.mgu(H, bias=False).init_params(k, D),
                          jax.random.key(0))
  assert nobias.b is None
  assert jaxrnn.mgu(H).init_carry().shape == (H,)
  assert dict(jaxrnn.mgu(H).config) == {"kind": "mgu", "hidden_size": H, "bias": True}

  channels, in_channels = 16, 8
  cell = jaxrnn.conv_lstm(channels, 3, (ROWS, COLS), peephole=True, forget_bias=2.0)
  p = jax.jit(cell.init_params, static_argnums=1)(jax.random.key(0), in_channels)
  assert isinstance(p, jaxrnn.ConvLSTMParams)
  assert p.W_x.shape == (3, 3, in_channels, 4 * channels)
  assert p.W_h.shape == (3, 3, channels, 4 * channels)
  assert p.W_c.shape == (3, ROWS, COLS, channels)
  np.testing.assert_array_equal(p.W_c, 0)  # starts as a plain ConvLSTM
  np.testing.assert_array_equal(p.b, np.repeat([0.0, 2.0, 0.0, 0.0], channels))
  for k in range(4):  # each gate's kernel, as a (9C, C) matrix, has orthonormal columns
    block = np.asarray(p.W_h[..., k * channels:(k + 1) * channels], np.float64)
    block = block.reshape(-1, channels)
    np.testing.assert_allclose(block.T @ block, np.eye(channels), atol=1e-5)
  # LeCun normal over the fan-in kh * kw * in_channels = 72 (4,608 draws).
  np.testing.assert_allclose(np.std(np.asarray(p.W_x)), np.sqrt(1 / 72), rtol=0.05)
  carry = cell.init_carry()
  assert isinstance(carry, jaxrnn.LSTMState)
  assert carry.h.shape == carry.c.shape == (ROWS, COLS, channels)
  assert cell.input_ndim == 3 and cell.hidden_size == cell.output_size == channels
  assert dict(cell.config)["kernel_size"] == (3, 3)
  nobias = jaxrnn.conv_lstm(C, (1, 3), (ROWS, COLS), bias=False)
  shapes = jax.eval_shape(lambda k: nobias.init_params(k, CIN), jax.random.key(0))
  assert shapes.b is None and shapes.W_c is None and shapes.W_x.shape == (1, 3, CIN, 4 * C)


# ---------------------------------------------------------------------------
# Sequences: length (NaN padding), reverse, gradients.


# One direction per cell: reversal is the engine's, the same for every cell
# of a path (mgu runs the reference scan, conv_lstm with peepholes the fused
# one), and both directions of both cells are checked against NumPy in
# test_vmap_jit_bidirectional_matches_loop_over_examples.
@pytest.mark.parametrize("name, reverse", [("mgu", False), ("conv_peephole", True)])
def test_rnn_outputs_and_gradients_match_numpy(name, reverse, x64):
  """A scan with a traced length and NaN padding, in float64: outputs and
  final carries against the NumPy reference, gradients (params, xs,
  initial carry) against its central differences."""
  cell, step, in_shape, out_shape, num_steps = setup(name)
  layers = (jaxrnn.rnn(cell, reverse=reverse, unroll=1),)  # unroll 1: a smaller program
  params = params_for(cell, in_shape, 10)
  assert params.W_x.dtype == jnp.float64
  xs = rng_array(11, (num_steps,) + in_shape)
  carry0 = random_like(cell.init_carry(), 12)
  w_ys = rng_array(13, (num_steps,) + out_shape)
  w_c = [rng_array(14 + k, np.shape(c)) for k, c in enumerate(leaves(carry0))]

  def loss(layer, params, xs, length, carry):
    ys, carry = layer.apply(params, xs, length=length, carry=carry)
    value = jnp.sum(ys * w_ys) + sum(jnp.sum(c * w) for c, w in zip(leaves(carry), w_c))
    return value, (ys, carry)

  @jax.jit
  def program(params, xs, length, carry):
    return [jax.grad(functools.partial(loss, layer), argnums=(0, 1, 3), has_aux=True)(
        params, xs, length, carry) for layer in layers]

  p_np, c_np = np_params(params), np_carry(carry0)
  c_leaves = c_np if isinstance(c_np, tuple) else (c_np,)
  rng = np.random.default_rng(20)
  eps = 1e-6
  for length in (num_steps, num_steps - 2, 0):
    results = to_numpy(program(params, with_nan_padding(xs, length, np.float64), length,
                               carry0))
    for (g_params, g_xs, g_carry), (ys, carry) in results:
      msg = f"length={length} reverse={reverse}"
      ys_np, k_np = run(step, p_np, xs, c_np, out_shape, length, reverse)
      assert_tree_close((ys, to_state(carry)), (ys_np, to_state(k_np)), rtol=1e-10,
                        atol=1e-12, err_msg=msg)
      np.testing.assert_array_equal(ys[length:], 0, err_msg=msg)
      for leaf in leaves((g_params, g_xs, g_carry)):
        assert np.all(np.isfinite(leaf)), msg
      np.testing.assert_array_equal(g_xs[length:], 0, err_msg=msg)

      def loss_np(p, xs, carry_leaves):
        carry = carry_leaves if isinstance(c_np, tuple) else carry_leaves[0]
        ys, carry = run(step, p, xs, carry, out_shape, length, reverse)
        final = carry if isinstance(carry, tuple) else (carry,)
        return np.sum(ys * w_ys) + sum(np.sum(c * w) for c, w in zip(final, w_c))

      def check(analytic, move, what):  # central difference along a random direction
        fd = (loss_np(*move(eps)) - loss_np(*move(-eps))) / (2 * eps)
        np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{what}, {msg}")

      for field, value in p_np.items():
        if value is not None:
          d = rng.standard_normal(value.shape)
          check(np.sum(np.asarray(getattr(g_params, field)) * d),
                lambda e: ({**p_np, field: value + e * d}, xs, c_leaves), field)
      d = rng.standard_normal(xs.shape)
      check(np.sum(np.asarray(g_xs) * d), lambda e: (p_np, xs + e * d, c_leaves), "xs")
      ds = [rng.standard_normal(c.shape) for c in c_leaves]
      check(sum(np.sum(np.asarray(g) * d) for g, d in zip(leaves(g_carry), ds)),
            lambda e: (p_np, xs, tuple(c + e * d for c, d in zip(c_leaves, ds))),
            "carry")


@pytest.mark.parametrize("name", ["mgu", "conv_peephole"])
def test_vmap_jit_bidirectional_matches_loop_over_examples(name):
  """A padded minibatch through jit(vmap(bidirectional)) against a Python
  loop over examples, each running the NumPy reference forward and back."""
  cell, step, in_shape, out_shape, num_steps = setup(name)
  other = jaxrnn.mgu(H, bias=False) if name == "mgu" else conv_setup(kernel=(1, 3))[0]
  layer = jaxrnn.bidirectional(cell, other)
  params = random_params(layer, 30, input_size=in_shape[-1])
  lengths = np.array([num_steps, 2, 0])
  xs = rng_array(31, (3, num_steps) + in_shape)
  padded = jnp.stack([with_nan_padding(x, n) for x, n in zip(xs, lengths)])
  forward = jax.jit(jax.vmap(layer.apply, in_axes=(None, 0)))
  ys, carry = to_numpy(forward(params, padded, length=jnp.asarray(lengths)))
  assert ys.shape == (3, num_steps) + out_shape[:-1] + (2 * out_shape[-1],)
  p_f, p_b = np_params(params.forward), np_params(params.backward)
  for b, n in enumerate(lengths):
    ys_f, c_f = run(step, p_f, xs[b], np_carry(cell.init_carry()), out_shape, n)
    ys_b, c_b = run(step, p_b, xs[b], np_carry(other.init_carry()), out_shape, n,
                    reverse=True)
    got = jax.tree_util.tree_map(lambda v: v[b], (ys, carry.forward, carry.backward))
    assert_tree_close((got[0], to_state(got[1]), to_state(got[2])),
                      (np.concatenate([ys_f, ys_b], -1), to_state(c_f), to_state(c_b)),
                      err_msg=f"example {b}")


def test_stack_of_mgu_layers_matches_numpy():
  net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.mgu(H)), jaxrnn.rnn(jaxrnn.mgu(2), reverse=True))
  params = random_params(net, 40)
  xs = rng_array(41, (T, D))
  ys, (c0, c1) = jax.jit(net.apply)(params, with_nan_padding(xs, 4), length=4)
  ys0, k0 = run(mgu_step, np_params(params[0]), xs, np.zeros(H), (H,), 4)
  ys1, k1 = run(mgu_step, np_params(params[1]), ys0, np.zeros(2), (2,), 4, reverse=True)
  assert_tree_close((ys, c0, c1), (ys1, k0, k1))


def test_stack_of_conv_lstm_layers_matches_numpy():
  first = jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole=True)
  second = jaxrnn.conv_lstm(2, (1, 3), (ROWS, COLS))
  net = jaxrnn.stack(jaxrnn.rnn(first), jaxrnn.rnn(second, reverse=True))
  params = (random_params(first, 42, input_size=CIN),
            random_params(second, 43, input_size=C))
  xs = rng_array(44, (TC, ROWS, COLS, CIN))
  length = 3
  ys, (c0, c1) = jax.jit(net.apply)(params, with_nan_padding(xs, length), length=length)
  zeros = lambda n: (np.zeros((ROWS, COLS, n)),) * 2
  ys0, k0 = run(conv_lstm_step, np_params(params[0]), xs, zeros(C), (ROWS, COLS, C),
                length)
  ys1, k1 = run(conv_lstm_step, np_params(params[1]), ys0, zeros(2), (ROWS, COLS, 2),
                length, reverse=True)
  assert_tree_close((ys, to_state(c0), to_state(c1)), (ys1, to_state(k0), to_state(k1)))


# ---------------------------------------------------------------------------
# Variational recurrent dropout: the mask enters the recurrent products only.


def masked_steps(cell):
  """``f(params, carry, x, masks)``: one step per mask, and one without
  (the engine's step, which takes the mask that rnn draws per sequence)."""
  hooks = hooks_of(cell)

  @jax.jit
  def f(params, carry, x, masks):
    carry, x = to_float32((carry, x))
    zx = hooks.project(params, x)
    return ([hooks.step(params, carry, zx, m) for m in to_float32(masks)],
            hooks.step(params, carry, zx, None))

  return f


def to_float32(tree):
  return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), tree)


def test_mgu_recurrent_mask():
  cell = jaxrnn.mgu(H)
  params = random_params(cell, 50)
  p = np_params(params)
  h = rng_array(51, (H,))
  x = rng_array(52, (D,))
  masks = [(rng_array(53, (H,)) > 0) / 0.7, np.ones(H), np.zeros(H)]
  got, no_mask = to_numpy(masked_steps(cell)(params, h, x, masks))
  for mask, got_m in zip(masks, got):
    assert_tree_close(got_m, mgu_step(p, h, x, h_mask=mask))
  # All-zero mask, by hand: no recurrent product, but (1 - f) ⊙ h_{t-1} stays.
  f = sigmoid(x @ p["W_x"][:, :H] + p["b"][:H])
  want = (1 - f) * h + f * np.tanh(x @ p["W_x"][:, H:] + p["b"][H:])
  assert_tree_close(got[2][0], want)
  assert_tree_close(no_mask, mgu_step(p, h, x))


def test_conv_lstm_recurrent_mask():
  cell = conv_setup(peephole=True)[0]
  params = params_for(cell, (CIN,), 54)
  p = np_params(params)
  carry = tuple(rng_array(55 + k, (ROWS, COLS, C)) for k in range(2))
  x = rng_array(57, (ROWS, COLS, CIN))
  masks = [(rng_array(58, (ROWS, COLS, C)) > 0) / 0.6, np.zeros((ROWS, COLS, C))]
  got, no_mask = to_numpy(masked_steps(cell)(params, jaxrnn.LSTMState(*carry), x, masks))
  for mask, got_m in zip(masks, got):
    assert_tree_close(got_m, conv_lstm_step(p, carry, x, h_mask=mask))
  assert_tree_close(no_mask, conv_lstm_step(p, carry, x))
  # With a zero mask the peepholes still see C_{t-1}: compare to H_{t-1} = 0.
  (_, c_zero_h), _ = conv_lstm_step(p, (np.zeros_like(carry[0]), carry[1]), x)
  assert_tree_close(got[1][0].c, c_zero_h)


# ---------------------------------------------------------------------------
# Flax.


def test_mgu_matches_flax_where_the_models_coincide():
  """Flax's MGUCell is ``h' = (1 - f) n + f h`` with a reset-after candidate
  (a different model from the paper). The two coincide exactly when the
  candidate has no recurrent term and Flax's gate is the complement of
  ours, ``f_flax = 1 - f = σ(-z_f)``: every other part (both gate matrices,
  both biases, the interpolation, many steps from a non-zero state) is
  compared. The recurrent candidate term is checked against NumPy above."""
  cell = jaxrnn.mgu(H)
  params = jax.tree_util.tree_map(np.array, random_params(cell, 60))  # float32 copies
  params.W_h[:, H:] = 0
  flax_cell = nn.MGUCell(features=H, reset_gate=False)
  variables = {"params": {
      "if": {"kernel": -params.W_x[:, :H], "bias": -params.b[:H]},
      "hf": {"kernel": -params.W_h[:, :H]},
      "in": {"kernel": params.W_x[:, H:], "bias": params.b[H:]},
      "hn": {"kernel": np.zeros((H, H), np.float32)},
  }}
  xs = jnp.asarray(rng_array(61, (2, T, D)), jnp.float32)
  h0 = jnp.asarray(rng_array(62, (2, H), 0.5), jnp.float32)

  @jax.jit
  def both(variables, params, xs, h0):
    h, want = h0, []
    for t in range(T):
      h, y = flax_cell.apply(variables, h, xs[:, t])
      want.append(y)
    apply = jax.vmap(jaxrnn.rnn(cell).apply, in_axes=(None, 0))
    return apply(params, xs, carry=h0), (jnp.stack(want, 1), h)

  got, want = to_numpy(both(variables, params, xs, h0))
  assert_tree_close(got, want)


def test_conv_lstm_matches_flax():
  """Flax's ConvLSTMCell: gates (i, g, f, o), a bias in each convolution,
  and a constant 1 added to the forget gate in the step."""
  cell = jaxrnn.conv_lstm(C, KERNEL, (ROWS, COLS))
  flax_cell = nn.ConvLSTMCell(features=C, kernel_size=KERNEL)
  maps = jnp.zeros((2, ROWS, COLS, C))
  variables = jax.eval_shape(flax_cell.init, jax.random.key(0), (maps, maps),
                             jnp.zeros((2, ROWS, COLS, CIN)))
  variables = to_numpy(random_like(variables, 63))
  v = variables["params"]
  perm = np.concatenate([np.arange(C) + k * C for k in (0, 2, 1, 3)])  # ours from flax
  b = (v["ih"]["bias"] + v["hh"]["bias"])[perm] + np.repeat([0.0, 1.0, 0.0, 0.0], C)
  params = jaxrnn.ConvLSTMParams(v["ih"]["kernel"][..., perm], v["hh"]["kernel"][..., perm],
                                 b.astype(np.float32), None)
  xs = jnp.asarray(rng_array(64, (2, TC, ROWS, COLS, CIN)), jnp.float32)
  c0, h0 = (jnp.asarray(rng_array(65 + k, (2, ROWS, COLS, C), 0.5), jnp.float32)
            for k in range(2))

  @jax.jit
  def both(variables, params, xs, c0, h0):
    carry, want = (c0, h0), []
    for t in range(TC):
      carry, y = flax_cell.apply(variables, carry, xs[:, t])
      want.append(y)
    apply = jax.vmap(jaxrnn.rnn(cell).apply, in_axes=(None, 0))
    ys, final = apply(params, xs, carry=jaxrnn.LSTMState(h0, c0))
    return (ys, final.h, final.c), (jnp.stack(want, 1), carry[1], carry[0])

  got, want = to_numpy(both(variables, params, xs, c0, h0))
  assert_tree_close(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Numerics and bad input.


def test_conv_lstm_bfloat16_params_accumulate_in_float32():
  cell = conv_setup(peephole=True)[0]
  params = params_for(cell, (CIN,), 70)
  p16 = jax.tree_util.tree_map(lambda v: np.asarray(v).astype(jnp.bfloat16), params)
  xs = rng_array(71, (TC, ROWS, COLS, CIN)).astype(np.float32)
  ys, carry = jax.jit(jaxrnn.rnn(cell).apply)(p16, xs)
  assert ys.dtype == carry.c.dtype == jnp.float32
  # The policy in NumPy: both operands of every product (the inputs and
  # H_{t-1} as well as the kernels) rounded to bfloat16, the rest exact.
  ys_np, (h_np, c_np) = run(functools.partial(conv_lstm_step, dot=ref.bf16_dot),
                            np_params(p16), xs, (np.zeros((ROWS, COLS, C)),) * 2,
                            (ROWS, COLS, C))
  # Measured: 1.2e-7 (1.6e-3 without rounding the operands).
  assert_tree_close((ys, carry.h, carry.c), (ys_np, h_np, c_np), rtol=0, atol=1e-6)


def test_mgu_bad_input():
  cell = jaxrnn.mgu(H)
  params = random_params(cell, 0)
  h = cell.init_carry()
  owner = r"mgu\(hidden_size=4\)"
  with pytest.raises(ValueError, match=r"^hidden_size: expected a positive int, got 0$"):
    jaxrnn.mgu(0)
  with pytest.raises(TypeError, match=r"^bias: expected a bool, got int 1$"):
    jaxrnn.mgu(H, bias=1)
  gru_params = random_params(jaxrnn.gru(H), 0)
  with pytest.raises(TypeError, match=rf"^params: {owner} expects MGUParams, got GRUParams; "
                     r"were these params made by another cell or layer\?$"):
    cell.cell_apply(gru_params, h, jnp.ones(D))
  with pytest.raises(ValueError, match=rf"^params\.W_h: {owner} expects shape \(4, 8\), got "
                     r"shape \(4, 4\)$"):
    cell.cell_apply(params._replace(W_h=jnp.ones((H, H))), h, jnp.ones(D))
  with pytest.raises(ValueError, match=rf"^params\.W_x: {owner} expects shape \(input_size, "
                     r"8\), got \(3, 4\)$"):
    cell.cell_apply(params._replace(W_x=jnp.ones((D, H))), h, jnp.ones(D))
  with pytest.raises(ValueError, match=rf"^params\.b: {owner} expects shape \(8,\), got None$"):
    cell.cell_apply(params._replace(b=None), h, jnp.ones(D))
  with pytest.raises(ValueError, match=rf"^params\.b: {owner} has no bias \(bias=False\), "
                     r"got an array$"):
    jaxrnn.mgu(H, bias=False).cell_apply(params, h, jnp.ones(D))
  with pytest.raises(ValueError, match=r"^x: cell_apply expects shape \(3,\), got shape "
                     r"\(4,\)$"):
    cell.cell_apply(params, h, jnp.ones(D + 1))
  with pytest.raises(ValueError, match=r"^carry: cell_apply expects leaves of shape \(4,\), "
                     r"got \(5,\); a carry is for ONE example \(vmap for a minibatch\)$"):
    cell.cell_apply(params, jnp.zeros(H + 1), jnp.ones(D))
  with pytest.raises(ValueError, match=r"^xs: rnn\.apply expects shape \(T, 3\) to match its "
                     r"params' input_size=3, got shape \(6, 4\)$"):
    jaxrnn.rnn(cell).apply(params, jnp.ones((T, D + 1)))


CONV_OWNER = (r"conv_lstm\(hidden_channels=3, kernel_size=\(3, 3\), "
              r"spatial_shape=\(5, 4\), peephole=True\)")


def test_conv_lstm_bad_options():
  with pytest.raises(ValueError, match=r"^hidden_channels: expected a positive int, got 0$"):
    jaxrnn.conv_lstm(0, 3, (ROWS, COLS))
  for kernel in (2, (3, 4), 0, (-1, 3)):
    with pytest.raises(ValueError, match=r"^kernel_size: expected odd positive sizes \('SAME' "
                       r"padding is symmetric only for odd kernels\), got "
                       + re.escape(repr(kernel)) + "$"):
      jaxrnn.conv_lstm(C, kernel, (ROWS, COLS))
  for kernel in ((3,), 3.0, "3", (3, 3, 3), True):
    with pytest.raises(TypeError, match=r"^kernel_size: expected an odd positive int or a pair "
                       r"of them, got " + re.escape(repr(kernel)) + "$"):
      jaxrnn.conv_lstm(C, kernel, (ROWS, COLS))
  for shape in ((ROWS,), 5, (5.0, 4), None):
    with pytest.raises(TypeError, match=r"^spatial_shape: expected a pair of positive ints "
                       r"\(height, width\), got " + re.escape(repr(shape)) + "$"):
      jaxrnn.conv_lstm(C, 3, shape)
  with pytest.raises(ValueError, match=r"^spatial_shape: expected a pair of positive ints "
                     r"\(height, width\), got \(0, 4\)$"):
    jaxrnn.conv_lstm(C, 3, (0, COLS))
  with pytest.raises(TypeError, match=r"^peephole: expected a bool, got str 'yes'$"):
    jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole="yes")


def test_conv_lstm_bad_input():
  cell = jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole=True)
  layer = jaxrnn.rnn(cell)
  params = random_params(cell, 0, input_size=CIN)
  carry = cell.init_carry()
  x = jnp.ones((ROWS, COLS, CIN))
  with pytest.raises(ValueError, match=r"^xs: rnn\.apply expects shape \(T, d0, d1, channels\), "
                     r"got shape \(2, 4, 5, 4, 2\) \(rank 5\); apply works on ONE sequence: for "
                     r"a minibatch use jax\.vmap\(layer\.apply, in_axes=\(None, 0\)\) \(and vmap "
                     r"`length` too\)$"):
    layer.apply(params, jnp.ones((2, TC, ROWS, COLS, CIN)))
  with pytest.raises(ValueError, match=r"^xs: rnn\.apply expects shape \(T, d0, d1, channels\), "
                     r"got shape \(4, 2\) \(rank 2\)"):
    layer.apply(params, jnp.ones((TC, CIN)))
  with pytest.raises(TypeError, match=r"^xs: expected a floating-point array, got dtype int32$"):
    layer.apply(params, jnp.ones((TC, ROWS, COLS, CIN), jnp.int32))
  with pytest.raises(ValueError, match=rf"^x: {CONV_OWNER} expects shape \(5, 4, 2\) \(height, "
                     r"width, in_channels\), got shape \(1, 5, 4, 2\)$"):
    cell.cell_apply(params, carry, jnp.ones((1, ROWS, COLS, CIN)))
  with pytest.raises(ValueError, match=r"^carry: cell_apply expects leaves of shape \(5, 4, 3\), "
                     r"got \(5, 4, 1\); a carry is for ONE example \(vmap for a minibatch\)$"):
    cell.cell_apply(params, jaxrnn.LSTMState(carry.h, jnp.zeros((ROWS, COLS, 1))), x)
  with pytest.raises(TypeError, match=rf"^params: {CONV_OWNER} expects ConvLSTMParams, got "
                     r"MGUParams; were these params made by another cell or layer\?$"):
    cell.cell_apply(random_params(jaxrnn.mgu(H), 0), carry, x)
  with pytest.raises(ValueError, match=rf"^params\.W_c: {CONV_OWNER} expects shape "
                     r"\(3, 5, 4, 3\), got None$"):
    cell.cell_apply(params._replace(W_c=None), carry, x)
  with pytest.raises(ValueError, match=r"^params\.W_c: conv_lstm\(hidden_channels=3, "
                     r"kernel_size=\(3, 3\), spatial_shape=\(5, 4\)\) has no peepholes, got an "
                     r"array$"):
    conv_setup()[0].cell_apply(params, carry, x)
  with pytest.raises(ValueError, match=rf"^params\.W_c: {CONV_OWNER} expects shape "
                     r"\(3, 5, 4, 3\), got shape \(3, 4, 5, 3\)$"):
    cell.cell_apply(params._replace(W_c=jnp.zeros((3, COLS, ROWS, C))), carry, x)
  with pytest.raises(ValueError, match=rf"^params\.W_x: {CONV_OWNER} expects shape "
                     r"\(3, 3, in_channels, 12\), got \(1, 3, 2, 12\)$"):
    cell.cell_apply(params._replace(W_x=jnp.zeros((1, 3, CIN, 4 * C))), carry, x)
  with pytest.raises(ValueError, match=rf"^params\.W_h: {CONV_OWNER} expects shape "
                     r"\(3, 3, 3, 12\), got shape \(3, 3, 3, 9\)$"):
    cell.cell_apply(params._replace(W_h=jnp.zeros((3, 3, C, 3 * C))), carry, x)
  with pytest.raises(ValueError, match=r"^params\.b: conv_lstm\(hidden_channels=3, "
                     r"kernel_size=\(3, 3\), spatial_shape=\(5, 4\), peephole=True\) has no "
                     r"bias \(bias=False\), got an array$"):
    jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole=True, bias=False).cell_apply(
        params, carry, x)


@pytest.mark.parametrize("hoist_inputs", [False, True], ids=["per-step", "hoisted"])
def test_conv_lstm_wrong_maps_name_the_whole_sequence(hoist_inputs):
  """The message gives the shape of the xs passed, whatever the engine
  settings (the projection may run per step inside the scan)."""
  cell = jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole=True)
  layer = jaxrnn.rnn(cell)
  params = random_params(cell, 0, input_size=CIN)
  with jaxrnn.engine_settings(hoist_inputs=hoist_inputs):
    with pytest.raises(ValueError, match=r"^xs: rnn\.apply expects shape \(T, \.\.\., 2\) to "
                       r"match its params' input_size=2, got shape \(4, 5, 4, 3\)(\n|$)"):
      layer.apply(params, jnp.ones((TC, ROWS, COLS, CIN + 1)))
    with pytest.raises(ValueError, match=rf"^xs: {CONV_OWNER} expects shape \(\.\.\., 5, 4, "
                       r"2\) \(height, width, in_channels\), got shape \(4, 4, 5, 2\)(\n|$)"):
      layer.apply(params, jnp.ones((TC, COLS, ROWS, CIN)))
