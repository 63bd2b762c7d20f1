"""jaxrnn.interop.from_keras against Keras 3 (JAX backend): outputs, gradients, carries.

The reference is the real Keras layer called with ``mask=`` (post-padding),
differentiated through ``layer.stateless_call``; the jaxrnn side is the
converted layer ``jax.vmap``-ed with ``length=``.
"""

import re
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

# Keras must run on its JAX backend (set before keras is first imported).
assert keras.backend.backend() == "jax", keras.backend.backend()

import jaxrnn  # noqa: E402
from jaxrnn.interop import carry_from_keras, carry_to_keras, from_keras  # noqa: E402

# Keras's own Variable.__array__ (numpy 2 copy keyword): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
LENGTHS = [3, 5, 1]  # includes 1 and T = 5
INPUT_SIZE = 2
KL = keras.layers


def E(message):
  """A regex matching exactly ``message``."""
  return "^" + re.escape(message) + "$"


def build(layer, seed=0, input_size=INPUT_SIZE):
  """Builds ``layer`` and gives it weights in U(-0.8, 0.8) (saturating gates)."""
  layer.build((None, None, input_size))
  rng = np.random.default_rng(seed)
  layer.set_weights([rng.uniform(-0.8, 0.8, size=w.shape).astype(w.dtype)
                     for w in layer.get_weights()])
  return layer


def class_name(layer):
  return type(layer).__name__


def expected_param_grads(layer, converted):
  """Keras's weight gradients in jaxrnn's layout, filler biases filled in.

  Where Keras has one bias, from_keras puts it in ``b_x`` and zeros in
  ``b_h``; both enter the same pre-activation, so jaxrnn's gradient for
  ``b_h`` equals that for ``b_x`` (i.e. Keras's bias gradient).
  """
  def fill(cell, p):
    cfg = dict(cell.config)
    one_bias = not (cfg["kind"] == "gru" and cfg["reset_after"])
    if p.b_x is not None and one_bias:
      return p._replace(b_h=p.b_x)
    return p

  cfg = dict(layer.config)
  if cfg["kind"] == "bidirectional":
    return jaxrnn.BidirectionalParams(fill(cfg["forward"], converted.forward),
                                      fill(cfg["backward"], converted.backward))
  return fill(cfg["cell"], converted)


def check_against_keras(klayer, *, seed=0, lengths=LENGTHS, initial_state=True,
                        tol=None, **rnn_options):
  """Converts the built ``klayer`` (return_sequences and return_state set)."""
  dtype = np.dtype(klayer.get_weights()[0].dtype).type
  tol = TOL[dtype] if tol is None else tol
  layer, params = from_keras(klayer, **rnn_options)
  lengths = np.asarray(lengths)
  B, T = len(lengths), int(lengths.max())
  rng = np.random.default_rng(seed + 1)
  xs = rng.normal(size=(B, T, INPUT_SIZE)).astype(dtype)
  valid = np.arange(T)[None, :] < lengths[:, None]
  xs[~valid] = 1e3  # junk in the padding
  # The zero-carry shapes give the state shapes (with a batch axis).
  zero = jax.eval_shape(lambda: jax.vmap(lambda _: layer.init_carry(dtype))(jnp.arange(B)))
  state_shapes = [s.shape for s in carry_to_keras(layer, zero)]
  states0 = None
  if initial_state:
    states0 = [(rng.normal(size=s) * 0.5).astype(dtype) for s in state_shapes]
  ys_shape = jax.eval_shape(
      lambda x: jax.vmap(lambda x: layer.apply(params, x)[0])(x), xs).shape
  w_out = rng.normal(size=ys_shape).astype(dtype) * valid[:, :, None]
  w_states = [rng.normal(size=s).astype(dtype) for s in state_shapes]
  reverse_out = dict(layer.config)["kind"] == "rnn" and dict(layer.config)["reverse"]

  def keras_loss(weights, xs, states):
    kwargs = dict(mask=jnp.asarray(valid))
    if states is not None:
      kwargs["initial_state"] = states
    out, _ = klayer.stateless_call(weights, non_trainable, xs, **kwargs)
    ys, final = out[0], out[1:]
    if reverse_out:  # go_backwards returns the sequence in reverse order
      ys = ys[:, ::-1]
    loss = jnp.sum(ys * w_out) + sum(jnp.sum(s * w) for s, w in zip(final, w_states))
    return loss, (ys, list(final))

  def jaxrnn_loss(params, xs, states):
    if states is None:
      ys, final = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
    else:
      carry = carry_from_keras(layer, states)
      ys, final = jax.vmap(lambda x, n, c: layer.apply(params, x, length=n, carry=c))(
          xs, lengths, carry)
    final = carry_to_keras(layer, final)
    loss = jnp.sum(ys * w_out) + sum(jnp.sum(s * w) for s, w in zip(final, w_states))
    return loss, (ys, final)

  argnums = (0, 1) if states0 is None else (0, 1, 2)
  weights = [v.value for v in klayer.trainable_variables]
  non_trainable = [v.value for v in klayer.non_trainable_variables]  # seed states

  @jax.jit  # the reference and the converted layer in one program
  def both(weights, params, xs, states):
    # Keras's cells add biases by implicit rank promotion: allow it while
    # Keras (the reference) is traced, and only then.
    with jax.numpy_rank_promotion("allow"):
      keras_result = jax.value_and_grad(keras_loss, argnums=argnums, has_aux=True)(
          weights, xs, states)
    return keras_result, jax.value_and_grad(jaxrnn_loss, argnums=argnums, has_aux=True)(
        params, xs, states)

  ((k_loss, (k_ys, k_final)), k_grads), ((j_loss, (j_ys, j_final)), j_grads) = both(
      weights, params, xs, states0)

  np.testing.assert_allclose(np.asarray(j_ys)[valid], np.asarray(k_ys)[valid], **tol)
  assert np.all(np.asarray(j_ys)[~valid] == 0)
  for j, k in zip(j_final, k_final, strict=True):
    np.testing.assert_allclose(j, k, **tol)
  np.testing.assert_allclose(j_loss, k_loss, rtol=tol["rtol"] * 10)
  np.testing.assert_allclose(j_grads[1], k_grads[1], err_msg="dx", **tol)
  if states0 is not None:
    for j, k in zip(j_grads[2], k_grads[2], strict=True):
      np.testing.assert_allclose(j, k, err_msg="dstates", **tol)
  # Keras's weight gradients, converted by the raw (class, config, weights) path.
  _, converted = from_keras((class_name(klayer), klayer.get_config(),
                             [np.asarray(g) for g in k_grads[0]]))
  expected = expected_param_grads(layer, converted)
  flat_j, tree_j = jax.tree_util.tree_flatten_with_path(j_grads[0])
  flat_k, tree_k = jax.tree_util.tree_flatten_with_path(expected)
  assert tree_j == tree_k
  for (path, j), (_, k) in zip(flat_j, flat_k):
    np.testing.assert_allclose(j, k, err_msg=jax.tree_util.keystr(path), **tol)
  return layer, params


