"""Drop-in modules for Flax linen, Flax NNX and Equinox.

Each adapter must be ``jax.vmap(layer.apply)`` in the framework's clothes:
the same numbers (bit for bit where the computation is the same), every
padding guarantee, the framework's own jit and grad, and training with optax
that follows the raw jaxrnn loop step for step.
"""

import functools
import pathlib
import subprocess
import sys
import textwrap

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.datasets import load_digits

import jaxrnn
import jaxrnn.equinox
import jaxrnn.flax
import jaxrnn.nnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
B, T, D = 3, 6, 2
LENGTHS = np.array([6, 3, 0], np.int32)  # full, padded, empty
TOL = {"rtol": 1e-5, "atol": 1e-6}

# Every test here shares compiled programs through module-level caches (the
# layers, the models, their jitted runs and grads, the references): one
# worker runs them all, so that each program compiles once.
pytestmark = pytest.mark.xdist_group("adapters")

# unroll=1: the adapters run whatever the layer computes, and the loop's
# body compiles once instead of unrolled.
LAYERS = {
    "rnn": jaxrnn.rnn(jaxrnn.lstm(4), unroll=1),
    "bidirectional": jaxrnn.bidirectional(jaxrnn.gru(3), jaxrnn.lstm(3), unroll=1),
    "stack": jaxrnn.stack(jaxrnn.rnn(jaxrnn.elman(5), unroll=1),
                          jaxrnn.rnn(jaxrnn.min_gru(4), unroll=1), jaxrnn.readout(2)),
}


def batch(seed=0, pad=np.nan, lengths=LENGTHS):
  """``xs: (B, T, D)`` holding ``pad`` at every padded step."""
  xs = np.random.default_rng(seed).standard_normal((len(lengths), T, D)).astype(np.float32)
  for b, n in enumerate(lengths):
    xs[b, n:] = pad
  return jnp.asarray(xs)


def vmapped(layer, params, xs, lengths=None, **options):
  return jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, length=lengths, **options)


def sin_loss(ys):
  return jnp.sum(jnp.sin(ys))


@functools.lru_cache(maxsize=None)
def reference(layer_name):
  """The layer's own jitted run and grad (of `sin_loss`), shared by the adapters."""
  layer = LAYERS[layer_name]
  run = jax.jit(lambda p, xs, n, c: vmapped(layer, p, xs, n, carry=c))
  grad = jax.jit(jax.grad(lambda p, xs, n: sin_loss(vmapped(layer, p, xs, n)[0])))
  return run, grad


# ---------------------------------------------------------------------------
# The three adapters behind one interface: make, params, an eager run, and a
# run and a grad under the framework's own jit and grad.


class Linen:
  @staticmethod
  def make(layer, key):
    module = jaxrnn.flax.RNN(layer)
    return module, jax.jit(module.init)(key, jnp.zeros((1, T, D)))

  @staticmethod
  def params(model):
    return model[1]["params"]["layer"]

  @staticmethod
  def eager(model, xs, lengths=None, carry=None):
    module, variables = model
    carry, ys = module.apply(variables, xs, seq_lengths=lengths, initial_carry=carry,
                             return_carry=True)
    return ys, carry

  @staticmethod
  def runner(model):
    module, variables = model
    run = jax.jit(lambda v, x, n, c: module.apply(
        v, x, seq_lengths=n, initial_carry=c, return_carry=True)[::-1])
    return lambda xs, lengths=None, carry=None: run(variables, xs, lengths, carry)

  @staticmethod
  def grad_fn(model, loss):
    module, variables = model
    grad = jax.jit(jax.grad(lambda v, x, n: loss(module.apply(v, x, seq_lengths=n))))
    return lambda xs, lengths: grad(variables, xs, lengths)["params"]["layer"]


