"""Cells on one example: `cell_apply` against NumPy, its decomposition into
the engine's hooks, the hand-written tangents, weight layout, init."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from jaxrnn._src.engine.hooks import hooks_of
from reference import CASE_IDS, CASES, D, H, P

PARAMS_TYPES = {"elman": jaxrnn.ElmanParams, "lstm": jaxrnn.LSTMParams,
                "gru": jaxrnn.GRUParams}
NUM_GATES = {"elman": 1, "lstm": 4, "gru": 3}


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


# ---------------------------------------------------------------------------
# Every built-in cell: cell_apply is the engine's step of the projected
# input, and both are its NumPy reference. One step from a random carry
# reads every term of the equation and the carry's layout; chains of steps
# are the layers' tests (test_layers.py runs a Python loop over cell_apply).

CIN, C, ROWS, COLS = 2, 3, 4, 3  # conv_lstm: channels and map
EVERY_CELL = {
    **{c.name: (c.make, c.step, (D,)) for c in CASES},
    "lstm_peephole": (lambda: jaxrnn.lstm(H, peephole=True), ref.lstm_step, (D,)),
    "lstm_layer_norm": (lambda: jaxrnn.lstm(H, layer_norm=True), ref.lstm_step, (D,)),
    "lstm_every_option": (
        lambda: jaxrnn.lstm(H, peephole=True, layer_norm=True, proj_size=P,
                            layer_norm_eps=1e-3),
        functools.partial(ref.lstm_step, eps=1e-3), (D,)),
    "gru_layer_norm": (lambda: jaxrnn.gru(H, layer_norm=True), ref.gru_step, (D,)),
    "mgu": (lambda: jaxrnn.mgu(H), ref.mgu_step, (D,)),
    "mgu_nobias": (lambda: jaxrnn.mgu(H, bias=False), ref.mgu_step, (D,)),
    "conv_lstm": (lambda: jaxrnn.conv_lstm(C, 3, (ROWS, COLS)), ref.conv_lstm_step,
                  (ROWS, COLS, CIN)),
    "conv_lstm_peephole_1x3": (
        lambda: jaxrnn.conv_lstm(C, (1, 3), (ROWS, COLS), peephole=True, bias=False),
        ref.conv_lstm_step, (ROWS, COLS, CIN)),
    "min_gru": (lambda: jaxrnn.min_gru(H), ref.min_gru_step, (D,)),
    "min_lstm": (lambda: jaxrnn.min_lstm(H), ref.min_lstm_step, (D,)),
    "lru": (lambda: jaxrnn.lru(H, r_min=0.5, r_max=0.9), ref.lru_step, (D,)),
}


@functools.lru_cache(maxsize=None)
def one_step():
  """``{name: (cell, params, carry, x, cell_apply's (carry, y), the hooks'
  (carry, y))}``: one step of every cell from a random carry, both ways, one
  program (computed once per process)."""
  cells = {name: make() for name, (make, _, _) in EVERY_CELL.items()}
  params = {name: ref.random_params(cell, 20, input_size=EVERY_CELL[name][2][-1])
            for name, cell in cells.items()}
  carries = {name: ref.random_like(jax.eval_shape(cell.init_carry), 21)
             for name, cell in cells.items()}
  xs = {name: ref.random_xs(22, in_shape) for name, (_, _, in_shape) in EVERY_CELL.items()}

  @jax.jit
  def both(params, carries, xs):
    out = {}
    for name, cell in cells.items():
      hooks = hooks_of(cell)
      p, c, x = params[name], carries[name], xs[name]
      out[name] = (cell.cell_apply(p, c, x), hooks.step(p, c, hooks.project(p, x), None))
    return out

  out = both(params, carries, xs)
  return {name: (cell, params[name], carries[name], xs[name]) + out[name]
          for name, cell in cells.items()}


@pytest.mark.xdist_group("cells_one_step")  # one worker: `one_step`'s program once
@pytest.mark.parametrize("name", sorted(EVERY_CELL))
def test_cell_apply_is_the_hooks_step_and_matches_numpy(name):
  cell, params, carry, x, got, via_hooks = one_step()[name]
  assert hooks_of(cell) is not None
  if name in ref.BY_NAME:
    case = ref.BY_NAME[name]
    assert isinstance(params, PARAMS_TYPES[case.kind])
    assert got[1].shape == (case.out_size,)
  ref.assert_tree_close(via_hooks, got, rtol=0, atol=0)
  step = EVERY_CELL[name][1]
  want = step(ref.np_params(params), ref.np_carry(carry), np.asarray(x, np.float64))
  ref.assert_tree_close(got, want, err_msg=name)


@pytest.mark.xdist_group("cells_one_step")
def test_eager_cell_apply_equals_jit():
  """cell_apply outside jit (op by op), on one cell with every option."""
  cell, params, carry, x, got, _ = one_step()["lstm_every_option"]
  ref.assert_tree_close(cell.cell_apply(params, carry, x), got, rtol=1e-6, atol=1e-6)


def test_user_cells_have_no_hooks():
  cell = jaxrnn.lstm(H)
  assert hooks_of(jaxrnn.Cell(cell.init_params, cell.init_carry,
                              lambda p, c, x: cell.cell_apply(p, c, x))) is None
  assert hooks_of(cell._replace(cell_apply=functools.partial(cell.cell_apply))) is None


# ---------------------------------------------------------------------------
# The hand-written tangents of the fused path: each is the JVP of its
# pointwise equation, and its transpose is the equation's VJP.

TANGENT_CELLS = {
    "elman_tanh": (lambda: jaxrnn.elman(H), (D,)),
    "elman_relu": (lambda: jaxrnn.elman(H, activation="relu"), (D,)),
    "lstm": (lambda: jaxrnn.lstm(H), (D,)),
    "lstm_nobias": (lambda: jaxrnn.lstm(H, bias=False), (D,)),
    "gru": (lambda: jaxrnn.gru(H), (D,)),
    "gru_nobias": (lambda: jaxrnn.gru(H, bias=False), (D,)),
    "conv_lstm": (lambda: jaxrnn.conv_lstm(C, 3, (ROWS, COLS)), (ROWS, COLS, CIN)),
}


def test_which_cells_have_a_hand_written_tangent():
  for name, (make, _) in TANGENT_CELLS.items():
    assert hooks_of(make()).product.tangent is not None, name
  # A product, but JAX differentiates its pointwise equation.
  for cell in (jaxrnn.elman(H, activation=jnp.sin), jaxrnn.lstm(H, proj_size=P),
               jaxrnn.lstm(H, peephole=True), jaxrnn.lstm(H, layer_norm=True),
               jaxrnn.gru(H, layer_norm=True),
               jaxrnn.conv_lstm(C, 3, (ROWS, COLS), peephole=True)):
    assert hooks_of(cell).product is not None and hooks_of(cell).product.tangent is None
  # No single recurrent product: the reference scan.
  for cell in (jaxrnn.gru(H, reset_after=False), jaxrnn.mgu(H)):
    assert hooks_of(cell).product is None and hooks_of(cell).linear is None
  for cell in (jaxrnn.min_gru(H), jaxrnn.min_lstm(H), jaxrnn.lru(H)):
    assert hooks_of(cell).product is None and hooks_of(cell).linear is not None


def _pointwise_inputs(cell, in_shape, seed):
  """float64 params, carry, zx_t and zh_t of the right shapes."""
  hooks = hooks_of(cell)
  params = ref.random_params(cell, seed, input_size=in_shape[-1], scale=0.8)
  carry = ref.random_like(cell.init_carry(), seed + 1, scale=0.8)
  # The shapes of zx_t and zh_t (traced only), with fresh values:
  # pre-activations of order one.
  zx, zh = jax.eval_shape(
      lambda p, c, x: (hooks.project(p, x), hooks.product.recur(p, hooks.product.hidden(c))),
      params, carry, jax.ShapeDtypeStruct(in_shape, jnp.float64))
  zx, zh = ref.random_like((zx, zh), seed + 3, scale=1.5)
  return params, carry, zx, zh


@pytest.mark.parametrize("name", sorted(TANGENT_CELLS))
def test_tangent_is_the_jvp_of_pointwise(name, x64):
  make, in_shape = TANGENT_CELLS[name]
  cell = make()
  product = hooks_of(cell).product
  params, carry, zx, zh = _pointwise_inputs(cell, in_shape, 30)
  assert zx.dtype == jnp.float64
  tangents = ref.random_like((params, carry, zx, zh), 34, scale=1.0)

  def equation(p, c, zx_t, zh_t):
    new_c, y, _ = product.pointwise(p, c, zx_t, zh_t)
    return new_c, y

  @jax.jit
  def both(primals, tangents):
    _, _, res = product.pointwise(*primals)
    h_tm1 = product.hidden(primals[1])
    _, want = jax.jvp(equation, primals, tangents)
    got = product.tangent(primals[0], h_tm1, res, *tangents)
    # The transpose of the tangent map at these residuals, against the VJP.
    cotangent = ref.random_like(want, 35, scale=1.0)
    linear = lambda *t: product.tangent(primals[0], h_tm1, res, *t)
    transposed = jax.linear_transpose(linear, *tangents)(cotangent)
    _, vjp = jax.vjp(equation, *primals)
    return got, want, transposed, vjp(cotangent)

  got, want, transposed, vjp = both((params, carry, zx, zh), tangents)
  assert any(np.any(np.asarray(w) != 0) for w in jax.tree_util.tree_leaves(want))
  ref.assert_tree_close(got, want, rtol=1e-12, atol=1e-12, err_msg="jvp")
  ref.assert_tree_close(transposed, vjp, rtol=1e-12, atol=1e-12, err_msg="transpose")


# ---------------------------------------------------------------------------
# Weight layout and initialisation.

INIT_CASES = [ref.BY_NAME[n] for n in ("elman_tanh", "lstm", "lstm_proj", "gru")]


@pytest.mark.parametrize("case", INIT_CASES, ids=[c.name for c in INIT_CASES])
def test_default_init(case):
  big_d = 128  # enough entries to check the input matrix's scale
  cell = case.make()
  # Op by op: the initialisers' programs are shared by the cells (by shape).
  params = cell.init_params(jax.random.key(0), big_d)
  assert isinstance(params, PARAMS_TYPES[case.kind])
  G = NUM_GATES[case.kind]
  rows_h = case.out_size
  assert params.W_x.shape == (big_d, G * H)
  assert params.W_h.shape == (rows_h, G * H)
  assert params.b_x.shape == params.b_h.shape == (G * H,)
  for leaf in jax.tree_util.tree_leaves(params):
    assert leaf.dtype == jnp.float32
  # Input matrix: LeCun normal, variance 1 / fan_in (its shape is
  # test_lecun_normal_input_init).
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


def _truncated_normal_cdf(x, a=2.0):
  """The CDF of a standard normal truncated to [-a, a]."""
  phi = np.vectorize(lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2))))
  return (phi(np.clip(x, -a, a)) - phi(-a)) / (phi(a) - phi(-a))


def test_lecun_normal_input_init():
  """``W_x`` is LeCun normal as JAX (and Flax) define it: a normal truncated
  at two standard deviations, rescaled to variance exactly 1 / fan_in. Its
  variance, its kurtosis (2.37, against 1.8 for a uniform and 3 for an
  untruncated normal of the same variance) and its whole distribution
  (Kolmogorov-Smirnov) are checked on 131,072 draws."""
  fan_in, a = 512, 2.0
  W_x = jaxrnn.elman(256).init_params(jax.random.key(3), fan_in).W_x
  w = np.sort(np.asarray(W_x, np.float64).ravel())
  n = w.size
  np.testing.assert_allclose(w.var(), 1 / fan_in, rtol=0.02)
  # Moments of the standard normal truncated to [-a, a].
  density = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
  mass = math.erf(a / math.sqrt(2))
  m2 = 1 - 2 * a * density / mass
  m4 = 3 - 2 * (a ** 3 + 3 * a) * density / mass
  kurtosis = np.mean((w - w.mean()) ** 4) / w.var() ** 2
  np.testing.assert_allclose(kurtosis, m4 / m2 ** 2, atol=0.05)
  # Kolmogorov-Smirnov against that distribution (1% critical value).
  cdf = _truncated_normal_cdf(w * math.sqrt(fan_in * m2), a)
  ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
  assert ks < 1.63 / math.sqrt(n), ks


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
  params = jax.eval_shape(lambda k: cell.init_params(k, D), jax.random.key(0))
  assert params.b_x is None and params.b_h is None
  # No bias leaves at all in the pytree.
  assert len(jax.tree_util.tree_leaves(params)) == 2
  assert dict(cell.config)["bias"] is False


ACTIVATION_FUNCTIONS = [(jnp.tanh, "tanh", np.tanh), (jax.lax.tanh, "tanh", np.tanh),
                        (jax.nn.relu, "relu", ref.relu)]


@pytest.mark.parametrize("fn, name, np_fn", ACTIVATION_FUNCTIONS)
def test_elman_recognises_jax_activation_functions(fn, name, np_fn):
  # JAX's own tanh/relu select the named activation, and with it the
  # hand-written tangent of the fused path; any other callable is
  # differentiated by JAX.
  cell = jaxrnn.elman(H, activation=fn)
  assert dict(cell.config)["activation"] == name
  assert hooks_of(cell).product.tangent is not None
  assert hooks_of(jaxrnn.elman(H, activation=lambda z: jnp.tanh(z))).product.tangent is None


def test_elman_with_jax_activation_functions_matches_numpy():
  """The layers of the cells above, one program."""
  layers = [jaxrnn.rnn(jaxrnn.elman(H, activation=fn)) for fn, _, _ in ACTIVATION_FUNCTIONS]
  params = ref.random_params(layers[0], 0)
  xs = ref.random_xs(1)
  every = jax.jit(lambda p, x: [layer.apply(p, x)[0] for layer in layers])(params, xs)
  for ys, (_, name, np_fn) in zip(every, ACTIVATION_FUNCTIONS):
    want, _ = ref.run(functools.partial(ref.elman_step, activation=np_fn),
                      ref.np_params(params), np.asarray(xs, np.float64), np.zeros(H), H)
    np.testing.assert_allclose(ys, want, rtol=2e-5, atol=2e-5, err_msg=name)
