"""Every JAX transformation on the default layers, against plain autodiff.

The default path of the built-in cells is the fused engine (a custom JVP);
``method="reference"`` is the masked scan differentiated by JAX. In float64
the value and every transformation of the first must agree with the second
to 1e-8: grad, value_and_grad, vjp, jvp, jacfwd, jacrev, hessian,
Hessian-vector products, grad of grad, vmap of grad (per-example
gradients), the Hessian and grad of grad of one example (unbatched and under
vmap), grad of grad over examples run one at a time in ``jax.lax.map``, grad
of vmap, vmap over params (ensembles), jit, jax.checkpoint and sharded jit;
with and without lengths (0 and T included, NaN in the padding); under the
CPU's and the GPU's engine settings, with the narrow inference form off for
this batch, and with ``remat``.

Compilation is what this file costs, so the cases are chosen, not
multiplied out (the reasons are at `CASES`), and the plain side of each
(layer, lengths) pair is compiled once per process (`_plain`) and compared
with every configuration of the fast side.
"""

import functools
import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxrnn
import reference as ref

B, T, D, H = 3, 5, 2, 3
LENGTHS = np.array([T, 2, 0])
tree_leaves = jax.tree_util.tree_leaves
tree_map = jax.tree_util.tree_map



def _sharing(key, *values):
  """``pytest.param(*values)`` on the xdist worker of the other cases that
  share the compiled reference program ``key`` (``--dist loadgroup``)."""
  return pytest.param(*values, marks=pytest.mark.xdist_group(f"transformations-{key}"))

LAYERS = {
    "lstm": lambda **o: jaxrnn.rnn(jaxrnn.lstm(H), **o),
    "gru": lambda **o: jaxrnn.rnn(jaxrnn.gru(H), **o),
    "elman": lambda **o: jaxrnn.rnn(jaxrnn.elman(H), **o),
    "elman_relu_reverse": lambda **o: jaxrnn.rnn(jaxrnn.elman(H, activation="relu"),
                                                 reverse=True, **o),
    "bidirectional": lambda **o: jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), **o),
    "stack": lambda **o: jaxrnn.stack(
        jaxrnn.rnn(jaxrnn.gru(H), **o),
        jaxrnn.bidirectional(jaxrnn.elman(H), jaxrnn.lstm(H), **o),
        jaxrnn.readout(2)),
    # The linear family (an RG-LRU is as wide as its input).
    "rg_lru": lambda **o: jaxrnn.rnn(jaxrnn.rg_lru(D), **o),
    "mamba_reverse": lambda **o: jaxrnn.rnn(jaxrnn.mamba(D, d_state=2, d_conv=3), reverse=True,
                                            **o),
    "slstm": lambda **o: jaxrnn.rnn(jaxrnn.slstm(H, num_heads=3), **o),
    "mlstm": lambda **o: jaxrnn.rnn(jaxrnn.mlstm(H), **o),
}

# (engine settings, layer options) of each configuration.
CONFIGS = {
    "defaults": ({}, {}),
    "gpu-table": (dict(unroll=(4, 4), hoist_inputs=True, in_place=False, narrow_max_batch=0),
                  {}),
    "unroll-1": (dict(unroll=(1, 1), hoist_inputs=False, in_place=True, narrow_max_batch=0), {}),
    "narrow-up-to-1": (dict(narrow_max_batch=1), {}),
    "remat": ({}, dict(remat=2)),  # chunks under jax.checkpoint inside a scan
    # method="auto" crossing to the associative scan, differentiated as the
    # multiply-add scan (a custom JVP).
    "parallel-forward": (dict(parallel_min_steps=1, parallel_derivatives=False), {}),
    "chunkwise": ({}, dict(method="parallel")),
}


def _data(layer, with_length):
  params = ref.random_params(layer, 0, D, jnp.float64)
  xs = np.asarray(ref.random_xs(1, (B, T, D), np.float64))
  lengths = None
  if with_length:
    lengths = jnp.asarray(LENGTHS)
    xs = xs.copy()
    for b, n in enumerate(LENGTHS):
      xs[b, n:] = np.nan  # junk in the padding
  return params, jnp.asarray(xs), lengths