class NNX:
  @staticmethod
  def make(layer, key):
    return jaxrnn.nnx.RNN(layer, D, rngs=nnx.Rngs(key))

  @staticmethod
  def params(model):
    return model.layer_params()

  @staticmethod
  def eager(model, xs, lengths=None, carry=None):
    carry, ys = model(xs, seq_lengths=lengths, initial_carry=carry, return_carry=True)
    return ys, carry

  @staticmethod
  def runner(model):
    run = nnx.jit(lambda m, x, n, c: m(x, seq_lengths=n, initial_carry=c,
                                       return_carry=True)[::-1])
    return lambda xs, lengths=None, carry=None: run(model, xs, lengths, carry)

  @staticmethod
  def grad_fn(model, loss):
    grad = nnx.jit(nnx.grad(lambda m, x, n: loss(m(x, seq_lengths=n))))

    def layer_grads(xs, lengths):
      holder = nnx.clone(model)
      nnx.update(holder, grad(model, xs, lengths))  # the grads, laid out as params
      return holder.layer_params()

    return layer_grads


class Equinox:
  @staticmethod
  def make(layer, key):
    return jaxrnn.equinox.RNN(layer, D, key=key)

  @staticmethod
  def params(model):
    return model.params

  @staticmethod
  def eager(model, xs, lengths=None, carry=None):
    return jax.vmap(model)(xs, length=lengths, carry=carry)

  @staticmethod
  def runner(model):
    run = eqx.filter_jit(lambda m, x, n, c: jax.vmap(m)(x, length=n, carry=c))
    return lambda xs, lengths=None, carry=None: run(model, xs, lengths, carry)

  @staticmethod
  def grad_fn(model, loss):
    grad = eqx.filter_jit(eqx.filter_grad(
        lambda m, x, n: loss(jax.vmap(m)(x, length=n)[0])))
    return lambda xs, lengths: grad(model, xs, lengths).params


ADAPTERS = {"linen": Linen, "nnx": NNX, "equinox": Equinox}
BOTH = pytest.mark.parametrize("adapter", ADAPTERS)
EVERY_LAYER = pytest.mark.parametrize("layer_name", LAYERS)

# Pairwise, not the full product: every adapter runs every layer compiled
# (with lengths given), but the eager run and the run without lengths each
# take one layer per adapter, so that each adapter and each layer meets each
# of them once (adapter x layer x {eager, no lengths} would compile 18 more
# programs for pairs that the others already cover).
EAGER = {("linen", "stack"), ("nnx", "rnn"), ("equinox", "bidirectional")}
NO_LENGTHS = {("linen", "rnn"), ("nnx", "bidirectional"), ("equinox", "stack")}


@functools.lru_cache(maxsize=None)
def model_and_programs(adapter, layer_name):
  """``(model, run, grad)`` of one adapter around one layer: built and jitted once."""
  api = ADAPTERS[adapter]
  model = api.make(LAYERS[layer_name], jax.random.key(0))
  return model, api.runner(model), api.grad_fn(model, sin_loss)


@BOTH
@EVERY_LAYER
def test_same_numbers_as_vmap_of_layer_apply(adapter, layer_name):
  layer, api = LAYERS[layer_name], ADAPTERS[adapter]
  model, run, _ = model_and_programs(adapter, layer_name)
  reference_run, _ = reference(layer_name)
  params = api.params(model)
  # The layer's own params structure, unchanged.
  expected_params = jax.eval_shape(lambda key: layer.init_params(key, D), jax.random.key(0))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(expected_params)
  chex.assert_trees_all_equal_shapes_and_dtypes(params, expected_params)
  xs, lengths = batch(), jnp.asarray(LENGTHS)
  # The same operations give the same bits, under jit and eagerly.
  expected = reference_run(params, xs, lengths, None)
  chex.assert_trees_all_equal(run(xs, lengths), expected)
  if (adapter, layer_name) in EAGER:
    eager = vmapped(layer, params, xs, lengths)
    chex.assert_trees_all_equal(api.eager(model, xs, lengths), eager)
    chex.assert_trees_all_close(eager, expected, **TOL)
  if (adapter, layer_name) in NO_LENGTHS:
    chex.assert_trees_all_equal(run(xs), reference_run(params, xs, None, None))


