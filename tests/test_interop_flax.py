"""jaxrnn.interop.from_flax against Flax linen: outputs, gradients, carries.

The reference is the real Flax module, ``nn.RNN(cell, return_carry=True)``
(or ``nn.Bidirectional``) called with ``seq_lengths=``; the jaxrnn side is
the converted layer ``jax.vmap``-ed with ``length=``.
"""

import re
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

import jaxrnn  # noqa: E402
from jaxrnn.interop import carry_from_flax, carry_to_flax, from_flax  # noqa: E402

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
LENGTHS = [3, 5, 1]  # includes 1 and T = 5
INPUT_SIZE = 2


def E(message):
  """A regex matching exactly ``message``."""
  return "^" + re.escape(message) + "$"


def random_variables(module, xs, seed=0):
  """Variables of ``module`` with U(-0.8, 0.8) entries (shapes only: no compile)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), xs)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.uniform(-0.8, 0.8, size=s.shape).astype(s.dtype)), shapes)


def cells_of(layer):
  cfg = dict(layer.config)
  if cfg["kind"] == "bidirectional":
    return [cfg["forward"], cfg["backward"]]
  return [cfg["cell"]]


def _residual(module):
  cell = getattr(module, "cell", None)
  return isinstance(cell, nn.SimpleCell) and cell.residual


def expected_param_grads(layer, converted, residual=False):
  """Flax's weight gradients in jaxrnn's layout, filler biases filled in.

  from_flax adds zero biases where Flax has none (LSTM: ``b_x``; Simple:
  ``b_h``; GRU: the r, z parts of ``b_h``). Each sits in the same sum as
  its partner, so jaxrnn's gradient for it equals the partner's.
  """
  def fill(cell, p):
    kind = dict(cell.config)["kind"]
    if kind == "lstm":
      return p._replace(b_x=p.b_h)
    if kind == "elman":
      # Converting a gradient adds the residual's identity to W_h: undo it.
      W_h = p.W_h - jnp.eye(p.W_h.shape[0], dtype=p.W_h.dtype) if residual else p.W_h
      return p._replace(W_h=W_h, b_h=p.b_x)
    H = dict(cell.config)["hidden_size"]
    return p._replace(b_h=jnp.concatenate([p.b_x[:2 * H], p.b_h[2 * H:]]))

  cells = cells_of(layer)
  if len(cells) == 2:
    return jaxrnn.BidirectionalParams(fill(cells[0], converted.forward),
                                      fill(cells[1], converted.backward))
  return fill(cells[0], converted)


def check_against_flax(module, *, dtype=np.float32, seed=0, lengths=LENGTHS,
                       initial_carry=True, **rnn_options):
  """Converts ``module`` (an nn.RNN or nn.Bidirectional, return_carry=True)."""
  tol = TOL[dtype]
  lengths = np.asarray(lengths)
  B, T = len(lengths), int(lengths.max())
  rng = np.random.default_rng(seed + 1)
  xs = rng.normal(size=(B, T, INPUT_SIZE)).astype(dtype)
  valid = np.arange(T)[None, :] < lengths[:, None]
  xs[~valid] = 1e3  # junk in the padding
  variables = random_variables(module, jnp.asarray(xs), seed)
  layer, params = from_flax(module, variables, **rnn_options)
  assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(params))

  zero_carry = jax.eval_shape(
      lambda: module.apply(variables, jnp.asarray(xs), seq_lengths=lengths)[0])
  carry0 = None
  if initial_carry:
    carry0 = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape).astype(dtype) * 0.5), zero_carry)
  out_shape = jax.eval_shape(
      lambda: module.apply(variables, jnp.asarray(xs), seq_lengths=lengths)[1]).shape
  w_out = jnp.asarray(rng.normal(size=out_shape).astype(dtype) * valid[:, :, None])
  w_carry = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape).astype(dtype)), zero_carry)

  def carry_loss(carry):
    return sum(jnp.sum(c * w) for c, w in zip(jax.tree_util.tree_leaves(carry),
                                              jax.tree_util.tree_leaves(w_carry)))

  def flax_loss(variables, xs, carry):
    final, ys = module.apply(variables, xs, seq_lengths=lengths, initial_carry=carry)
    return jnp.sum(ys * w_out) + carry_loss(final), (ys, final)

  def jaxrnn_loss(params, xs, carry):
    if carry is None:
      ys, final = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
    else:
      c = carry_from_flax(layer, carry)
      ys, final = jax.vmap(lambda x, n, c: layer.apply(params, x, length=n, carry=c))(
          xs, lengths, c)
    final = carry_to_flax(layer, final)
    return jnp.sum(ys * w_out) + carry_loss(final), (ys, final)

  argnums = (0, 1) if carry0 is None else (0, 1, 2)

  @jax.jit  # the reference and the converted layer in one program
  def both(variables, params, xs, carry):
    return (jax.value_and_grad(flax_loss, argnums=argnums, has_aux=True)(variables, xs, carry),
            jax.value_and_grad(jaxrnn_loss, argnums=argnums, has_aux=True)(params, xs, carry))

  ((f_loss, (f_ys, f_final)), f_grads), ((j_loss, (j_ys, j_final)), j_grads) = both(
      variables, params, xs, carry0)

  np.testing.assert_allclose(np.asarray(j_ys)[valid], np.asarray(f_ys)[valid], **tol)
  assert np.all(np.asarray(j_ys)[~valid] == 0)
  assert jax.tree_util.tree_structure(j_final) == jax.tree_util.tree_structure(f_final)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol), j_final, f_final)
  # A sum of many terms: its error is absolute, not relative to a small total.
  np.testing.assert_allclose(j_loss, f_loss, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
  np.testing.assert_allclose(j_grads[1], f_grads[1], err_msg="dx", **tol)
  if carry0 is not None:
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, err_msg="dcarry", **tol),
        j_grads[2], f_grads[2])
  _, converted = from_flax(module, f_grads[0])
  expected = expected_param_grads(layer, converted, residual=_residual(module))
  flat_j, tree_j = jax.tree_util.tree_flatten_with_path(j_grads[0])
  flat_f, tree_f = jax.tree_util.tree_flatten_with_path(expected)
  assert tree_j == tree_f
  for (path, a), (_, b) in zip(flat_j, flat_f):
    np.testing.assert_allclose(a, b, err_msg=jax.tree_util.keystr(path), **tol)
  return layer, params


def RNN(cell, **kwargs):
  return nn.RNN(cell, return_carry=True, **kwargs)


def Bi(fwd, bwd, **kwargs):
  return nn.Bidirectional(nn.RNN(fwd), nn.RNN(bwd), return_carry=True, **kwargs)


# Pairwise rather than a product: every cell kind runs forward and reversed
# (alone, or as a direction of a Bidirectional), alone and inside a
# Bidirectional, with an initial carry and without; SimpleCell also with
# relu and a residual, and with softplus; a Bidirectional concatenates or
# sums. The features (2 to 4) and the lengths (one sequence of one step;
# batches holding 1 and T) vary. One row per module, one compiled program
# (Flax and the converted layer together). These rows replace a property
# test's random draws.
CONFIGS = {
    "simple_relu_residual_reverse": lambda: RNN(
        nn.SimpleCell(4, activation_fn=nn.relu, residual=True), reverse=True, keep_order=True),
    "simple_softplus": lambda: RNN(nn.SimpleCell(3, activation_fn=jax.nn.softplus)),
    "optimized_lstm_reverse": lambda: RNN(nn.OptimizedLSTMCell(4), reverse=True,
                                          keep_order=True),
    "lstm_reverse": lambda: RNN(nn.LSTMCell(2), reverse=True, keep_order=True),
    "gru": lambda: RNN(nn.GRUCell(3)),
    "bi_lstm_gru": lambda: Bi(nn.LSTMCell(3), nn.GRUCell(3)),
    "bi_gru_simple_sum": lambda: Bi(nn.GRUCell(3), nn.SimpleCell(3),
                                    merge_fn=lambda a, b: a + b),
}
NO_INITIAL_CARRY = {"simple_softplus", "optimized_lstm_reverse", "lstm_reverse", "gru"}
ROW_LENGTHS = {"lstm_reverse": [1], "gru": [2, 4]}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_flax_float32(name):
  check_against_flax(CONFIGS[name](), seed=len(name), lengths=ROW_LENGTHS.get(name, LENGTHS),
                     initial_carry=name not in NO_INITIAL_CARRY, unroll=1)


def test_matches_flax_float64(x64):
  module = nn.Bidirectional(
      nn.RNN(nn.OptimizedLSTMCell(3, param_dtype=jnp.float64)),
      nn.RNN(nn.GRUCell(3, param_dtype=jnp.float64)), return_carry=True)
  check_against_flax(module, dtype=np.float64, unroll=1)


# ---------------------------------------------------------------------------
# Cells, carries and structure.


@pytest.mark.parametrize("kind", ["SimpleCell", "LSTMCell", "OptimizedLSTMCell", "GRUCell"])
def test_cell_step_matches(kind):
  fcell = getattr(nn, kind)(3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2)).astype(np.float32))
  fcarry = jax.tree_util.tree_map(
      lambda c: c + 0.3, fcell.initialize_carry(jax.random.key(0), x.shape))
  variables = random_variables(
      nn.RNN(fcell, return_carry=True), x[:, None, :], seed=1)["params"]["cell"]
  cell, params = from_flax(fcell, {"params": variables})
  assert isinstance(cell, jaxrnn.Cell)

  @jax.jit  # both steps in one program
  def steps(variables, params, fcarry, x):
    return (fcell.apply({"params": variables}, fcarry, x),
            jax.vmap(cell.cell_apply, in_axes=(None, 0, 0))(
                params, carry_from_flax(cell, fcarry), x))

  (f_new, f_y), (j_new, j_y) = steps(variables, params, fcarry, x)
  np.testing.assert_allclose(j_y, f_y, **TOL[np.float32])
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **TOL[np.float32]),
                         carry_to_flax(cell, j_new), f_new)


def test_lstm_layout_and_carry():
  fcell = nn.LSTMCell(2)
  variables = random_variables(nn.RNN(fcell), jnp.ones((1, 1, 3)))["params"]["cell"]
  cell, params = from_flax(fcell, variables)  # the inner dict works too
  np.testing.assert_array_equal(params.W_x[:, 2:4], variables["if"]["kernel"])
  np.testing.assert_array_equal(params.W_h[:, 4:6], variables["hg"]["kernel"])
  np.testing.assert_array_equal(params.b_h[6:], variables["ho"]["bias"])
  np.testing.assert_array_equal(params.b_x, np.zeros(8, np.float32))
  c, h = jnp.zeros((5, 2)), jnp.ones((5, 2))
  state = carry_from_flax(cell, (c, h))
  assert isinstance(state, jaxrnn.LSTMState) and float(state.h[0, 0]) == 1.0
  back = carry_to_flax(cell, state)
  assert isinstance(back, tuple) and back[0] is c and back[1] is h


def test_layer_structure():
  module = Bi(nn.LSTMCell(3), nn.GRUCell(3))
  layer, params = from_flax(module, random_variables(module, jnp.ones((1, 4, 2))))
  cfg = dict(layer.config)
  assert cfg["kind"] == "bidirectional" and cfg["merge"] == "concat"
  assert isinstance(params, jaxrnn.BidirectionalParams)
  assert isinstance(params.forward, jaxrnn.LSTMParams)
  assert isinstance(params.backward, jaxrnn.GRUParams)
  module = RNN(nn.GRUCell(3), reverse=True, keep_order=True)
  layer, _ = from_flax(module, random_variables(module, jnp.ones((1, 4, 2))))
  assert dict(layer.config)["reverse"]


# ---------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("make, match", [
    (lambda: nn.LSTMCell(3, gate_fn=nn.hard_sigmoid),
     "module: gate_fn='hard_sigmoid' is not supported; jaxrnn's gates use the logistic "
     "sigmoid"),
    (lambda: nn.GRUCell(3, activation_fn=nn.relu),
     "module: activation_fn='relu' is not supported; jaxrnn uses tanh"),
    (lambda: nn.LSTMCell(3, dtype=jnp.bfloat16),
     "module: dtype=bfloat16 makes Flax compute in another precision than its float32 "
     "params; only dtype=None (or the params' dtype) converts exactly"),
])
def test_unsupported_cells_raise(make, match):
  cell = make()
  variables = random_variables(nn.RNN(cell), jnp.ones((1, 2, 2)))["params"]["cell"]
  with pytest.raises(ValueError, match="^" + re.escape(match) + "$"):
    from_flax(cell, variables)


def test_other_errors():
  module = nn.RNN(nn.GRUCell(3), reverse=True)  # keep_order=False
  variables = random_variables(module, jnp.ones((1, 2, 2)))
  with pytest.raises(ValueError, match=E(
      "module: nn.RNN(reverse=True, keep_order=False) returns its outputs in reverse order; "
      "jaxrnn keeps them aligned with the inputs (keep_order=True)")):
    from_flax(module, variables)
  with pytest.raises(TypeError, match=E(
      "module: from_flax expects a flax.linen SimpleCell, LSTMCell, OptimizedLSTMCell, GRUCell, "
      "RNN or Bidirectional, got Dense")):
    from_flax(nn.Dense(3), {})
  with pytest.raises(ValueError, match=E(
      "params: expected an entry 'ir/kernel' (Flax's parameter names), but 'kernel' is missing; "
      "got keys []")):
    from_flax(nn.GRUCell(3), {"params": {"ir": {}}})
  with pytest.raises(TypeError, match=E(
      "rnn_options: ['unroll'] apply to layers; a cell has none")):
    from_flax(nn.GRUCell(3), variables["params"]["cell"], unroll=2)
