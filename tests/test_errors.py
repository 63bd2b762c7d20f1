"""Bad arguments raise at trace time with a message of the form
"<argument>: expected <what>, got <what was passed>"."""

import re

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


# The end of a message: JAX appends a note on traceback filtering to errors
# raised while tracing.
END = r"(\n|$)"
# The owner named by the layers' checks of xs.
APPLY = {"rnn": r"rnn\.apply", "bidirectional": r"rnn\.apply", "stack": r"rnn\.apply",
         "readout": r"readout\.apply"}
VMAP_HINT = (r"apply works on ONE sequence: for a minibatch use "
             r"jax\.vmap\(layer\.apply, in_axes=\(None, 0\)\) \(and vmap `length` too\)")
ONE_EXAMPLE = r"; a carry is for ONE example \(vmap for a minibatch\)"
ANOTHER_TEXT = "; were these params made by another cell or layer?"
ANOTHER = re.escape(ANOTHER_TEXT)


# ---------------------------------------------------------------------------
# Inputs.


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_wrong_input_size(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  _trace(layer, params, jnp.ones((T, D)))  # the right size traces
  with pytest.raises(ValueError, match=rf"^xs: {APPLY[name]} expects shape \(T, 3\) to match "
                     rf"its params' input_size=3, got shape \(5, 4\){END}"):
    _trace(layer, params, jnp.ones((T, D + 1)))


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_batched_xs_without_vmap(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  # readout also maps images (R, C, input_size): a batch of sequences is
  # rank 3 for the others, a batch of images rank 4 for readout.
  if name == "readout":
    batched, hint = (2, 4, T, D), ""
  else:
    batched, hint = (2, T, D), "; " + VMAP_HINT
  with pytest.raises(ValueError, match=rf"^xs: {APPLY[name]} expects shape \(T, input_size\), "
                     rf"got shape {re.escape(str(batched))} \(rank {len(batched)}\)"
                     rf"{hint}{END}"):
    _trace(layer, params, jnp.ones(batched))
  with pytest.raises(ValueError, match=rf"^xs: {APPLY[name]} expects shape \(T, input_size\), "
                     rf"got shape \(3,\) \(rank 1\){END}"):
    _trace(layer, params, jnp.ones((D,)))


def test_integer_xs():
  layer = jaxrnn.rnn(jaxrnn.gru(H))
  with pytest.raises(TypeError, match=rf"^xs: expected a floating-point array, got dtype "
                     rf"int32{END}"):
    _trace(layer, _abstract_params(layer), jnp.ones((T, D), jnp.int32))


@pytest.mark.parametrize("case", ref.CASES, ids=ref.CASE_IDS)
def test_cell_apply_wrong_x(case):
  cell = case.make()
  params = _abstract_params(cell)
  carry = cell.init_carry()
  with pytest.raises(ValueError, match=rf"^x: cell_apply expects shape \(3,\), got shape "
                     rf"\(4,\){END}"):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones(D + 1))
  with pytest.raises(ValueError, match=rf"^x: cell_apply expects shape \(3,\), got shape "
                     rf"\(1, 3\){END}"):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones((1, D)))
  with pytest.raises(TypeError, match=rf"^x: expected a floating-point array, got dtype "
                     rf"int32{END}"):
    jax.eval_shape(cell.cell_apply, params, carry, jnp.ones(D, jnp.int32))


# ---------------------------------------------------------------------------
# length.


@pytest.mark.parametrize("name", ["rnn", "bidirectional", "stack", "readout"])
def test_bad_length(name):
  layer = _layers()[name]
  params = _abstract_params(layer)
  xs = jnp.ones((T, D))
  not_a_scalar = (rf"^length: expected a scalar \(one sequence\), got shape \(2,\); for a "
                  rf"minibatch, vmap over `length` together with `xs`{END}")
  for bad, got in ((3.0, "float"), (jnp.float32(3), "dtype float32"),
                   (np.float64(3), "dtype float64"), (True, "bool"), ("3", "str")):
    with pytest.raises(TypeError, match=rf"^length: expected an integer scalar, got {got}{END}"):
      _trace(layer, params, xs, length=bad)
  with pytest.raises(ValueError, match=not_a_scalar):
    _trace(layer, params, xs, length=jnp.array([2, 3]))
  # Traced too.
  with pytest.raises(TypeError, match=rf"^length: expected an integer scalar, got dtype "
                     rf"float32{END}"):
    jax.eval_shape(lambda p, n: layer.apply(p, xs, length=n), params, jnp.float32(2))
  with pytest.raises(ValueError, match=not_a_scalar):
    jax.eval_shape(lambda p, n: layer.apply(p, xs, length=n), params, jnp.ones(2, jnp.int32))