def _loss(layer, lengths):
  """A scalar of a minibatch's outputs and final carries."""

  def one(params, x, n):
    ys, carry = layer.apply(params, x, length=n)
    weights = jnp.cos(1.0 + jnp.arange(ys.size)).reshape(ys.shape)
    return jnp.sum(jnp.sin(ys) * weights) + sum(
        jnp.sum(jnp.tanh(c)) for c in tree_leaves(carry))

  def loss(params, xs):
    if lengths is None:
      return jnp.sum(jax.vmap(lambda x: one(params, x, None))(xs))
    return jnp.sum(jax.vmap(lambda x, n: one(params, x, n))(xs, lengths))

  return loss, one


def _first_matrix(params):
  """The first recurrent matrix in ``params`` (a small block of it)."""
  leaf = next(p for p in tree_leaves(params) if p.ndim == 2 and p.shape[0] == H)
  return leaf[:, :2]


def _with_first_matrix(params, block):
  done = []

  def swap(p):
    if not done and p.ndim == 2 and p.shape[0] == H:
      done.append(True)
      return p.at[:, :2].set(block)
    return p

  return tree_map(swap, params)


def _transforms(params, xs, lengths):
  tangent = tree_map(jnp.cos, params)
  mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
  sharded = NamedSharding(mesh, PartitionSpec("batch"))
  ensemble = tree_map(lambda p: jnp.stack([p, 0.5 * p]), params)
  n = LENGTHS if lengths is not None else np.full(B, T)

  def per_example(f):  # f(params, x, length), over the batch
    return jax.vmap(f, in_axes=(None, 0, 0))(params, xs, jnp.asarray(n))

  def grad_of_grad(f):  # the gradient of |grad f|^2, both w.r.t. f's params
    return jax.grad(lambda p, *args: jnp.sum(jnp.square(
        jax.flatten_util.ravel_pytree(jax.grad(f)(p, *args))[0])))

  def under_map(one):  # examples one at a time in a lax.map (a scan): no vmap
    if lengths is None:
      return lambda p: jnp.sum(jax.lax.map(lambda x: one(p, x, None), xs))
    return lambda p: jnp.sum(jax.lax.map(lambda a: one(p, *a), (xs, lengths)))

  return {
      "value": lambda L, one: L(params, xs),  # nothing differentiated
      "grad": lambda L, one: jax.grad(L)(params, xs),
      "value_and_grad": lambda L, one: jax.value_and_grad(L, argnums=(0, 1))(params, xs),
      "vjp": lambda L, one: jax.vjp(L, params, xs)[1](jnp.asarray(1.5)),
      "jvp": lambda L, one: jax.jvp(L, (params, xs), (tangent, jnp.sin(xs))),
      "jacfwd_xs": lambda L, one: jax.jacfwd(L, argnums=1)(params, xs),
      "jacrev_xs": lambda L, one: jax.jacrev(L, argnums=1)(params, xs),
      "hessian_xs": lambda L, one: jax.hessian(L, argnums=1)(params, xs),
      "hessian_W_h": lambda L, one: jax.hessian(
          lambda v: L(_with_first_matrix(params, v), xs))(_first_matrix(params)),
      "hvp": lambda L, one: jax.jvp(jax.grad(lambda p: L(p, xs)), (params,), (tangent,))[1],
      "grad_of_grad": lambda L, one: grad_of_grad(L)(params, xs),
      "vmap_of_grad": lambda L, one: per_example(jax.grad(one)),
      # Second order per example: no vmap between the layer and autodiff.
      "hessian_of_one_example": lambda L, one: jax.hessian(one, argnums=1)(
          params, xs[0], None if lengths is None else lengths[0]),
      "vmap_of_grad_of_grad": lambda L, one: per_example(grad_of_grad(one)),
      "grad_of_grad_under_map": lambda L, one: grad_of_grad(under_map(one))(params),
      "vmap_over_params": lambda L, one: jax.vmap(jax.grad(L), in_axes=(0, None))(ensemble, xs),
      "jit": lambda L, one: jax.jit(jax.value_and_grad(L))(params, xs),
      "checkpoint": lambda L, one: jax.grad(jax.checkpoint(L))(params, xs),
      "sharded_jit": lambda L, one: jax.jit(
          jax.grad(L, argnums=1), in_shardings=(None, sharded))(params, xs),
  }