@BOTH
@EVERY_LAYER
def test_padding_guarantees(adapter, layer_name):
  """Exact zeros at padded steps; NaN in the padding reaches nothing."""
  _, run, grad = model_and_programs(adapter, layer_name)
  lengths = jnp.asarray(LENGTHS)
  ys_nan, carry_nan = run(batch(pad=np.nan), lengths)
  ys_zero, carry_zero = run(batch(pad=0.0), lengths)
  chex.assert_tree_all_finite((ys_nan, carry_nan))
  chex.assert_trees_all_equal((ys_nan, carry_nan), (ys_zero, carry_zero))
  ys_nan = np.asarray(ys_nan)
  for b, n in enumerate(LENGTHS):
    np.testing.assert_array_equal(ys_nan[b, n:], 0)
  # An empty sequence ends in the initial carry.
  initial = LAYERS[layer_name].init_carry()
  chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda c: np.asarray(c)[2], carry_nan),
                              initial)
  grads_nan, grads_zero = grad(batch(pad=np.nan), lengths), grad(batch(pad=0.0), lengths)
  chex.assert_tree_all_finite(grads_nan)
  chex.assert_trees_all_equal(grads_nan, grads_zero)


@BOTH
@EVERY_LAYER
def test_framework_grad_is_the_layer_grad(adapter, layer_name):
  model, _, grad = model_and_programs(adapter, layer_name)
  _, reference_grad = reference(layer_name)
  xs, lengths = batch(seed=3), jnp.asarray(LENGTHS)
  expected = reference_grad(ADAPTERS[adapter].params(model), xs, lengths)
  grads = grad(xs, lengths)
  chex.assert_trees_all_close(grads, expected, **TOL)
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads))


@BOTH
def test_an_initial_carry_passes_through(adapter):
  layer, api = LAYERS["bidirectional"], ADAPTERS[adapter]
  model, run, _ = model_and_programs(adapter, "bidirectional")
  reference_run, _ = reference("bidirectional")
  leaves, treedef = jax.tree_util.tree_flatten(layer.init_carry())
  rng = np.random.default_rng(4)
  carry = treedef.unflatten(
      [jnp.asarray(rng.standard_normal((B,) + leaf.shape), leaf.dtype) for leaf in leaves])
  xs, lengths = batch(seed=5), jnp.asarray(LENGTHS)
  got = run(xs, lengths, carry)
  chex.assert_trees_all_equal(got, reference_run(api.params(model), xs, lengths, carry))
  assert not np.allclose(got[0], run(xs, lengths)[0])
  # The empty sequence (row 2) ends in the carry it was given.
  chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda c: np.asarray(c)[2], got[1]),
                              jax.tree_util.tree_map(lambda c: np.asarray(c)[2], carry))
  if (adapter, "bidirectional") in EAGER:
    eager = api.eager(model, xs, lengths, carry)
    chex.assert_trees_all_equal(eager, vmapped(layer, api.params(model), xs, lengths,
                                               carry=carry))
    chex.assert_trees_all_close(eager, got, **TOL)


RESET_CALLS = {
    "linen": lambda model, xs, reset: model[0].apply(model[1], xs, reset=reset),
    "nnx": lambda model, xs, reset: model(xs, reset=reset),
    "equinox": lambda model, xs, reset: jax.vmap(lambda x, r: model(x, reset=r)[0])(xs, reset),
}


@BOTH
def test_reset_passes_through(adapter):
  """``reset=`` restarts the carry where ``layer.apply``'s does (packed rows)."""
  layer, api = LAYERS["rnn"], ADAPTERS[adapter]
  model, _, _ = model_and_programs(adapter, "rnn")
  xs = batch(seed=6, lengths=(T,) * B)
  reset = np.zeros((B, T), bool)
  reset[:, 0], reset[0, 2], reset[1, 4] = True, True, True
  got = RESET_CALLS[adapter](model, xs, jnp.asarray(reset))
  expected, _ = vmapped(layer, api.params(model), xs, reset=jnp.asarray(reset))
  chex.assert_trees_all_close(got, expected, **TOL)
  # Row 0's second segment equals that segment run alone.
  alone, _ = layer.apply(api.params(model), xs[0, 2:])
  np.testing.assert_allclose(got[0, 2:], alone, **TOL)
  assert not np.allclose(got[0, 2:], vmapped(layer, api.params(model), xs)[0][0, 2:])