# ---------------------------------------------------------------------------
# Dropout keys: one per sequence.


@pytest.mark.parametrize("name", ["rnn", "stack"])
def test_dropout_keys_one_per_sequence(name):
  """jax.vmap maps keyword arguments over their axis 0: each sequence of a
  minibatch needs its own key, ``jax.random.split(key, B)``."""
  rnn = jaxrnn.rnn(jaxrnn.lstm(H), recurrent_dropout=0.25)
  layer = rnn if name == "rnn" else jaxrnn.stack(rnn, jaxrnn.readout(2), dropout=0.5)
  params = _abstract_params(layer)
  xs = jnp.ones((2, T, D))

  def batched(key):
    return jax.eval_shape(
        lambda p, x: jax.vmap(layer.apply, in_axes=(None, 0))(p, x, key=key), params, xs)

  batched(jax.random.split(jax.random.key(0), 2))  # one key per sequence traces
  batched(jax.random.split(jax.random.PRNGKey(0), 2))
  # A raw key not split: vmap gives each of the 2 sequences one uint32 word.
  with pytest.raises(ValueError, match=whole(
      "key: expected ONE raw uint32 PRNG key (shape (2,)), got shape () (under jax.vmap, a "
      "raw key that was not split reaches each example as one uint32 word); for a minibatch "
      "pass jax.random.split(key, B) through jax.vmap")):
    batched(jax.random.PRNGKey(0))
  # The minibatch's keys given to ONE sequence, typed and raw.
  for keys, want in ((jax.random.split(jax.random.key(0), 2), "PRNG key (shape ()), got shape "
                      "(2,)"), (jax.random.split(jax.random.PRNGKey(0), 2),
                                "raw uint32 PRNG key (shape (2,)), got shape (2, 2)")):
    with pytest.raises(ValueError, match=whole(
        f"key: expected ONE {want}; for a minibatch pass jax.random.split(key, B) through "
        "jax.vmap")):
      _trace(layer, params, xs[0], key=keys)
  with pytest.raises(TypeError, match=whole(
      "key: expected a PRNG key from jax.random.key (or a raw uint32 key of shape (2,)), got "
      "an array of shape (2,) and dtype int32")):
    _trace(layer, params, xs[0], key=jnp.zeros(2, jnp.int32))


def test_an_unsplit_typed_key_fails_inside_jax_vmap():
  """A typed key (shape ()) given to jax.vmap as a keyword argument fails in
  jax.vmap itself, before the function runs: no layer can see it (the page
  on layers quotes this error)."""
  calls = []

  def apply(params, xs, *, key=None):
    calls.append(key)
    return xs

  with pytest.raises(ValueError, match=r"^vmap was requested to map its argument along axis 0, "
                     r"which implies that its rank should be at least 1, but is only 0"):
    jax.vmap(apply, in_axes=(None, 0))(None, jnp.ones((2, T, D)), key=jax.random.key(0))
  assert calls == []


# ---------------------------------------------------------------------------
# Params.


def test_params_of_another_cell():
  lstm_layer, gru_layer = jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.gru(H))
  gru_params = _abstract_params(gru_layer)
  xs = jnp.ones((T, D))
  def another(owner, want, got):
    return rf"^params: {owner} expects {want}, got {got}{ANOTHER}{END}"

  with pytest.raises(TypeError, match=another(r"lstm\(hidden_size=4\)", "LSTMParams",
                                              "GRUParams")):
    _trace(lstm_layer, gru_params, xs)
  with pytest.raises(TypeError, match=another(r"gru\(hidden_size=4\)", "GRUParams",
                                              "ElmanParams")):
    _trace(gru_layer, _abstract_params(jaxrnn.rnn(jaxrnn.elman(H))), xs)
  with pytest.raises(TypeError, match=another(r"elman\(hidden_size=4\)", "ElmanParams",
                                              "GRUParams")):
    cell = jaxrnn.elman(H)
    jax.eval_shape(cell.cell_apply, gru_params, cell.init_carry(), jnp.ones(D))
  bidir = ref.bidirectional_layer()
  with pytest.raises(TypeError, match=another("bidirectional", "BidirectionalParams", "tuple")):
    _trace(bidir, (gru_params, gru_params), xs)
  with pytest.raises(TypeError, match=another("bidirectional", "BidirectionalParams", "tuple")):
    _trace(bidir, _abstract_params(jaxrnn.stack(ref.bidirectional_layer())), xs)
  with pytest.raises(TypeError, match=another(r"readout\(output_size=2\)", "ReadoutParams",
                                              "GRUParams")):
    _trace(jaxrnn.readout(2), gru_params, xs)
  with pytest.raises(TypeError, match=another(r"lstm\(hidden_size=4\)", "LSTMParams", "dict")):
    _trace(lstm_layer, {"W_x": jnp.ones((D, 4 * H))}, xs)