EVERY = ("value", "grad", "value_and_grad", "vjp", "jvp", "jacfwd_xs", "jacrev_xs",
         "hessian_xs", "hessian_W_h", "hvp", "grad_of_grad", "vmap_of_grad",
         "hessian_of_one_example", "vmap_of_grad_of_grad", "grad_of_grad_under_map",
         "vmap_over_params", "jit", "checkpoint", "sharded_jit")
# What each configuration changes, and the transformations that reach it:
# the loop forms and unrolls change the forward loop (the value, and the
# forward scan of the JVP rule), the tangent scan and its transpose (first
# and second order, forward and reverse); the narrow form is the inference
# loop alone (the value; and derivatives must still bypass it); remat puts
# the layer under jax.checkpoint inside a scan, where partial evaluation
# meets the custom JVP (second order of one example, and under lax.map).
LOOPS = ("value", "value_and_grad", "jvp", "hvp", "grad_of_grad", "vmap_of_grad",
         "checkpoint")
SECOND_ORDER = ("value", "value_and_grad", "jvp", "hvp", "grad_of_grad", "checkpoint",
                "hessian_of_one_example", "vmap_of_grad_of_grad", "grad_of_grad_under_map")
# Compiling a transformation costs in proportion to the layer's scans, and
# the engine runs every layer through the same custom JVP; so every
# transformation runs on each cell with a hand-written tangent (lstm with
# lengths, gru without, relu elman reversed with lengths; the tanh elman,
# whose tangent is the relu elman's with another activation, without
# lengths, the transformations of first and second order),
# and the layers built from them (bidirectional, stack: keys, merges,
# reversal of each direction, layer l feeding l + 1) run the transformations
# of first order and the Hessian-vector product. Each other configuration
# runs on the LSTM with lengths, with the transformations that reach what
# it changes, and the narrow form and remat once more on a layer of another
# shape (pairwise: every configuration meets every path it touches once).
# The GPU table's loop forms (stacked, hoisted) are the loop-form test's;
# here its unroll of 4 in both scans meets the value and the HVP (the
# forward scan, the tangent scan and its transpose).
FIRST_ORDER = ("value", "value_and_grad", "jvp", "vmap_of_grad", "hvp")
MODES = ("value", "value_and_grad", "jvp", "hvp")
# A path of plain JAX (no custom rule, no loop of its own for inference):
# reverse mode, its value included, and forward over reverse.
PLAIN_MODES = ("value_and_grad", "hvp")
CASES = (
    [("lstm", True, "defaults", EVERY),
     ("gru", False, "defaults", EVERY),
     ("elman", False, "defaults", tuple(sorted(set(FIRST_ORDER + SECOND_ORDER)))),
     ("elman_relu_reverse", True, "defaults", EVERY),
     ("bidirectional", True, "defaults", FIRST_ORDER),
     ("stack", True, "defaults", FIRST_ORDER),
     ("lstm", True, "gpu-table", ("value", "hvp")),
     ("lstm", True, "unroll-1", LOOPS),
     ("lstm", True, "narrow-up-to-1", ("value", "value_and_grad", "vmap_over_params",
                                       "vmap_of_grad")),
     ("stack", True, "narrow-up-to-1", ("value",)),
     ("lstm", True, "remat", SECOND_ORDER),
     ("elman", True, "remat", SECOND_ORDER),
     # The linear engine's custom JVP (the associative scan's primal, the
     # sequential scan's tangent) meets the transformations that reach a
     # custom rule: second order, jax.checkpoint, and vmap over params.
     ("rg_lru", True, "parallel-forward", SECOND_ORDER + ("vmap_over_params",)),
     # Each path of today's recurrences meets reverse mode and the
     # Hessian-vector product (their own tests run them under jit(vmap)):
     # the fused path (whose custom JVP meets every transformation above)
     # with the sLSTM's block-diagonal product and hand-written tangent, and
     # forward mode and the inference loop as well; the mLSTM's chunkwise
     # form and Mamba's causal window with the linear engine's checkpointed
     # multiply-add scan, reversed over the valid prefix (both plain JAX).
     ("slstm", True, "defaults", MODES),
     ("mlstm", True, "chunkwise", PLAIN_MODES),
     ("mamba_reverse", True, "defaults", PLAIN_MODES)])


def _all_of(layer, transforms, lengths, names):
  """The transformations ``names`` of ``layer``'s loss, in one compiled
  program (dispatching them eagerly costs more than compiling them
  together)."""
  loss, one = _loss(layer, lengths)
  return jax.jit(lambda: {n: transforms[n](loss, one) for n in names})()