# Zero initialisers: build() then costs nothing (no QR for the orthogonal
# default); build() overwrites the weights anyway.
ZI = dict(kernel_initializer="zeros", recurrent_initializer="zeros")
SEQ = dict(return_sequences=True, return_state=True, **ZI)

# Pairwise rather than a product: every kind (SimpleRNN, LSTM, GRU with the
# reset gate after or before the recurrent product) runs as a plain layer and
# inside a Bidirectional (whose backward layer runs backwards), with biases
# and without, and with an initial state and without; plain layers run
# go_backwards with two kinds; each merge (concat, sum, mul, ave) runs once.
# The units (1 to 4) and the lengths (one sequence of one step; batches
# holding 1 and T) vary. One row per module, one compiled program (Keras
# and the converted layer together). These rows replace a property test's
# random draws.
CONFIGS = {
    "simple_rnn_nobias_backwards": lambda: KL.SimpleRNN(
        4, use_bias=False, go_backwards=True, **SEQ),
    "simple_rnn_one_unit_nobias": lambda: KL.SimpleRNN(1, use_bias=False, **SEQ),
    "lstm_nobias_backwards": lambda: KL.LSTM(4, use_bias=False, go_backwards=True, **SEQ),
    "gru": lambda: KL.GRU(4, **SEQ),
    "gru_reset_before": lambda: KL.GRU(4, reset_after=False, **SEQ),
    "bi_lstm_concat": lambda: KL.Bidirectional(KL.LSTM(3, **SEQ)),
    "bi_simple_rnn_relu_sum": lambda: KL.Bidirectional(
        KL.SimpleRNN(3, activation="relu", **SEQ), merge_mode="sum"),
    # A custom backward layer of another kind, and the "mul" merge.
    "bi_lstm_gru_nobias_mul": lambda: KL.Bidirectional(
        KL.LSTM(3, **SEQ), merge_mode="mul",
        backward_layer=KL.GRU(3, use_bias=False, go_backwards=True, **SEQ)),
}
# Keras splits a Bidirectional initial_state in halves, which cannot work
# for an LSTM forward layer with a GRU backward layer (3 states).
NO_INITIAL_STATE = {"simple_rnn_one_unit_nobias", "gru_reset_before", "bi_lstm_gru_nobias_mul"}
ROW_LENGTHS = {"simple_rnn_one_unit_nobias": [1]}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_keras_float32(name):
  klayer = build(CONFIGS[name](), seed=len(name))
  check_against_keras(klayer, seed=len(name), lengths=ROW_LENGTHS.get(name, LENGTHS),
                      initial_state=name not in NO_INITIAL_STATE, unroll=1)