# ---------------------------------------------------------------------------
# Training: 30 optax steps on scikit-learn's digits read row by row (T = 8
# rows of 8 pixels, the rows after a random length are padding holding NaN),
# against the raw jaxrnn loop from the same params with the same optimiser.

STEPS, BATCH = 30, 64


@functools.lru_cache(maxsize=None)
def digits_batches():
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    index = rng.choice(len(images), BATCH, replace=False)
    lengths = rng.integers(5, 9, size=BATCH).astype(np.int32)
    xs = images[index].copy()
    for b, n in enumerate(lengths):
      xs[b, n:] = np.nan
    out.append((jnp.asarray(xs), jnp.asarray(lengths), jnp.asarray(digits.target[index])))
  return out


DIGITS_LAYER = jaxrnn.stack(jaxrnn.rnn(jaxrnn.gru(16), unroll=1), jaxrnn.readout(10))
TX = optax.adam(1e-2)


def digits_loss(ys, lengths, labels):
  logits = jax.vmap(jaxrnn.last_step)(ys, lengths)
  return jnp.mean(jaxrnn.classification_loss(logits, labels))


@functools.lru_cache(maxsize=None)
def raw_step(layer, tx):
  """The raw jaxrnn training step, jitted once for the three adapters."""

  @jax.jit
  def step(params, state, xs, lengths, labels):
    loss, grads = jax.value_and_grad(
        lambda p: digits_loss(vmapped(layer, p, xs, lengths)[0], lengths, labels))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return step


def train_raw(layer, params, data, tx):
  state = tx.init(params)
  step = raw_step(layer, tx)
  losses = []
  for xs, lengths, labels in data:
    params, state, loss = step(params, state, xs, lengths, labels)
    losses.append(float(loss))
  return np.array(losses), params


def train_linen(layer, data, tx):
  module = jaxrnn.flax.RNN(layer)
  variables = jax.jit(module.init)(jax.random.key(0), data[0][0])
  params = variables["params"]
  initial = params["layer"]
  state = tx.init(params)

  @jax.jit
  def step(params, state, xs, lengths, labels):
    def loss_fn(params):
      ys = module.apply({"params": params}, xs, seq_lengths=lengths)
      return digits_loss(ys, lengths, labels)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for xs, lengths, labels in data:
    params, state, loss = step(params, state, xs, lengths, labels)
    losses.append(float(loss))
  return initial, np.array(losses), params["layer"]


def train_nnx(layer, data, tx):
  model = jaxrnn.nnx.RNN(layer, 8, rngs=nnx.Rngs(0))
  initial = model.layer_params()
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, xs, lengths, labels):
    loss_fn = lambda m: digits_loss(m(xs, seq_lengths=lengths), lengths, labels)  # noqa: E731
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer, *batch)) for batch in data]
  return initial, np.array(losses), model.layer_params()


def train_equinox(layer, data, tx):
  model = jaxrnn.equinox.RNN(layer, 8, key=jax.random.key(0))
  initial = model.params
  state = tx.init(eqx.filter(model, eqx.is_inexact_array))

  @eqx.filter_jit
  def step(model, state, xs, lengths, labels):
    def loss_fn(model):
      ys, _ = jax.vmap(model)(xs, length=lengths)
      return digits_loss(ys, lengths, labels)
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
    updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), state, loss

  losses = []
  for xs, lengths, labels in data:
    model, state, loss = step(model, state, xs, lengths, labels)
    losses.append(float(loss))
  return initial, np.array(losses), model.params


@pytest.mark.parametrize("train", [train_linen, train_nnx, train_equinox],
                         ids=["linen", "nnx", "equinox"])