# Transformations whose value is another's, so that the reference side
# computes it once: ``name: (source, how)``. The fast side computes every
# one of them itself, each compared with the reference's value.
_GRADS = lambda vg: vg[1]  # value_and_grad(argnums=(0, 1)) -> (grad params, grad xs)
SAME_VALUE = {
    "grad": ("value_and_grad", lambda vg: _GRADS(vg)[0]),
    "vjp": ("value_and_grad", lambda vg: tree_map(lambda g: 1.5 * g, _GRADS(vg))),
    "jacfwd_xs": ("value_and_grad", lambda vg: _GRADS(vg)[1]),
    "jacrev_xs": ("value_and_grad", lambda vg: _GRADS(vg)[1]),
    "sharded_jit": ("value_and_grad", lambda vg: _GRADS(vg)[1]),
    "jit": ("value_and_grad", lambda vg: (vg[0], _GRADS(vg)[0])),
    "checkpoint": ("value_and_grad", lambda vg: _GRADS(vg)[0]),
    "grad_of_grad_under_map": ("grad_of_grad", lambda g: g),
}


@functools.lru_cache(maxsize=None)
def _plain(name, with_length):
  """The reference path's transformations that some case of (``name``,
  ``with_length``) needs, compiled once per process (called with float64
  on): those of `SAME_VALUE` taken from their source."""
  plain = LAYERS[name](method="reference")
  params, xs, lengths = _data(plain, with_length)
  transforms = _transforms(params, xs, lengths)
  assert sorted(transforms) == sorted(EVERY)
  wanted = {t for n, w, _, ts in CASES if (n, w) == (name, with_length) for t in ts}
  sources = sorted({SAME_VALUE[t][0] if t in SAME_VALUE else t for t in wanted})
  computed = _all_of(plain, transforms, lengths, sources)
  return {t: SAME_VALUE[t][1](computed[SAME_VALUE[t][0]]) if t in SAME_VALUE else computed[t]
          for t in wanted}


@pytest.mark.parametrize(
    "name, with_length, config, names", [_sharing(f"{c[0]}-{c[1]}", *c) for c in CASES],
    ids=[f"{n}-{'lengths' if w else 'full'}-{c}" for n, w, c, _ in CASES])
def test_every_transformation_matches_plain_autodiff(x64, name, with_length, config, names):
  settings, options = CONFIGS[config]
  fast = LAYERS[name](**options)
  params, xs, lengths = _data(fast, with_length)
  with jaxrnn.engine_settings(**settings):
    got_all = _all_of(fast, _transforms(params, xs, lengths), lengths, names)
  want_all = _plain(name, with_length)
  for tname in names:
    got, want = tree_leaves(got_all[tname]), tree_leaves(want_all[tname])
    assert len(got) == len(want) and all(np.all(np.isfinite(g)) for g in got), tname
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-8, err_msg=f"{name} {tname}")


# Two options per program: each is independent of the other's code.
OPTIONS = {
    "dropout-zoneout-key-remat": dict(recurrent_dropout=0.3, zoneout=0.2, remat=2),
    "zoneout-expectation-learned-carry": dict(zoneout=jaxrnn.LSTMState(h=0.1, c=0.4),
                                              learned_carry=True),
}


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
def test_options_on_the_fused_path_match_the_reference(x64, option):
  """Resets, lengths, dropout and zoneout masks (per-example keys), remat and
  a learned carry: values, gradients and JVPs of the fused path agree with
  the reference scan."""
  cell = jaxrnn.lstm(H)
  fast = jaxrnn.bidirectional(cell, cell, **OPTIONS[option])
  plain = jaxrnn.bidirectional(cell, cell, method="reference", **OPTIONS[option])
  params, xs, lengths = _data(fast, True)
  reset = jnp.asarray(np.array([[1, 0, 1, 0, 0], [0, 0, 1, 0, 1], [0, 1, 0, 0, 0]], bool))
  keys = jax.random.split(jax.random.key(3), B)
  use_key = option == "dropout-zoneout-key-remat"

  def loss(layer):
    def f(params, xs):
      def one(x, n, r, k):
        ys, carry = layer.apply(params, x, length=n, reset=r, key=k if use_key else None)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c) for c in tree_leaves(carry))
      return jnp.sum(jax.vmap(one)(xs, lengths, reset, keys))
    return f

  tangent = tree_map(jnp.cos, params)
  results = []
  for layer in (fast, plain):
    f = loss(layer)
    results.append(jax.jit(lambda p, x: (f(p, x), jax.grad(f)(p, x),
                                         jax.jvp(f, (p, x), (tangent, jnp.cos(x)))[1]))(
                                             params, xs))
  for got, want in zip(tree_leaves(results[0]), tree_leaves(results[1])):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