def test_matches_keras_float64(x64):
  # Bidirectional GRU(reset_after=False) without biases, merge "ave". float64
  # weights stay float64. The comparison cannot be tighter than float32:
  # Keras 3.15's JAX backend computes tanh and sigmoid of float64 tensors in
  # float32 (keras.src.backend.common.dtypes.result_type("float64", float) ==
  # "float32"), so the reference itself is float32-exact.
  klayer = KL.Bidirectional(KL.GRU(3, reset_after=False, use_bias=False, dtype="float64", **SEQ),
                            merge_mode="ave", dtype="float64")
  layer, params = check_against_keras(build(klayer), unroll=1, tol=TOL[np.float32])
  assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------
# Structure and raw weights (no compilation).


def test_gate_layout():
  klayer = build(KL.GRU(2, **SEQ))
  layer, params = from_keras(klayer)
  kernel, recurrent, bias = klayer.get_weights()
  H = 2
  z, r, h = (slice(k * H, (k + 1) * H) for k in range(3))
  np.testing.assert_array_equal(params.W_x, np.concatenate([kernel[:, r], kernel[:, z], kernel[:, h]], 1))
  np.testing.assert_array_equal(params.W_h, np.concatenate([recurrent[:, r], recurrent[:, z], recurrent[:, h]], 1))
  np.testing.assert_array_equal(params.b_x, np.concatenate([bias[0, r], bias[0, z], bias[0, h]]))
  np.testing.assert_array_equal(params.b_h, np.concatenate([bias[1, r], bias[1, z], bias[1, h]]))
  klayer = build(KL.LSTM(2, **SEQ))
  _, params = from_keras(klayer)
  kernel, recurrent, bias = klayer.get_weights()
  np.testing.assert_array_equal(params.W_x, kernel)  # (i, f, c, o) is (i, f, g, o)
  np.testing.assert_array_equal(params.W_h, recurrent)
  np.testing.assert_array_equal(params.b_x, bias)
  np.testing.assert_array_equal(params.b_h, np.zeros_like(bias))


@pytest.mark.parametrize("name", ["lstm_nobias_backwards", "gru_reset_before",
                                  "bi_lstm_gru_nobias_mul", "bi_simple_rnn_relu_sum"])
def test_raw_weights_equal_live_layer(name):
  klayer = build(CONFIGS[name](), seed=3)
  layer, params = from_keras(klayer)
  raw = (class_name(klayer), klayer.get_config(), klayer.get_weights())
  ser = (keras.layers.serialize(klayer), klayer.get_weights())
  for desc in (raw, ser):
    layer2, params2 = from_keras(desc)
    assert jax.tree_util.tree_structure(params2) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
    for key in ("kind", "reverse", "merge"):
      assert dict(layer2.config).get(key) == dict(layer.config).get(key)


def test_layer_structure():
  layer, _ = from_keras(build(KL.GRU(3, **ZI, reset_after=False, go_backwards=True)))
  cfg = dict(layer.config)
  assert cfg["kind"] == "rnn" and cfg["reverse"]
  assert dict(cfg["cell"].config)["reset_after"] is False
  layer, params = from_keras(build(KL.Bidirectional(KL.LSTM(3, **ZI), merge_mode="ave")))
  cfg = dict(layer.config)
  assert cfg["kind"] == "bidirectional" and cfg["merge"] == "mean"
  assert isinstance(params, jaxrnn.BidirectionalParams)
  # unit_forget_bias only initialises the bias: the weights already hold it.
  a = build(KL.LSTM(3, **ZI, unit_forget_bias=True), seed=5)
  b = build(KL.LSTM(3, **ZI, unit_forget_bias=False), seed=5)
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_keras(a)[1], from_keras(b)[1])
  # keras.layers.RNN around a built-in cell.
  wrapped = build(KL.RNN(KL.LSTMCell(3, **ZI), go_backwards=True), seed=5)
  layer, params = from_keras(wrapped)
  assert dict(layer.config)["reverse"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, from_keras(b)[1])


def test_carry_helpers():
  layer, _ = from_keras(build(KL.Bidirectional(KL.LSTM(3, **ZI),
                                               backward_layer=KL.GRU(3, **ZI, go_backwards=True))))
  states = [np.full((2, 3), float(i), np.float32) for i in range(3)]
  carry = carry_from_keras(layer, states)
  assert isinstance(carry, jaxrnn.BidirectionalCarry)
  assert isinstance(carry.forward, jaxrnn.LSTMState)
  assert float(carry.forward.c[0, 0]) == 1.0 and float(carry.backward[0, 0]) == 2.0
  for a, b in zip(carry_to_keras(layer, carry), states, strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=E(
      "states: expected 3 arrays for this layer, got 2")):
    carry_from_keras(layer, states[:2])