def whole(message):
  """A pattern for exactly ``message`` (and JAX's note on traceback filtering)."""
  return "^" + re.escape(message) + END


def test_params_of_another_layer():
  stack = ref.stack_layer()
  params = _abstract_params(stack)
  xs = jnp.ones((T, D))
  entries = "params: stack of 4 layers expects a tuple of 4 entries, got {}"
  with pytest.raises(TypeError, match=whole(entries.format("3 entries"))):
    _trace(stack, params[:3], xs)
  # One layer's params (a NamedTuple is never a stack's tuple), by type.
  with pytest.raises(TypeError, match=whole(entries.format("LSTMParams with 9 fields"))):
    _trace(stack, params[0], xs)
  with pytest.raises(TypeError, match=whole(entries.format("dict"))):
    _trace(stack, {"layers": params}, xs)
  with pytest.raises(TypeError, match=whole(
      "carry: stack of 4 layers expects a tuple of 4 entries, got LSTMState with 2 fields")):
    _trace(stack, params, xs, carry=jaxrnn.LSTMState(jnp.zeros(H), jnp.zeros(H)))
  # A stack of 2 layers given one cell's params: the numbers differ, the type is named.
  pair = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.readout(2))
  with pytest.raises(TypeError, match=whole(
      "params: stack of 2 layers expects a tuple of 2 entries, got LSTMParams with 9 fields")):
    _trace(pair, params[0], xs)
  # ... also where the count matches: a NamedTuple of 2 fields is not 2 layers' entries.
  bidir_params = _abstract_params(ref.bidirectional_layer())
  with pytest.raises(TypeError, match=whole(
      "params: stack of 2 layers expects a tuple of 2 entries, got BidirectionalParams with 2 "
      "fields")):
    _trace(pair, bidir_params, xs)
  with pytest.raises(TypeError, match=whole(
      "carry: stack of 2 layers expects a tuple of 2 entries, got LSTMState with 2 fields")):
    _trace(pair, _abstract_params(pair), xs, carry=jaxrnn.rnn(jaxrnn.lstm(H)).init_carry())
  with pytest.raises(TypeError, match=rf"^params: lstm\(hidden_size=4\) expects LSTMParams, "
                     rf"got tuple{ANOTHER}{END}"):
    _trace(jaxrnn.rnn(jaxrnn.lstm(H)), params, xs)


def test_errors_inside_a_stack_name_the_layer():
  """From layer 1 on, a layer's inputs are the outputs of the layer before: an
  error there names the layer (layer 0 reads the stack's own arguments)."""
  stack = ref.stack_layer()  # lstm(proj 2) -> bidirectional(gru, elman) -> gru -> readout
  params = _abstract_params(stack)
  xs = jnp.ones((T, D))
  # Layer 1's params made for the stack's input size (3), not layer 0's output (2).
  wrong = (params[0], _abstract_params(ref.bidirectional_layer(), D)) + params[2:]
  with pytest.raises(ValueError, match=whole(
      "layers[1] (bidirectional): xs: rnn.apply expects shape (T, 3) to match its params' "
      "input_size=3, got shape (5, 2)")):
    _trace(stack, wrong, xs)
  lstm_params = _abstract_params(jaxrnn.rnn(jaxrnn.lstm(H)), 2 * H)  # the right input size
  with pytest.raises(TypeError, match=whole(
      "layers[2] (rnn): params: gru(hidden_size=4) expects GRUParams, got LSTMParams"
      + ANOTHER_TEXT)):
    _trace(stack, params[:2] + (lstm_params,) + params[3:], xs)
  # Nested stacks name every level; a user layer (no config) is named as one.
  user = jaxrnn.Layer(lambda k, n, dtype=None: jnp.ones((n, 2)),
                      lambda p, x, length=None, carry=None: (x @ p, ()), lambda dtype=None: ())
  outer = jaxrnn.stack(jaxrnn.readout(2), jaxrnn.stack(user, jaxrnn.rnn(jaxrnn.gru(H))), user)
  nested = _abstract_params(outer)
  bad_gru = _abstract_params(jaxrnn.rnn(jaxrnn.gru(H)), D)
  with pytest.raises(ValueError, match=whole(
      "layers[1] (stack): layers[1] (rnn): xs: rnn.apply expects shape (T, 3) to match its "
      "params' input_size=3, got shape (5, 2)")):
    _trace(outer, (nested[0], (nested[1][0], bad_gru), nested[2]), xs)
  with pytest.raises(TypeError, match=r"^layers\[2\] \(user layer\): "):
    _trace(outer, nested[:2] + (jnp.ones((5, 2)),), xs)
  # Layer 0's errors are about the stack's own arguments and read as such.
  with pytest.raises(TypeError, match=whole(
      "params: lstm(hidden_size=4, proj_size=2) expects LSTMParams, got GRUParams"
      + ANOTHER_TEXT)):
    _trace(stack, (_abstract_params(jaxrnn.rnn(jaxrnn.gru(H))),) + params[1:], xs)


