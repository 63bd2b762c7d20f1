"""Layers on one sequence: rnn, bidirectional, stack, readout against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from jaxrnn._src.engine import hooks as hooks_lib
from reference import CASE_IDS, CASES, D, H, P, T

# This file and test_lengths.py share the compiled programs of reference.py
# (`rnn_program`, `bidirectional_program`, `stack_program`): one worker.
pytestmark = pytest.mark.xdist_group("reference_programs")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rnn_matches_numpy(case):
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 0)
  xs = ref.random_xs(1)
  carry = ref.random_like(cell.init_carry(), 2)
  (ys_f, c_f), (ys_r, c_r) = f(params, xs, T, carry)
  assert ys_f.shape == ys_r.shape == (T, case.out_size)
  ref.assert_tree_close((ys_f, c_f), ref.ref_run(case, params, xs, carry))
  ref.assert_tree_close((ys_r, c_r), ref.ref_run(case, params, xs, carry, reverse=True))
  # The reversed layer is not the forward one: the test would be vacuous.
  assert not np.allclose(ys_f, ys_r)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rnn_equals_python_loop_over_cell_apply(case):
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 3)
  xs = ref.random_xs(4)
  (ys, carry), (ys_rev, carry_rev) = f(params, xs, T, cell.init_carry())
  c, c_rev = cell.init_carry(), cell.init_carry()
  for t in range(T):
    c, y = cell.cell_apply(params, c, xs[t])
    ref.assert_tree_close(ys[t], y, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
    c_rev, y_rev = cell.cell_apply(params, c_rev, xs[T - 1 - t])
    ref.assert_tree_close(ys_rev[T - 1 - t], y_rev, rtol=1e-5, atol=1e-6)
  ref.assert_tree_close(carry, c, rtol=1e-5, atol=1e-6)
  ref.assert_tree_close(carry_rev, c_rev, rtol=1e-5, atol=1e-6)


EAGER_CASES = [ref.BY_NAME[n] for n in ("elman_tanh", "lstm_proj", "gru")]


@pytest.mark.parametrize("case", EAGER_CASES, ids=[c.name for c in EAGER_CASES])
def test_jit_equals_eager(case):
  """Also the defaults: no length, no carry (starts from zeros)."""
  layer = jaxrnn.rnn(case.make())
  params = ref.random_params(layer, 5)
  xs = ref.random_xs(6)
  eager = layer.apply(params, xs)
  jitted = jax.jit(layer.apply)(params, xs)
  ref.assert_tree_close(jitted, eager, rtol=1e-6, atol=1e-6)
  zeros = jax.tree_util.tree_map(np.zeros_like, layer.init_carry())
  ref.assert_tree_close(eager, ref.ref_run(case, params, xs, zeros))
  # A Python-int length, eagerly.
  ys, carry = layer.apply(params, xs, length=3)
  ref.assert_tree_close((ys, carry), ref.ref_run(case, params, xs, zeros, length=3))


VMAP_CASES = [ref.BY_NAME[n] for n in ("elman_relu", "lstm", "lstm_proj", "gru")]


@pytest.mark.parametrize("case", VMAP_CASES, ids=[c.name for c in VMAP_CASES])
def test_vmap_with_per_example_lengths(case):
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 7)
  lengths = np.array([T, 0, 2, 1], np.int32)
  batch = len(lengths)
  xs = ref.random_xs(8, (batch, T, D))
  carries = ref.random_like(
      jax.tree_util.tree_map(lambda c: jnp.stack([c] * batch), cell.init_carry()), 9)
  out = jax.jit(jax.vmap(f, in_axes=(None, 0, 0, 0)))(params, xs, lengths, carries)
  for b in range(batch):
    carry_b = jax.tree_util.tree_map(lambda c: c[b], carries)
    out_b = jax.tree_util.tree_map(lambda o: o[b], out)
    # Same as running the example alone ...
    ref.assert_tree_close(out_b, f(params, xs[b], int(lengths[b]), carry_b),
                          rtol=1e-6, atol=1e-6)
    # ... and as NumPy.
    for o, reverse in zip(out_b, (False, True)):
      ref.assert_tree_close(o, ref.ref_run(case, params, xs[b], carry_b,
                                           int(lengths[b]), reverse))


@pytest.mark.parametrize("merge", ref.BIDIRECTIONAL_MERGES)
@pytest.mark.parametrize("length", [T, 3])
def test_bidirectional_matches_numpy(merge, length):
  layer, f = ref.bidirectional_program()
  params = ref.random_params(layer, 10)
  assert isinstance(params, jaxrnn.BidirectionalParams)
  assert isinstance(params.forward, jaxrnn.GRUParams)
  assert isinstance(params.backward, jaxrnn.LSTMParams)
  xs = ref.random_xs(11)
  carry = ref.random_like(layer.init_carry(), 12)
  ys, out_carry = f(params, xs, length, carry)[merge]
  assert isinstance(out_carry, jaxrnn.BidirectionalCarry)
  want_ys, want_carry = ref.ref_bidirectional(params, xs, carry, length, merge)
  assert ys.shape == ((T, 2 * H) if merge == "concat" else (T, H))
  ref.assert_tree_close(ys, want_ys)
  ref.assert_tree_close(out_carry, want_carry)


def test_bidirectional_defaults_no_carry():
  layer = ref.bidirectional_layer("sum")
  params = ref.random_params(layer, 13)
  xs = ref.random_xs(14)
  ys, carry = jax.jit(layer.apply)(params, xs)
  zeros = jax.tree_util.tree_map(np.zeros_like, layer.init_carry())
  want_ys, want_carry = ref.ref_bidirectional(params, xs, zeros, None, "sum")
  ref.assert_tree_close((ys, carry), (want_ys, want_carry))


@pytest.mark.parametrize("length", [T, 3])
def test_stack_matches_numpy(length):
  layer, f = ref.stack_program()
  params = ref.random_params(layer, 15)
  assert isinstance(params, tuple) and len(params) == 4
  assert isinstance(params[3], jaxrnn.ReadoutParams)
  assert params[3].W_hy.shape == (H, ref.STACK_OUT)
  assert params[2].W_x.shape == (2 * H, 3 * H)  # fed by the bidirectional layer
  xs = ref.random_xs(16)
  carry = ref.random_like(layer.init_carry(), 17)
  assert isinstance(carry, tuple) and len(carry) == 4 and carry[3] == ()
  ys, carries = f(params, xs, length, carry)
  assert ys.shape == (T, ref.STACK_OUT)
  assert isinstance(carries, tuple) and len(carries) == 4
  ref.assert_tree_close((ys, carries), ref.ref_stack(params, xs, carry, length))


def test_stack_of_one_layer_and_default_carry():
  layer = jaxrnn.stack(jaxrnn.rnn(jaxrnn.gru(H)))
  params = ref.random_params(layer, 18)
  assert isinstance(params, tuple) and len(params) == 1
  xs = ref.random_xs(19)
  ys, carries = jax.jit(layer.apply)(params, xs)
  want_ys, want_c = ref.run(ref.gru_step, ref.np_params(params[0]), xs, np.zeros(H), H)
  ref.assert_tree_close((ys, carries), (want_ys, (want_c,)))


def test_readout_matches_numpy():
  head = jaxrnn.readout(3)
  params = head.init_params(jax.random.key(0), H)
  assert isinstance(params, jaxrnn.ReadoutParams)
  assert params.W_hy.shape == (H, 3) and params.b_y.shape == (3,)
  np.testing.assert_array_equal(params.b_y, 0)
  params = ref.random_like(params, 20)
  xs = ref.random_xs(21, (T, H))
  for length in (None, 2):
    ys, carry = head.apply(params, xs, length=length)
    assert carry == ()
    ref.assert_tree_close(ys, ref.run_readout(ref.np_params(params), xs, length))
  assert head.init_carry() == ()


def _leaky_cell(hidden_size):
  """A user cell with only the three required fields (no hoisting)."""

  def init_params(key, input_size, dtype=None):
    return {"W": jax.random.normal(key, (input_size, hidden_size), dtype or jnp.float32)}

  def init_carry(dtype=None):
    return jnp.zeros((hidden_size,), dtype or jnp.float32)

  def cell_apply(params, h, x):
    h = 0.5 * h + jnp.tanh(x @ params["W"])
    return h, 2.0 * h

  return jaxrnn.Cell(init_params, init_carry, cell_apply)


def _leaky_step(p, h, x):
  h = 0.5 * h + np.tanh(x @ p["W"])
  return h, 2.0 * h


def test_user_defined_cell():
  cell = _leaky_cell(H)
  fwd, rev = jaxrnn.rnn(cell), jaxrnn.rnn(cell, reverse=True)
  params = ref.random_like(fwd.init_params(jax.random.key(0), D), 22)
  xs = ref.random_xs(23)
  carry = ref.random_like(cell.init_carry(), 24)
  f = jax.jit(lambda p, xs, n, c: (fwd.apply(p, xs, length=n, carry=c),
                                   rev.apply(p, xs, length=n, carry=c)))
  p_np = {"W": np.asarray(params["W"], np.float64)}
  for length in (T, 2, 0):
    out_f, out_r = f(params, xs, length, carry)
    ref.assert_tree_close(out_f, ref.run(_leaky_step, p_np, xs, np.asarray(carry), H, length))
    ref.assert_tree_close(out_r, ref.run(_leaky_step, p_np, xs, np.asarray(carry), H, length,
                                         reverse=True))


def test_layer_types_and_configs():
  cell = jaxrnn.gru(H)
  assert isinstance(cell, jaxrnn.Cell)
  for layer in (jaxrnn.rnn(cell), ref.bidirectional_layer(), ref.stack_layer(),
                jaxrnn.readout(2)):
    assert isinstance(layer, jaxrnn.Layer) and not isinstance(layer, jaxrnn.Cell)
  config = dict(jaxrnn.rnn(cell, reverse=True, unroll=2, remat=3).config)
  assert config["kind"] == "rnn" and config["cell"] is cell
  assert config["reverse"] is True and config["unroll"] == 2 and config["remat"] == 3
  assert dict(ref.bidirectional_layer("sum").config)["merge"] == "sum"
  layers = dict(ref.stack_layer().config)["layers"]
  assert [dict(layer.config)["kind"] for layer in layers] == [
      "rnn", "bidirectional", "rnn", "readout"]
  assert dict(jaxrnn.readout(3).config) == {"kind": "readout", "output_size": 3}


# ---------------------------------------------------------------------------
# What a layer reads from a cell: a built-in cell's hooks, a user cell's
# contract.

HOOK_CELLS = {  # one cell per built-in family and carry form, with its step shape
    "elman": (lambda: jaxrnn.elman(H), (D,)),
    "lstm_proj": (lambda: jaxrnn.lstm(H, proj_size=P), (D,)),
    "gru_before": (lambda: jaxrnn.gru(H, reset_after=False), (D,)),
    "mgu": (lambda: jaxrnn.mgu(H), (D,)),
    "min_lstm": (lambda: jaxrnn.min_lstm(H), (D,)),
    "lru": (lambda: jaxrnn.lru(H), (D,)),
    "conv_lstm": (lambda: jaxrnn.conv_lstm(H, 3, (2, 3)), (2, 3, D)),
}


def test_hooks_give_input_size_and_hidden_state():
  """``input_size_of``: the size ``init_params`` took (after checking the
  params); ``hidden_of``: the state a step outputs (lru: its whole carry).
  A user cell's params are opaque and its hidden state is its carry."""
  cells = {name: make() for name, (make, _) in HOOK_CELLS.items()}
  params = {name: ref.random_params(cell, 0) for name, cell in cells.items()}
  carries = {name: ref.random_like(cell.init_carry(), 1) for name, cell in cells.items()}

  @jax.jit  # one program for every cell
  def steps(params, carries):
    return {name: cell.cell_apply(params[name], carries[name], jnp.ones(HOOK_CELLS[name][1]))
            for name, cell in cells.items()}

  for name, (carry, y) in steps(params, carries).items():
    assert hooks_lib.input_size_of(cells[name], params[name]) == D, name
    hidden = hooks_lib.hidden_of(cells[name], carry)
    if name == "lru":
      assert hidden is carry
    else:
      np.testing.assert_array_equal(hidden, y, err_msg=name)
  with pytest.raises(TypeError, match=r"^params: lstm\(hidden_size=4\) expects LSTMParams"):
    hooks_lib.input_size_of(jaxrnn.lstm(H), ref.random_params(jaxrnn.gru(H), 0))
  user = _leaky_cell(H)
  carry = user.init_carry()
  assert hooks_lib.input_size_of(user, {"W": jnp.ones((D, H))}) is None
  assert hooks_lib.hidden_of(user, carry) is carry