# T = 5 steps: the in-place inference loop runs blocks of up to
# ``unroll[0]`` steps that divide T, here one block of five, or blocks of one
# step, three or one per iteration. With ``narrow_max_batch=1`` unbatched
# calls and batches of one run the narrow form, batches of three in place.
WIDE = dict(narrow_max_batch=0)
FORMS = {"stacked": dict(in_place=False, hoist_inputs=True, **WIDE),
         "in-place-unroll-1": dict(in_place=True, hoist_inputs=False, unroll=(1, 1), **WIDE),
         "in-place": dict(in_place=True, hoist_inputs=False, unroll=(5, 1), **WIDE),
         "in-place-hoisted": dict(in_place=True, hoist_inputs=True, unroll=(3, 2), **WIDE),
         "narrow-up-to-1": dict(in_place=True, hoist_inputs=False, unroll=(4, 1),
                                narrow_max_batch=1),
         "stacked-narrow-up-to-1": dict(in_place=False, narrow_max_batch=1)}
FORM_CELLS = {
    "lstm": lambda: jaxrnn.lstm(H),
    "lstm-peephole-ln": lambda: jaxrnn.lstm(H, peephole=True, layer_norm=True),
    "gru": lambda: jaxrnn.gru(H),
    "elman-relu": lambda: jaxrnn.elman(H, activation="relu"),
}


def _form_outputs(layer):
  """Values unbatched, at batches of one and three and under vmap over
  params, and gradients through ``jax.checkpoint``, in one program."""
  params, xs, lengths = _data(layer, True)
  reset = jnp.asarray(np.array([[0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 1, 0]], bool))
  ensemble = tree_map(lambda a: jnp.stack([a, 0.5 * a]), params)
  one = lambda p, x, n, r: layer.apply(p, x, length=n, reset=r)
  batch = lambda p, x, n, r: jax.vmap(one, in_axes=(None, 0, 0, 0))(p, x, n, r)
  # Weights per step and unit: a batch axis out of place would not
  # broadcast against them (a plain sum would not notice).
  weights = jnp.cos(1.0 + jnp.arange(T * H)).reshape(T, H)
  loss = lambda p: jnp.sum(jax.vmap(
      lambda x, n, r: jnp.sin(one(p, x, n, r)[0]) * weights)(xs, lengths, reset))
  full = jnp.nan_to_num(xs)
  loss_full = lambda p: jnp.sum(jax.vmap(
      lambda x: jnp.sin(layer.apply(p, x)[0]) * weights)(full))
  return jax.jit(lambda: dict(
      unbatched=one(params, xs[0], lengths[0], reset[0]),
      batch1=batch(params, xs[:1], lengths[:1], reset[:1]),
      batch3=batch(params, xs, lengths, reset),
      ensemble=jax.vmap(batch, in_axes=(0, None, None, None))(
          ensemble, xs, lengths, reset),
      checkpoint_grad=jax.grad(jax.checkpoint(loss))(params),
      checkpoint_grad_full=jax.grad(jax.checkpoint(loss_full))(params)))()


@functools.lru_cache(maxsize=None)
def _plain_form_outputs(cell_name, reverse):
  return _form_outputs(jaxrnn.rnn(FORM_CELLS[cell_name](), reverse=reverse,
                                  method="reference"))


# Every form meets the lstm, the gru and the relu elman (they differ in
# what the loops read: hand-written tangents, one summed pre-activation or
# two, hoisting in the narrow form); the LSTM with peepholes and layer norm
# (a tangent by jax.jvp of its step, and a carry the output gate reads)
# meets one stacked and one in-place form, the costliest cell to compile
# adding nothing that the loops read differently in the other four. Each
# form and each cell runs both directions.
PEEPHOLE_LN_FORMS = ("stacked", "in-place-unroll-1")
FORM_CASES = [(form, cell_name, (i + j) % 2 == 1)
              for i, form in enumerate(FORMS) for j, cell_name in enumerate(FORM_CELLS)
              if cell_name != "lstm-peephole-ln" or form in PEEPHOLE_LN_FORMS]