@pytest.mark.parametrize("make", [
    lambda h: jaxrnn.elman(h), lambda h: jaxrnn.lstm(h), lambda h: jaxrnn.gru(h),
    lambda h: jaxrnn.lstm(h, proj_size=2)], ids=["elman", "lstm", "gru", "lstm_proj"])
def test_params_of_wrong_hidden_size(make):
  xs = jnp.ones((T, D))
  layer = jaxrnn.rnn(make(H))
  params = _abstract_params(jaxrnn.rnn(make(H + 1)))
  cell = make(H)
  owner = re.escape(dict(cell.config)["kind"]) + r"\(hidden_size=4(, proj_size=2)?\)"
  gates = {"elman": 1, "lstm": 4, "gru": 3}[dict(cell.config)["kind"]]
  message = (rf"^params\.W_x: {owner} expects shape \(input_size, {gates * H}\), got "
             rf"\(3, {gates * (H + 1)}\){END}")
  with pytest.raises(ValueError, match=message):
    _trace(layer, params, xs)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(cell.cell_apply, params, cell.init_carry(), jnp.ones(D))


def test_lstm_projection_params_mismatch():
  xs = jnp.ones((T, D))
  proj, plain = jaxrnn.rnn(jaxrnn.lstm(H, proj_size=P)), jaxrnn.rnn(jaxrnn.lstm(H))
  proj_params = _abstract_params(proj)
  with pytest.raises(ValueError, match=rf"^params\.W_h: lstm\(hidden_size=4\) expects shape "
                     rf"\(4, 16\), got shape \(2, 16\){END}"):
    _trace(plain, proj_params, xs)
  with pytest.raises(ValueError, match=rf"^params\.W_h: lstm\(hidden_size=4, proj_size=2\) "
                     rf"expects shape \(2, 16\), got shape \(4, 16\){END}"):
    _trace(proj, _abstract_params(plain), xs)
  with pytest.raises(ValueError, match=rf"^params\.W_hr: lstm\(hidden_size=4, proj_size=2\) "
                     rf"expects shape \(4, 2\), got shape \(4, 3\){END}"):
    _trace(proj, proj_params._replace(W_hr=jnp.ones((H, P + 1))), xs)


def test_readout_wrong_params_shape():
  head = jaxrnn.readout(2)
  params = _abstract_params(head)
  xs = jnp.ones((T, D))
  with pytest.raises(ValueError, match=rf"^params\.W_hy: readout\(output_size=2\) expects "
                     rf"shape \(input_size, 2\), got \(3, 3\){END}"):
    _trace(head, params._replace(W_hy=jnp.ones((D, 3))), xs)
  with pytest.raises(ValueError, match=rf"^params\.b_y: readout\(output_size=2\) expects "
                     rf"shape \(2,\), got shape \(3,\){END}"):
    _trace(head, params._replace(b_y=jnp.ones(3)), xs)


# ---------------------------------------------------------------------------
# Carries.