# ---------------------------------------------------------------------------
# Errors.


NO_DROPOUT = ("{} is not supported (jaxrnn layers have no dropout, and training would "
              "continue without it); set it to 0 and apply dropout yourself")


@pytest.mark.parametrize("make, match", [
    (lambda: KL.LSTM(3, **ZI, dropout=0.1), "layer: " + NO_DROPOUT.format("dropout=0.1")),
    (lambda: KL.GRU(3, **ZI, recurrent_dropout=0.2),
     "layer: " + NO_DROPOUT.format("recurrent_dropout=0.2")),
    (lambda: KL.SimpleRNN(3, **ZI, activation="sigmoid"),
     "layer: activation='sigmoid' is not supported; jaxrnn.elman imports 'tanh' and 'relu'"),
    (lambda: KL.LSTM(3, **ZI, activation="relu"),
     "layer: activation='relu' is not supported; jaxrnn.lstm uses tanh"),
    (lambda: KL.GRU(3, **ZI, recurrent_activation="hard_sigmoid"),
     "layer: recurrent_activation='hard_sigmoid' is not supported; jaxrnn.gru uses the "
     "logistic sigmoid"),
    (lambda: KL.LSTM(3, **ZI, dtype="mixed_float16"),
     "layer: the dtype policy 'mixed_float16' computes in float16 with float32 weights; "
     "mixed precision is not supported"),
    (lambda: KL.Bidirectional(KL.LSTM(3, **ZI), merge_mode=None),
     "Bidirectional: merge_mode=None is not supported (a jaxrnn layer has one output); use "
     "'concat', 'sum', 'mul' or 'ave'"),
    # Raised by Keras itself, when the layer is built.
    (lambda: KL.Bidirectional(KL.LSTM(3, **ZI, go_backwards=True)),
     "Forward layer and backward layer should have different `go_backwards` value. "
     "Received: forward_layer.go_backwards True, backward_layer.go_backwards=True"),
    (lambda: KL.Bidirectional(KL.GRU(3, **ZI, dropout=0.5)),
     "Bidirectional forward layer: " + NO_DROPOUT.format("dropout=0.5")),
])
def test_unsupported_options_raise(make, match):
  with pytest.raises(ValueError, match="^" + re.escape(match) + "$"):
    from_keras(build(make()))


def test_stateful_raises():
  klayer = KL.GRU(3, **ZI, stateful=True)
  klayer.build((2, None, INPUT_SIZE))
  with pytest.raises(ValueError, match=E(
      "layer: stateful=True is not supported: the state kept between batches lives in the Keras "
      "layer, not in its weights; pass it explicitly as carry= (see carry_from_keras)")):
    from_keras(klayer)


def test_other_errors():
  with pytest.raises(ValueError, match=E(
      "layer_or_weights: the Keras LSTM layer is not built, so it has no weights yet; call it on "
      "data or layer.build(input_shape) first")):
    from_keras(KL.LSTM(3, **ZI))
  with pytest.raises(TypeError, match=E(
      "layer_or_weights: expected a Keras SimpleRNN, LSTM, GRU or Bidirectional layer, got Dense")):
    from_keras(KL.Dense(3))
  with pytest.raises(ValueError, match=E(
      "layer: LSTM(use_bias=True) has 3 weight arrays (kernel, recurrent_kernel, bias), got 1")):
    from_keras(("LSTM", {"units": 2}, [np.zeros((3, 8), np.float32)]))
  with pytest.raises(ValueError, match=E(
      "layer: recurrent_kernel: expected shape (2, 8), got (3, 8)")):
    from_keras(("LSTM", {"units": 2}, [np.zeros((3, 8), np.float32),
                                       np.zeros((3, 8), np.float32),
                                       np.zeros((8,), np.float32)]))
  with pytest.raises(ValueError, match=E(
      "layer kernel: the Keras weights are float64 but jax_enable_x64 is off, so JAX would "
      "silently truncate them to float32; enable it with jax.config.update('jax_enable_x64', "
      "True)")):
    from_keras(("SimpleRNN", {"units": 2}, [np.zeros((3, 2)), np.zeros((2, 2)), np.zeros(2)]))


def test_regularizers_warn():
  with pytest.warns(UserWarning, match=E(
      "layer: kernel_regularizer only act during Keras training and are not converted; add the "
      "equivalent penalty or projection to your JAX training step")):
    from_keras(build(KL.LSTM(3, **ZI, kernel_regularizer="l2")))