def test_training_follows_the_raw_loop_step_for_step(train):
  data, layer, tx = digits_batches(), DIGITS_LAYER, TX
  initial, losses, trained = train(layer, data, tx)
  raw_losses, raw_trained = train_raw(layer, initial, data, tx)
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.8 * losses[0], losses  # it learns
  np.testing.assert_allclose(losses, raw_losses, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(trained, raw_trained, rtol=1e-4, atol=1e-5)
  assert not np.allclose(jax.tree_util.tree_leaves(trained)[0],
                         jax.tree_util.tree_leaves(initial)[0])


# ---------------------------------------------------------------------------
# Framework conventions: layout, return values, dropout, errors.

DROPPY = lambda: jaxrnn.rnn(jaxrnn.lstm(4), recurrent_dropout=0.5, zoneout=0.3,  # noqa: E731
                            unroll=1)


def test_linen_layout_and_return_values():
  layer = LAYERS["stack"]
  module = jaxrnn.flax.RNN(layer, time_major=True)
  xs, lengths = batch(seed=6), jnp.asarray(LENGTHS)
  variables = jax.jit(module.init)(jax.random.key(0), jnp.swapaxes(xs, 0, 1))
  assert set(variables) == {"params"} and set(variables["params"]) == {"layer"}
  ys, carry = reference("stack")[0](variables["params"]["layer"], xs, lengths, None)

  @jax.jit
  def outputs(variables, xs, lengths):
    # time_major as an attribute; return_carry as a call argument and as an
    # attribute: (carry, ys) as flax.linen.RNN.
    return (module.apply(variables, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths),
            module.apply(variables, xs, seq_lengths=lengths, time_major=False,
                         return_carry=True),
            jaxrnn.flax.RNN(layer, return_carry=True).apply(variables, xs, seq_lengths=lengths))

  ys_tm, by_argument, by_attribute = outputs(variables, xs, lengths)
  chex.assert_shape(ys_tm, (T, B, 2))
  chex.assert_trees_all_equal(jnp.swapaxes(ys_tm, 0, 1), ys)
  chex.assert_trees_all_equal(by_argument, (carry, ys))
  chex.assert_trees_all_equal(by_attribute, (carry, ys))


def test_linen_inside_a_linen_model():
  import flax.linen as nn

  class Classifier(nn.Module):
    @nn.compact
    def __call__(self, xs, lengths):
      ys = jaxrnn.flax.RNN(jaxrnn.rnn(jaxrnn.gru(8)), name="rnn")(xs, seq_lengths=lengths)
      return nn.Dense(3)(jax.vmap(jaxrnn.last_step)(ys, lengths))

  xs, lengths = batch(seed=7), jnp.asarray(LENGTHS)
  logits, variables = jax.jit(Classifier().init_with_output)(jax.random.key(0), xs, lengths)
  assert type(variables["params"]["rnn"]["layer"]).__name__ == "GRUParams"
  chex.assert_shape(logits, (B, 3))
  chex.assert_tree_all_finite(logits)


def droppy_reference(layer):
  """Jitted ``(off, on)``: the layer without dropout, and with ``keys``."""
  return jax.jit(lambda p, xs, keys: (vmapped(layer, p, xs)[0],
                                      vmapped(layer, p, xs, key=keys)[0]))


def test_linen_dropout_draws_one_key_per_sequence(monkeypatch):
  layer = DROPPY()
  module = jaxrnn.flax.RNN(layer)
  same = jnp.broadcast_to(batch(seed=8, lengths=[T])[0], (B, T, D))
  variables = jax.jit(module.init)(jax.random.key(0), same)
  params = variables["params"]["layer"]
  ref_off, ref_on = droppy_reference(layer)(params, same,
                                            jax.random.split(jax.random.key(2), B))
  apply = jax.jit(module.apply, static_argnames="deterministic")
  off = apply(variables, same)
  chex.assert_trees_all_equal(off, ref_off)
  rngs = {"dropout": jax.random.key(1)}
  on = apply(variables, same, deterministic=False, rngs=rngs)
  chex.assert_trees_all_equal(on, apply(variables, same, deterministic=False, rngs=rngs))
  assert not np.allclose(on, off)
  assert not np.allclose(on[0], on[1])  # one key per sequence
  with pytest.raises(Exception, match="dropout"):
    module.apply(variables, same, deterministic=False)  # no "dropout" RNG given
  # Exactly layer.apply with the stream's key split over the batch.
  asked = []

  def make_rng(self, name):
    asked.append(name)
    return jax.random.key(2)

  monkeypatch.setattr(jaxrnn.flax.RNN, "make_rng", make_rng)
  on = jax.jit(lambda v, x: module.apply(v, x, deterministic=False))(variables, same)
  assert asked == ["dropout"]
  chex.assert_trees_all_equal(on, ref_on)


def test_nnx_params_train_eval_view_and_rngs():
  layer = DROPPY()
  model = jaxrnn.nnx.RNN(layer, D, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  assert len(jax.tree_util.tree_leaves(params)) == len(jax.tree_util.tree_leaves(
      model.layer_params()))
  assert model.params.W_x.shape == (D, 16) and isinstance(model.params.W_x, nnx.Param)
  xs = jnp.broadcast_to(batch(seed=9, lengths=[T])[0], (B, T, D))
  ref_off, ref_on = droppy_reference(layer)(model.layer_params(), xs,
                                            jax.random.split(jax.random.key(3), B))
  off = model(xs)
  chex.assert_trees_all_close(off, ref_off, **TOL)
  # A given key: exactly layer.apply with it split over the batch.
  on = model(xs, deterministic=False, rngs=jax.random.key(3))
  chex.assert_trees_all_close(on, ref_on, **TOL)
  assert not np.allclose(on[0], on[1])
  # model.train() draws from the module's stream, a new key each call.
  model.train()
  first, second = model(xs), nnx.jit(lambda m, x: m(x))(model, xs)
  assert not np.allclose(first, off) and not np.allclose(first, second)
  model.eval()
  chex.assert_trees_all_equal(model(xs), off)
  training = nnx.view(model, deterministic=False)
  assert not np.allclose(training(xs), off)


def test_nnx_time_major():
  layer = LAYERS["rnn"]
  model = jaxrnn.nnx.RNN(layer, D, time_major=True, rngs=nnx.Rngs(0))
  xs, lengths = batch(seed=10), jnp.asarray(LENGTHS)
  ys = nnx.jit(lambda m, x, n: m(x, seq_lengths=n))(model, jnp.swapaxes(xs, 0, 1), lengths)
  chex.assert_shape(ys, (T, B, 4))
  chex.assert_trees_all_equal(jnp.swapaxes(ys, 0, 1),
                              reference("rnn")[0](model.layer_params(), xs, lengths, None)[0])


def test_equinox_fields_key_and_inference():
  layer = DROPPY()
  model = jaxrnn.equinox.RNN(layer, D, key=jax.random.key(0))
  # Only the params (and the inference flag) are leaves; the layer is static.
  assert not any(callable(leaf) for leaf in jax.tree_util.tree_leaves(model))
  chex.assert_trees_all_equal(
      eqx.filter(model, eqx.is_array).params, model.params)
  assert len(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))) == len(
      jax.tree_util.tree_leaves(model.params))
  xs = batch(seed=11, lengths=[T])[0]
  key = jax.random.key(4)
  chex.assert_trees_all_equal(model(xs, length=4, key=key),
                              layer.apply(model.params, xs, length=4, key=key))
  off = model(xs, length=4)
  assert not np.allclose(model(xs, length=4, key=key)[0], off[0])
  chex.assert_trees_all_equal(model(xs, length=4, key=key, inference=True), off)
  chex.assert_trees_all_equal(eqx.nn.inference_mode(model)(xs, length=4, key=key), off)