def test_bad_carry_rnn():
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = _abstract_params(layer)
  xs = jnp.ones((T, D))
  good = layer.init_carry()
  _trace(layer, params, xs, carry=good)
  with pytest.raises(ValueError, match=rf"^carry: rnn\.apply expects leaves of shape \(4,\), "
                     rf"got \(5,\){ONE_EXAMPLE}{END}"):
    _trace(layer, params, xs, carry=jaxrnn.LSTMState(jnp.zeros(H + 1), jnp.zeros(H)))
  with pytest.raises(ValueError, match=rf"^carry: rnn\.apply expects leaves of shape \(4,\), "
                     rf"got \(1, 4\){ONE_EXAMPLE}{END}"):
    _trace(layer, params, xs, carry=jax.tree_util.tree_map(lambda c: c[None], good))
  with pytest.raises(TypeError, match=rf"^carry: rnn\.apply expects a carry structured like "
                     rf"PyTreeDef\(.*LSTMState.*\), got PyTreeDef\(\*\){END}"):
    _trace(layer, params, xs, carry=jnp.zeros(H))
  gru = jaxrnn.rnn(jaxrnn.gru(H))
  with pytest.raises(TypeError, match=rf"^carry: rnn\.apply expects a carry structured like "
                     rf"PyTreeDef\(\*\), got PyTreeDef\(.*LSTMState.*\){END}"):
    _trace(gru, _abstract_params(gru), xs, carry=good)


@pytest.mark.parametrize("case", ref.CASES, ids=ref.CASE_IDS)
def test_bad_carry_cell_apply(case):
  cell = case.make()
  params = _abstract_params(cell)
  bad = jax.tree_util.tree_map(lambda c: jnp.zeros(c.shape[0] + 1), cell.init_carry())
  size = case.out_size  # the first leaf: h
  with pytest.raises(ValueError, match=rf"^carry: cell_apply expects leaves of shape "
                     rf"\({size},\), got \({size + 1},\){ONE_EXAMPLE}{END}"):
    jax.eval_shape(cell.cell_apply, params, bad, jnp.ones(D))


def test_bad_carry_bidirectional_stack_readout():
  xs = jnp.ones((T, D))
  bidir = ref.bidirectional_layer()
  params = _abstract_params(bidir)
  good = bidir.init_carry()
  with pytest.raises(TypeError, match=rf"^carry: bidirectional expects a "
                     rf"BidirectionalCarry\(forward, backward\) or None, got tuple{END}"):
    _trace(bidir, params, xs, carry=(good.forward, good.backward))
  with pytest.raises(ValueError, match=rf"^carry: rnn\.apply expects leaves of shape \(4,\), "
                     rf"got \(5,\){ONE_EXAMPLE}{END}"):
    _trace(bidir, params, xs, carry=good._replace(forward=jnp.zeros(H + 1)))
  with pytest.raises(TypeError, match=rf"^carry: rnn\.apply expects a carry structured like "
                     rf"PyTreeDef\(.*LSTMState.*\), got PyTreeDef\(\*\){END}"):
    _trace(bidir, params, xs, carry=good._replace(backward=jnp.zeros(H)))
  stack = ref.stack_layer()
  s_params = _abstract_params(stack)
  s_carry = stack.init_carry()
  with pytest.raises(TypeError, match=rf"^carry: stack of 4 layers expects a tuple of 4 "
                     rf"entries, got 2 entries{END}"):
    _trace(stack, s_params, xs, carry=s_carry[:2])
  with pytest.raises(ValueError, match=rf"^layers\[2\] \(rnn\): carry: rnn\.apply expects "
                     rf"leaves of shape \(4,\), got \(1,\){ONE_EXAMPLE}{END}"):
    _trace(stack, s_params, xs, carry=(s_carry[0], s_carry[1], jnp.zeros(1), ()))
  head = jaxrnn.readout(2)
  with pytest.raises(TypeError, match=rf"^carry: readout\(output_size=2\) is stateless and "
                     rf"expects \(\) or None{END}"):
    _trace(head, _abstract_params(head), xs, carry=jnp.zeros(2))


# ---------------------------------------------------------------------------
# Constructors.


def test_unknown_names():
  for bad in ("sigmoid", None):
    with pytest.raises(ValueError, match=rf"^activation: expected one of \['relu', 'tanh'\] or "
                       rf"a callable, got {bad!r}$"):
      jaxrnn.elman(H, activation=bad)
  for bad in ("max", None):
    with pytest.raises(ValueError, match=rf"^merge: expected one of \['concat', 'mean', 'mul', "
                       rf"'sum'\] or a callable, got {bad!r}$"):
      jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), merge=bad)
  with pytest.raises(ValueError, match=r"^reduction: expected one of \('sum', 'mean', "
                     r"'last'\), got 'median'$"):
    jaxrnn.sequence_loss(jnp.ones(T), reduction="median")