def test_zoneout_reads_the_hidden_state_by_hook_or_contract():
  """A user cell's hidden state is its carry: elman's step as a user cell
  zones out exactly as elman (same masks); a user carry that is not its
  output is refused. A linear cell keeps its zoneout (the reference scan)
  when ``method="auto"`` would take the parallel path."""
  elman, lstm = jaxrnn.elman(H), jaxrnn.lstm(H)
  as_user = lambda cell: jaxrnn.Cell(  # noqa: E731
      cell.init_params, cell.init_carry, lambda p, c, x: cell.cell_apply(p, c, x),
      output_size=H)
  xs, key = ref.random_xs(1), jax.random.key(2)
  run = lambda layer, params: layer.apply(params, xs, key=key)  # noqa: E731
  params = ref.random_params(elman, 0)
  user, built_in = jax.jit(lambda p: [run(jaxrnn.rnn(cell, zoneout=0.5), p)
                                      for cell in (as_user(elman), elman)])(params)
  ref.assert_tree_close(user, built_in, rtol=0, atol=0)
  with pytest.raises(ValueError, match=r"^zoneout: expected a cell whose output is its hidden "
                     r"state .*, got output_size=4 and a hidden state of shape "
                     r"LSTMState\(h=\(4,\), c=\(4,\)\)$"):
    jaxrnn.rnn(as_user(lstm), zoneout=0.5)
  # Traced only: the same program as method="reference".
  min_gru = jaxrnn.min_gru(H)
  params = ref.random_params(min_gru, 3)
  jaxpr = lambda layer: str(jax.make_jaxpr(lambda p: run(layer, p))(params))  # noqa: E731
  with jaxrnn.engine_settings(parallel_min_steps=1):
    auto = jaxpr(jaxrnn.rnn(min_gru, zoneout=0.5))
    assert "scan" in auto
    assert auto == jaxpr(jaxrnn.rnn(min_gru, zoneout=0.5, method="reference"))