def test_param_dtypes():
  layer = jaxrnn.rnn(jaxrnn.gru(3))
  linen = jaxrnn.flax.RNN(layer, param_dtype=jnp.bfloat16).init(
      jax.random.key(0), jnp.ones((2, 4, D), jnp.bfloat16))["params"]["layer"]
  on_nnx = jaxrnn.nnx.RNN(layer, D, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)).layer_params()
  on_eqx = jaxrnn.equinox.RNN(layer, D, key=jax.random.key(0), dtype=jnp.bfloat16).params
  for params in (linen, on_nnx, on_eqx):
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("make, error, match", [
    (lambda: jaxrnn.flax.RNN(jaxrnn.lstm(3)).init(jax.random.key(0), jnp.ones((1, 2, 2))),
     TypeError, r"^layer: expected a jaxrnn.Layer, got a jaxrnn.Cell; wrap it as jaxrnn.rnn"),
    (lambda: jaxrnn.nnx.RNN("lstm", 2, rngs=nnx.Rngs(0)),
     TypeError, r"^layer: expected a jaxrnn.Layer .*got str"),
    (lambda: jaxrnn.equinox.RNN(jaxrnn.gru(3), 2, key=jax.random.key(0)),
     TypeError, r"^layer: expected a jaxrnn.Layer, got a jaxrnn.Cell"),
    (lambda: jaxrnn.nnx.RNN(jaxrnn.rnn(jaxrnn.gru(3)), 2, rngs=0),
     TypeError, r"^rngs: expected an nnx.Rngs, got int"),
    (lambda: jaxrnn.nnx.RNN(jaxrnn.rnn(jaxrnn.gru(3)), 2, rngs=nnx.Rngs(0))(jnp.ones((4, 2))),
     ValueError, r"^xs: jaxrnn.nnx.RNN expects a batch of shape \(B, T, features\), got "
     r"shape \(4, 2\)"),
    (lambda: jaxrnn.nnx.RNN(jaxrnn.rnn(jaxrnn.gru(3)), 2, rngs=nnx.Rngs(0))(
        jnp.ones((4, 5, 2)), seq_lengths=jnp.ones((5,), jnp.int32)),
     ValueError, r"^seq_lengths: jaxrnn.nnx.RNN expects shape \(B,\) = \(4,\), got shape \(5,\)"),
    (lambda: jaxrnn.flax.RNN(jaxrnn.rnn(jaxrnn.gru(3))).init(
        jax.random.key(0), jnp.ones((4, 5, 2)), return_carry=1),
     TypeError, r"^return_carry: expected a bool, got int 1"),
])
def test_errors_name_the_argument(make, error, match):
  with pytest.raises(error, match=match):
    make()