def test_cell_where_layer_expected_and_vice_versa():
  cell = jaxrnn.lstm(H)
  layer = jaxrnn.rnn(cell)
  wrap = r", got a jaxrnn\.Cell; wrap it as jaxrnn\.rnn\(cell\)$"
  unwrap = (r": expected a jaxrnn\.Cell, got a jaxrnn\.Layer; pass the cell itself "
            r"\(e\.g\. jaxrnn\.lstm\(64\)\), not rnn\(cell\)$")
  with pytest.raises(ValueError, match=r"^layers: stack expects at least one Layer, got none$"):
    jaxrnn.stack()
  with pytest.raises(TypeError, match=r"^layers\[0\]: expected a jaxrnn\.Layer" + wrap):
    jaxrnn.stack(cell)
  with pytest.raises(TypeError, match=r"^layers\[1\]: expected a jaxrnn\.Layer" + wrap):
    jaxrnn.stack(layer, cell)
  with pytest.raises(TypeError, match=r"^layers\[0\]: expected a jaxrnn\.Layer, got function$"):
    jaxrnn.stack(lambda x: x)
  with pytest.raises(TypeError, match=r"^cell" + unwrap):
    jaxrnn.rnn(layer)
  with pytest.raises(TypeError, match=r"^cell: expected a jaxrnn\.Cell, got str$"):
    jaxrnn.rnn("lstm")
  with pytest.raises(TypeError, match=r"^forward" + unwrap):
    jaxrnn.bidirectional(layer, cell)
  with pytest.raises(TypeError, match=r"^backward" + unwrap):
    jaxrnn.bidirectional(cell, layer)


def test_bad_sizes_and_options():
  positive = r"^{}: expected a positive int, got {}$"
  for make in (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru):
    with pytest.raises(ValueError, match=positive.format("hidden_size", 0)):
      make(0)
    with pytest.raises(TypeError, match=positive.format("hidden_size", r"float 4\.0")):
      make(4.0)
    with pytest.raises(TypeError, match=positive.format("hidden_size", "bool True")):
      make(True)  # a bool is not a size, though Python counts it as an int
    with pytest.raises(ValueError, match=positive.format("input_size", 0)):
      make(H).init_params(KEY, 0)
  with pytest.raises(ValueError, match=r"^proj_size: expected a size smaller than "
                     r"hidden_size=4, got 4$"):
    jaxrnn.lstm(H, proj_size=H)
  with pytest.raises(ValueError, match=positive.format("output_size", 0)):
    jaxrnn.readout(0)
  with pytest.raises(TypeError, match=r"^recurrent_dropout: expected a rate in \[0, 1\), "
                     r"got bool False$"):
    jaxrnn.rnn(jaxrnn.gru(H), recurrent_dropout=False)
  with pytest.raises(ValueError, match=positive.format("input_size", -1)):
    jaxrnn.readout(2).init_params(KEY, -1)
  with pytest.raises(ValueError, match=positive.format("input_size", 0)):
    ref.stack_layer().init_params(KEY, 0)
  with pytest.raises(ValueError, match=positive.format("unroll", 0)):
    jaxrnn.rnn(jaxrnn.gru(H), unroll=0)
  with pytest.raises(ValueError, match=positive.format("remat", 0)):
    jaxrnn.rnn(jaxrnn.gru(H), remat=0)
  with pytest.raises(ValueError, match=positive.format("unroll", -1)):
    jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H), unroll=-1)


def test_sequence_loss_bad_arguments():
  losses = jnp.ones((2, T))
  with pytest.raises(TypeError, match=r"^length: expected integers, got float32$"):
    jaxrnn.sequence_loss(losses, jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match=r"^length: expected shape \(2,\) "
                     r"\(per_step_losses\.shape\[:-1\]\), got \(3,\)$"):
    jaxrnn.sequence_loss(losses, jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r"^length: expected shape \(2,\) "
                     r"\(per_step_losses\.shape\[:-1\]\), got \(\)$"):
    jaxrnn.sequence_loss(losses, 3)
  with pytest.raises(ValueError, match=r"^per_step_losses: expected shape \(\.\.\., T\), got a "
                     r"scalar$"):
    jaxrnn.sequence_loss(jnp.float32(1.0))
  with pytest.raises(TypeError, match=r"^per_step_losses: expected a floating-point array, "
                     r"got dtype int32$"):
    jaxrnn.sequence_loss(jnp.ones((2, T), jnp.int32))