# ---------------------------------------------------------------------------
# No implicit rank promotion: conftest.py sets jax_numpy_rank_promotion to
# "raise" for the whole suite; these tests say so explicitly and also cover
# the backward pass and vmap (trace only: jax.eval_shape).


def _trace_value_and_grad(layer, length=3):
  params = jax.eval_shape(lambda k: layer.init_params(k, D), jax.random.key(0))
  xs = jnp.ones((T, D))

  def loss(params, xs):
    ys, _ = layer.apply(params, xs, length=length)
    return jnp.sum(ys)

  with jax.numpy_rank_promotion("raise"):
    value, (g_params, g_xs) = jax.eval_shape(
        jax.value_and_grad(loss, argnums=(0, 1)), params, xs)
    assert value.shape == () and g_xs.shape == (T, D)
    assert jax.tree_util.tree_structure(g_params) == jax.tree_util.tree_structure(params)
    batched = jax.vmap(lambda p, xs, n: layer.apply(p, xs, length=n),
                       in_axes=(None, 0, 0))
    ys, _ = jax.eval_shape(batched, params, jnp.ones((2, T, D)), jnp.array([1, 2]))
    assert ys.shape[:2] == (2, T)


RANK_LAYERS = {"rnn_" + c.name: (lambda c=c: jaxrnn.rnn(c.make())) for c in CASES}
RANK_LAYERS["rnn_reverse_remat"] = lambda: jaxrnn.rnn(jaxrnn.lstm(H), reverse=True,
                                                      remat=2)