@pytest.mark.parametrize("form, cell_name, reverse",
                         [_sharing(f"{c[1]}-{c[2]}", *c) for c in FORM_CASES],
                         ids=[f"{f}-{c}-{'reverse' if r else 'forward'}"
                              for f, c, r in FORM_CASES])
def test_both_forms_of_the_forward_loop_match_the_reference(x64, form, cell_name, reverse):
  """The forward loop stacks its outputs or writes them in place
  (``in_place``), and narrow batches may run a form of their own
  (``narrow_max_batch``); either way the values agree with the reference
  scan unbatched, at batches of one and three and under vmap over params,
  with lengths and resets, and so do the gradients of a loss taken through
  ``jax.checkpoint`` (where the outputs' batch axis under vmap comes from
  the primal of the fused path's custom JVP and must match its rule's)."""
  with jaxrnn.engine_settings(**FORMS[form]):
    got = _form_outputs(jaxrnn.rnn(FORM_CELLS[cell_name](), reverse=reverse))
  want = _plain_form_outputs(cell_name, reverse)
  for key in want:
    for g, w in zip(tree_leaves(got[key]), tree_leaves(want[key])):
      np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12,
                                 err_msg=f"{form} {key} reverse={reverse}")


@pytest.mark.parametrize("form", FORMS)
def test_an_empty_sequence_in_either_form(form):
  """T = 0: no outputs, and the carry comes back as it went in."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = layer.init_params(jax.random.key(0), D)
  carry = jaxrnn.LSTMState(h=jnp.arange(H, dtype=jnp.float32), c=jnp.ones(H))
  with jaxrnn.engine_settings(**FORMS[form]):
    ys, out = jax.jit(lambda: layer.apply(params, jnp.zeros((0, D)), carry=carry))()
    batched, _ = jax.jit(jax.vmap(lambda x: layer.apply(params, x)))(jnp.zeros((2, 0, D)))
  assert ys.shape == (0, H) and batched.shape == (2, 0, H)
  np.testing.assert_array_equal(out.h, carry.h)
  np.testing.assert_array_equal(out.c, carry.c)


@pytest.mark.parametrize("read_in_place", [False, True])
def test_the_in_place_loop_matches_a_python_loop(x64, read_in_place):
  """`inference.scan` (outputs written by index; with ``read_in_place`` inputs
  read by index, in blocks of up to ``unroll`` steps that divide T) against
  a Python loop over the same step, in both directions, unbatched and under
  vmap, for T with and without divisors up to ``unroll``."""
  from jaxrnn._src.engine import inference

  def body(c, x):
    new = jnp.tanh(c * 0.9 + x[0] - x[1])
    return new, (new * x[1], jnp.stack([c, x[0]]))

  def python_loop(carry, xs, reverse):
    ys, auxs = [None] * len(xs), [None] * len(xs)
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
      carry, (ys[t], auxs[t]) = body(carry, xs[t])
    return carry, (jnp.stack(ys), jnp.stack(auxs))

  rng = np.random.default_rng(0)
  for num_steps, unroll, reverse in itertools.product((6, 7), (1, 3, 4), (False, True)):
    xs = jnp.asarray(rng.standard_normal((2, num_steps, 2)))
    carry = jnp.asarray([0.3, -0.2])
    scan = lambda c, x: inference.scan(body, c, x, reverse=reverse, unroll=unroll,
                                       read_in_place=read_in_place)
    got, one = jax.jit(lambda c, x: (jax.vmap(scan)(c, x), scan(c[0], x[0])))(carry, xs)
    want = [python_loop(carry[b], xs[b], reverse) for b in range(2)]
    for g, w, o in zip(tree_leaves(got), tree_leaves(tree_map(lambda *a: jnp.stack(a), *want)),
                       tree_leaves(one)):
      np.testing.assert_allclose(g, w, rtol=1e-14, atol=1e-14,
                                 err_msg=f"T={num_steps} unroll={unroll} reverse={reverse}")
      np.testing.assert_allclose(o, w[0], rtol=1e-14, atol=1e-14)
