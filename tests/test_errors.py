"""Bad arguments raise at trace time, naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import D, H, P, T

KEY = jax.random.key(0)


def _layers():
  return {
      "rnn": jaxrnn.rnn(jaxrnn.lstm(H)),
      "bidirectional": ref.bidirectional_layer(),
      "stack": ref.stack_layer(),
      "readout": jaxrnn.readout(2),
  }


def _abstract_params(layer, input_size=D):
  return jax.eval_shape(lambda k: layer.init_params(k, input_size), KEY)


def _trace(layer, params, xs, **kwargs):
  """Traces ``layer.apply`` (no compilation): errors are trace-time errors."""
  return jax.eval_shape(lambda p, x: layer.apply(p, x, **kwargs), params, xs)


# ---------------------------------------------------------------------------
# Inputs.


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_wrong_input_size(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  _trace(layer, params, jnp.ones((T, D)))  # the right size traces
  with pytest.raises(ValueError, match=r"^xs: .*\(T, 3\)"):
    _trace(layer, params, jnp.ones((T, D + 1)))


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_batched_xs_without_vmap(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  with pytest.raises(ValueError, match=r"^xs: (?s:.*)jax\.vmap"):
    _trace(layer, params, jnp.ones((2, T, D)))
  with pytest.raises(ValueError, match=r"^xs: .*rank 1"):
    _trace(layer, params, jnp.ones((D,)))


def test_integer_xs():
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  with pytest.raises(TypeError, match=r"^xs: .*float"):
    _trace(layer, _abstract_params(layer), jnp.ones((T, D), jnp.int32))


@pytest.mark.parametrize("case", ref.CASES, ids=ref.CASE_IDS)
def test_cell_apply_wrong_x(case):
  cell = case.make()
  params = _abstract_params(cell)
  carry = cell.init_carry()
  with pytest.raises(ValueError, match=r"^x: .*\(3,\)"):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones(D + 1))
  with pytest.raises(ValueError, match=r"^x: "):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones((1, D)))
  with pytest.raises(TypeError, match=r"^x: .*float"):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones(D, jnp.int32))


# ---------------------------------------------------------------------------
# length.


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_bad_length(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  xs = jnp.ones((T, D))
  for bad in (3.0, jnp.float32(3), np.float64(3), True):
    with pytest.raises(TypeError, match=r"^length: "):
      _trace(layer, params, xs, length=bad)
  with pytest.raises(TypeError, match=r"^length: "):
    _trace(layer, params, xs, length="3")
  with pytest.raises(ValueError, match=r"^length: .*scalar"):
    _trace(layer, params, xs, length=jnp.array([2, 3]))
  # Traced too.
  with pytest.raises(TypeError, match=r"^length: "):
    jax.eval_shape(lambda n: layer.apply(params, xs, length=n), jnp.float32(2))
  with pytest.raises(ValueError, match=r"^length: .*scalar"):
    jax.eval_shape(lambda n: layer.apply(params, xs, length=n), jnp.ones(2, jnp.int32))


# ---------------------------------------------------------------------------
# Params.


def test_params_of_another_cell():
  lstm_layer, gru_layer = jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.gru(H))
  gru_params = _abstract_params(gru_layer)
  xs = jnp.ones((T, D))
  with pytest.raises(TypeError, match=r"^params: .*LSTMParams.*GRUParams"):
    _trace(lstm_layer, gru_params, xs)
  with pytest.raises(TypeError, match=r"^params: .*GRUParams"):
    _trace(gru_layer, _abstract_params(jaxrnn.rnn(jaxrnn.elman(H))), xs)
  with pytest.raises(TypeError, match=r"^params: .*ElmanParams"):
    cell = jaxrnn.elman(H)
    jax.eval_shape(cell.cell_apply, gru_params, cell.init_carry(), jnp.ones(D))
  bidir = ref.bidirectional_layer()
  with pytest.raises(TypeError, match=r"^params: .*BidirectionalParams"):
    _trace(bidir, (gru_params, gru_params), xs)
  with pytest.raises(TypeError, match=r"^params: "):
    _trace(bidir, _abstract_params(jaxrnn.stack(ref.bidirectional_layer())), xs)
  with pytest.raises(TypeError, match=r"^params: .*ReadoutParams"):
    _trace(jaxrnn.readout(2), gru_params, xs)
  with pytest.raises(TypeError, match=r"^params: "):
    _trace(lstm_layer, {"W_x": jnp.ones((D, 4 * H))}, xs)


def test_params_of_another_layer():
  stack = ref.stack_layer()
  params = _abstract_params(stack)
  xs = jnp.ones((T, D))
  with pytest.raises(TypeError, match=r"^params: .*4 entries, got 3"):
    _trace(stack, params[:3], xs)
  with pytest.raises(TypeError, match=r"^params: "):
    _trace(stack, params[0], xs)
  with pytest.raises(TypeError, match=r"^params: "):
    _trace(jaxrnn.rnn(jaxrnn.lstm(H)), params, xs)


@pytest.mark.parametrize("make", [
    lambda h: jaxrnn.elman(h), lambda h: jaxrnn.lstm(h), lambda h: jaxrnn.gru(h),
    lambda h: jaxrnn.lstm(h, proj_size=2)], ids=["elman", "lstm", "gru", "lstm_proj"])
def test_params_of_wrong_hidden_size(make):
  xs = jnp.ones((T, D))
  layer = jaxrnn.rnn(make(H))
  params = _abstract_params(jaxrnn.rnn(make(H + 1)))
  with pytest.raises(ValueError, match=r"^params\.(W_x|W_h|b_x|b_h|W_hr): "):
    _trace(layer, params, xs)
  cell = make(H)
  with pytest.raises(ValueError, match=r"^params\.(W_x|W_h|b_x|b_h|W_hr): "):
    jax.eval_shape(cell.cell_apply, params, cell.init_carry(), jnp.ones(D))


def test_lstm_projection_params_mismatch():
  xs = jnp.ones((T, D))
  proj, plain = jaxrnn.rnn(jaxrnn.lstm(H, proj_size=P)), jaxrnn.rnn(jaxrnn.lstm(H))
  proj_params = _abstract_params(proj)
  with pytest.raises(ValueError, match=r"^params\.W_(h|hr): "):
    _trace(plain, proj_params, xs)
  with pytest.raises(ValueError, match=r"^params\.W_(h|hr): "):
    _trace(proj, _abstract_params(plain), xs)
  with pytest.raises(ValueError, match=r"^params\.W_hr: "):
    _trace(proj, proj_params._replace(W_hr=jnp.ones((H, P + 1))), xs)


def test_readout_wrong_params_shape():
  head = jaxrnn.readout(2)
  params = _abstract_params(head)
  xs = jnp.ones((T, D))
  with pytest.raises(ValueError, match=r"^params\.W_hy: "):
    _trace(head, params._replace(W_hy=jnp.ones((D, 3))), xs)
  with pytest.raises(ValueError, match=r"^params\.b_y: "):
    _trace(head, params._replace(b_y=jnp.ones(3)), xs)


# ---------------------------------------------------------------------------
# Carries.


def test_bad_carry_rnn():
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = _abstract_params(layer)
  xs = jnp.ones((T, D))
  good = layer.init_carry()
  _trace(layer, params, xs, carry=good)
  with pytest.raises(ValueError, match=r"^carry: .*\(4,\).*\(5,\)"):
    _trace(layer, params, xs, carry=jaxrnn.LSTMState(jnp.zeros(H + 1), jnp.zeros(H)))
  with pytest.raises(ValueError, match=r"^carry: .*vmap"):
    _trace(layer, params, xs, carry=jax.tree_util.tree_map(lambda c: c[None], good))
  with pytest.raises(TypeError, match=r"^carry: "):
    _trace(layer, params, xs, carry=jnp.zeros(H))
  gru = jaxrnn.rnn(jaxrnn.gru(H))
  with pytest.raises(TypeError, match=r"^carry: "):
    _trace(gru, _abstract_params(gru), xs, carry=good)


@pytest.mark.parametrize("case", ref.CASES, ids=ref.CASE_IDS)
def test_bad_carry_cell_apply(case):
  cell = case.make()
  params = _abstract_params(cell)
  bad = jax.tree_util.tree_map(lambda c: jnp.zeros(c.shape[0] + 1), cell.init_carry())
  with pytest.raises(ValueError, match=r"^carry: "):
    jax.eval_shape(cell.cell_apply, params, bad, jnp.ones(D))


def test_bad_carry_bidirectional_stack_readout():
  xs = jnp.ones((T, D))
  bidir = ref.bidirectional_layer()
  params = _abstract_params(bidir)
  good = bidir.init_carry()
  with pytest.raises(TypeError, match=r"^carry: "):
    _trace(bidir, params, xs, carry=(good.forward, good.backward))
  with pytest.raises(ValueError, match=r"^carry: "):
    _trace(bidir, params, xs, carry=good._replace(forward=jnp.zeros(H + 1)))
  with pytest.raises(TypeError, match=r"^carry: "):
    _trace(bidir, params, xs, carry=good._replace(backward=jnp.zeros(H)))
  stack = ref.stack_layer()
  s_params = _abstract_params(stack)
  s_carry = stack.init_carry()
  with pytest.raises(TypeError, match=r"^carry: .*4 entries"):
    _trace(stack, s_params, xs, carry=s_carry[:2])
  with pytest.raises(ValueError, match=r"^carry: "):
    _trace(stack, s_params, xs, carry=(s_carry[0], s_carry[1], jnp.zeros(1), ()))
  head = jaxrnn.readout(2)
  with pytest.raises(TypeError, match=r"^carry: "):
    _trace(head, _abstract_params(head), xs, carry=jnp.zeros(2))


# ---------------------------------------------------------------------------
# Constructors.


def test_unknown_names():
  with pytest.raises(ValueError, match=r"^activation: .*'sigmoid'"):
    jaxrnn.elman(H, activation="sigmoid")
  with pytest.raises(ValueError, match=r"^activation: "):
    jaxrnn.elman(H, activation=None)
  with pytest.raises(ValueError, match=r"^merge: .*'max'"):
    jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), merge="max")
  with pytest.raises(ValueError, match=r"^merge: "):
    jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), merge=None)
  with pytest.raises(ValueError, match=r"^reduction: .*'median'"):
    jaxrnn.sequence_loss(jnp.ones(T), reduction="median")


def test_cell_where_layer_expected_and_vice_versa():
  cell = jaxrnn.lstm(H)
  layer = jaxrnn.rnn(cell)
  with pytest.raises(ValueError, match=r"^layers: "):
    jaxrnn.stack()
  with pytest.raises(TypeError, match=r"^layers\[0\]: .*jaxrnn\.rnn"):
    jaxrnn.stack(cell)
  with pytest.raises(TypeError, match=r"^layers\[1\]: .*Cell"):
    jaxrnn.stack(layer, cell)
  with pytest.raises(TypeError, match=r"^layers\[0\]: "):
    jaxrnn.stack(lambda x: x)
  with pytest.raises(TypeError, match=r"^cell: .*Layer"):
    jaxrnn.rnn(layer)
  with pytest.raises(TypeError, match=r"^cell: "):
    jaxrnn.rnn("lstm")
  with pytest.raises(TypeError, match=r"^forward: .*Layer"):
    jaxrnn.bidirectional(layer, cell)
  with pytest.raises(TypeError, match=r"^backward: .*Layer"):
    jaxrnn.bidirectional(cell, layer)


def test_bad_sizes_and_options():
  for make in (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru):
    with pytest.raises(ValueError, match=r"^hidden_size: "):
      make(0)
    with pytest.raises(TypeError, match=r"^hidden_size: "):
      make(4.0)
    with pytest.raises(ValueError, match=r"^input_size: "):
      make(H).init_params(KEY, 0)
  with pytest.raises(ValueError, match=r"^proj_size: "):
    jaxrnn.lstm(H, proj_size=H)
  with pytest.raises(ValueError, match=r"^output_size: "):
    jaxrnn.readout(0)
  with pytest.raises(ValueError, match=r"^input_size: "):
    jaxrnn.readout(2).init_params(KEY, -1)
  with pytest.raises(ValueError, match=r"^input_size: "):
    ref.stack_layer().init_params(KEY, 0)
  with pytest.raises(ValueError, match=r"^unroll: "):
    jaxrnn.rnn(jaxrnn.gru(H), unroll=0)
  with pytest.raises(ValueError, match=r"^remat: "):
    jaxrnn.rnn(jaxrnn.gru(H), remat=0)
  with pytest.raises(ValueError, match=r"^unroll: "):
    jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), unroll=-1)
  # No fused backward pass to force for these cells.
  for cell in (jaxrnn.lstm(H, proj_size=P), jaxrnn.gru(H, reset_after=False),
               jaxrnn.elman(H, activation=jnp.sin)):
    with pytest.raises(ValueError, match=r"^fused_vjp: "):
      jaxrnn.rnn(cell, fused_vjp=True)


def test_sequence_loss_bad_arguments():
  losses = jnp.ones((2, T))
  with pytest.raises(TypeError, match=r"^length: "):
    jaxrnn.sequence_loss(losses, jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match=r"^length: .*\(2,\)"):
    jaxrnn.sequence_loss(losses, jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r"^length: "):
    jaxrnn.sequence_loss(losses, 3)
  with pytest.raises(ValueError, match=r"^per_step_losses: "):
    jaxrnn.sequence_loss(jnp.float32(1.0))
  with pytest.raises(TypeError, match=r"^per_step_losses: "):
    jaxrnn.sequence_loss(jnp.ones((2, T), jnp.int32))