RANK_LAYERS["bidirectional_nobias"] = lambda: jaxrnn.bidirectional(
    jaxrnn.elman(H, bias=False), jaxrnn.gru(H, bias=False, reset_after=False),
    merge="sum", remat=2)
RANK_LAYERS["bidirectional_custom_merge"] = lambda: ref.bidirectional_layer("custom")
RANK_LAYERS["stack_readout"] = ref.stack_layer


@pytest.mark.parametrize("name", sorted(RANK_LAYERS))
def test_no_implicit_rank_promotion(name):
  _trace_value_and_grad(RANK_LAYERS[name]())


def test_no_implicit_rank_promotion_cells_and_losses():
  with jax.numpy_rank_promotion("raise"):
    for case in CASES:
      cell = case.make()
      params = jax.eval_shape(lambda k: cell.init_params(k, D), jax.random.key(0))
      _, y = jax.eval_shape(cell.cell_apply, params, cell.init_carry(), jnp.ones(D))
      assert y.shape == (case.out_size,)
    loss = jax.eval_shape(lambda l, n: jaxrnn.sequence_loss(l, n, reduction="mean"),
                          jnp.ones((2, 3, T)), jnp.ones((2, 3), jnp.int32))
    assert loss.shape == (2, 3)
    loss = jax.eval_shape(lambda l, n: jaxrnn.sequence_loss(l, n, reduction="last"),
                          jnp.ones((2, T)), jnp.ones((2,), jnp.int32))
    assert loss.shape == (2,)