# ---------------------------------------------------------------------------
# Lazy imports and the extras.


def run_python(code):
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_import_jaxrnn_loads_no_framework_and_a_missing_one_names_the_extra():
  out = run_python("""
      import sys
      import jaxrnn
      print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "equinox")))
      sys.modules["flax"] = None      # as if Flax and Equinox were not installed
      sys.modules["equinox"] = None
      for name in ("flax", "nnx", "equinox"):
        try:
          getattr(jaxrnn, name)
        except ImportError as err:
          print(name, "->", err)
        else:
          print(name, "-> imported")
      try:
        import jaxrnn.flax
      except ImportError as err:
        print("import jaxrnn.flax ->", err)
  """)
  lines = out.splitlines()
  assert lines[0] == "loaded: []"
  assert lines[1].startswith("flax -> jaxrnn.flax needs flax, which is not installed: "
                             "pip install 'jaxrnn[flax]'")
  assert lines[2].startswith("nnx -> jaxrnn.nnx needs flax, which is not installed: "
                             "pip install 'jaxrnn[flax]'")
  assert lines[3].startswith("equinox -> jaxrnn.equinox needs equinox, which is not "
                             "installed: pip install 'jaxrnn[equinox]'")
  assert "pip install 'jaxrnn[flax]'" in lines[4]


def test_each_adapter_loads_on_first_use_only():
  out = run_python("""
      import sys
      import jaxrnn
      print(jaxrnn.equinox.RNN.__module__, "flax" in sys.modules)
      from jaxrnn import flax as adapter
      print(adapter.RNN.__module__, jaxrnn.nnx.RNN.__module__, "flax" in sys.modules)
      try:
        jaxrnn.no_such_name
      except AttributeError as err:
        print(err)
  """)
  assert out.splitlines() == [
      "jaxrnn._src.adapters.equinox False",
      "jaxrnn._src.adapters.linen jaxrnn._src.adapters.nnx True",
      "module 'jaxrnn' has no attribute 'no_such_name'",
  ]

