"""The batched fused path under vmap: every composition of vmap and grad
against plain autodiff (``fused_vjp=False``), in float64, with per-example
lengths (0 and T included), per-example initial carries and junk padding;
the feature-major layout is really used; higher orders raise clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import D, H, T

tree_leaves = jax.tree_util.tree_leaves
tree_map = jax.tree_util.tree_map

B = 5  # not H, so that (H, B) and (B, H) carries differ
LENGTHS = np.array([T, 3, 0, 1, 2])
FUSED = [c for c in ref.CASES if c.fused]


def _data(layer, seed):
  params = ref.random_params(layer, seed)
  xs = np.array(ref.random_xs(seed + 1, (B, T, D), np.float64))
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan  # junk in every example's padding
  carry = ref.random_like(
      jax.eval_shape(lambda: tree_map(lambda c: jnp.stack([c] * B), layer.init_carry())),
      seed + 2)
  return params, jnp.asarray(xs), carry


def _example_loss(layer):
  """A scalar of one example's outputs and final carry."""

  def loss(params, xs, carry, length):
    ys, out = layer.apply(params, xs, length=length, carry=carry)
    total = jnp.sum(jnp.sin(ys) * jnp.cos(1.0 + jnp.arange(ys.size)).reshape(ys.shape))
    return total + sum(jnp.sum(jnp.tanh(c)) for c in tree_leaves(out))

  return loss


def _layers(case, reverse):
  cell = case.make()
  return (jaxrnn.rnn(cell, reverse=reverse),
          jaxrnn.rnn(cell, reverse=reverse, fused_vjp=False, unroll=1))


@pytest.fixture(params=["batch-first", "feature-major", "gpu-tables"])
def settings(request, monkeypatch):
  """The batched path under both layouts of the backward scan's stacked
  cotangents (chosen by batch size; B = 5 is below CPU's threshold, so it
  is lowered here), and under the GPU's entries of every per-backend table
  (the input projection hoisted at B > 1, both scans unrolled), whichever
  backend runs the test."""
  from jaxrnn._src import fused_batch, scan
  backend = jax.default_backend()
  if request.param == "gpu-tables":
    for module, name in ((scan, "DEFAULT_UNROLL"), (scan, "DEFAULT_UNROLL_BATCHED"),
                         (fused_batch, "HOIST_MAX_BATCH"),
                         (fused_batch, "STACK_FEATURE_MAJOR_MIN_BATCH")):
      table = dict(getattr(module, name))
      table[backend] = table["cpu"] = table["gpu"]
      monkeypatch.setattr(module, name, table)
  else:
    threshold = 1 if request.param == "feature-major" else 10**9
    monkeypatch.setattr(fused_batch, "STACK_FEATURE_MAJOR_MIN_BATCH",
                        {backend: threshold, "cpu": threshold})
  return request.param


def _close(actual, expected, err_msg):
  ref.assert_tree_close(actual, expected, rtol=1e-10, atol=1e-10, err_msg=err_msg)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", FUSED, ids=[c.name for c in FUSED])
def test_grad_of_vmap_matches_plain(x64, settings, case, reverse):
  fused, plain = _layers(case, reverse)
  params, xs, carry = _data(fused, 90)

  def batch_loss(layer):
    one = _example_loss(layer)
    return lambda p, x, c: jnp.sum(jax.vmap(one, (None, 0, 0, 0))(p, x, c, LENGTHS))

  want = jax.jit(jax.value_and_grad(batch_loss(plain), argnums=(0, 1, 2)))(params, xs, carry)
  got = jax.jit(jax.value_and_grad(batch_loss(fused), argnums=(0, 1, 2)))(params, xs, carry)
  _close(got, want, "grad(vmap)")
  # The padding's NaNs reach no gradient.
  for b, n in enumerate(LENGTHS):
    np.testing.assert_array_equal(got[1][1][b, n:], 0)


@pytest.mark.parametrize("case", FUSED, ids=[c.name for c in FUSED])
def test_vmap_of_grad_gives_each_example_its_own_gradient(x64, settings, case):
  """Per-example gradients (e.g. for DP-SGD) against a Python loop."""
  fused, plain = _layers(case, False)
  params, xs, carry = _data(fused, 91)
  grad_fused = jax.grad(_example_loss(fused), argnums=(0, 1, 2))
  grad_plain = jax.jit(jax.grad(_example_loss(plain), argnums=(0, 1, 2)))
  got = jax.jit(jax.vmap(grad_fused, (None, 0, 0, 0)))(params, xs, carry, LENGTHS)
  for b in range(B):
    want = grad_plain(params, xs[b], tree_map(lambda c: c[b], carry), LENGTHS[b])
    _close(tree_map(lambda g: g[b], got[0]), want[0], f"params, example {b}")
    _close(got[1][b], want[1], f"xs, example {b}")
    _close(tree_map(lambda g: g[b], got[2]), want[2], f"carry, example {b}")


@pytest.mark.parametrize("case", FUSED, ids=[c.name for c in FUSED])
def test_unbatched_grad_and_vmap_over_params(x64, case):
  fused, plain = _layers(case, True)
  params, xs, carry = _data(fused, 92)
  one_carry = tree_map(lambda c: c[0], carry)
  args = (params, xs[1], one_carry, LENGTHS[1])
  want = jax.grad(_example_loss(plain), argnums=(0, 1, 2))(*args)
  got = jax.jit(jax.grad(_example_loss(fused), argnums=(0, 1, 2)))(*args)
  _close(got, want, "grad of one example")
  # An ensemble: params batched too (the rule falls back to vmap of one).
  ensemble = tree_map(lambda p: jnp.stack([p * (1 + 0.1 * k) for k in range(B)]), params)

  def ensemble_loss(layer):
    one = _example_loss(layer)
    return lambda p, x, c: jnp.sum(jax.vmap(one)(p, x, c, LENGTHS))

  want = jax.grad(ensemble_loss(plain))(ensemble, xs, carry)
  got = jax.jit(jax.grad(ensemble_loss(fused)))(ensemble, xs, carry)
  _close(got, want, "vmap over params")


@pytest.mark.parametrize("case", FUSED, ids=[c.name for c in FUSED])
def test_nested_vmap_matches_plain(x64, settings, case):
  """A batch of batches ((2, B, T, D), e.g. several sequences per sample):
  the inner rule's batched scan is batched again by the outer vmap."""
  fused, plain = _layers(case, False)
  params, xs, carry = _data(fused, 96)
  xs = jnp.stack([xs, xs[::-1] * 0.5])
  carry = tree_map(lambda c: jnp.stack([c, -c]), carry)
  lengths = jnp.stack([LENGTHS, LENGTHS[::-1]])

  def loss(layer):
    one = _example_loss(layer)
    inner = jax.vmap(one, (None, 0, 0, 0))
    return lambda p, x, c: jnp.sum(jax.vmap(inner, (None, 0, 0, 0))(p, x, c, lengths))

  want = jax.jit(jax.value_and_grad(loss(plain), argnums=(0, 1, 2)))(params, xs, carry)
  got = jax.jit(jax.value_and_grad(loss(fused), argnums=(0, 1, 2)))(params, xs, carry)
  _close(got, want, "nested vmap")


def test_stack_and_bidirectional_under_vmap_match_plain(x64):
  def model(**options):
    return jaxrnn.stack(
        jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.gru(H), **options),
        jaxrnn.rnn(jaxrnn.elman(H), **options))

  fused, plain = model(), model(fused_vjp=False, unroll=1)
  params = ref.random_params(fused, 93)
  xs = ref.random_xs(94, (B, T, D), np.float64)

  def loss(layer):
    def f(p, x):
      ys = jax.vmap(lambda x, n: layer.apply(p, x, length=n)[0])(x, LENGTHS)
      return jnp.sum(jnp.sin(ys))
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

  _close(loss(fused)(params, xs), loss(plain)(params, xs), "stack")


def test_vmap_runs_feature_major():
  """Under vmap the scan carries (H, B): the batched rule is in use."""
  layer = jaxrnn.rnn(jaxrnn.lstm(H))
  params = jax.eval_shape(lambda k: layer.init_params(k, D), jax.random.key(0))
  xs = jax.ShapeDtypeStruct((B, T, D), jnp.float32)

  def loss(p, x):
    return jnp.sum(jax.vmap(lambda x: layer.apply(p, x)[0])(x))

  for fn in (loss, jax.grad(loss)):
    jaxpr = jax.make_jaxpr(fn)(params, xs)
    scans = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"]
    assert scans
    # A scan's outputs are its carries and its stacked (T, ...) outputs: a
    # two-dimensional (H, B) output can only be a carry.
    out_shapes = {tuple(v.aval.shape) for e in scans for v in e.outvars}
    assert (H, B) in out_shapes, out_shapes


def _equations(jaxpr):
  """Every equation of ``jaxpr`` and of the jaxprs nested in its params."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for value in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(value, "jaxpr", value)
        if hasattr(inner, "eqns"):
          yield from _equations(inner)


def test_higher_orders_raise_clear_errors_and_fused_vjp_false_supports_them(x64):
  fused, plain = _layers(ref.BY_NAME["lstm"], False)
  params, xs, carry = _data(fused, 95)
  args = (params, xs[0], tree_map(lambda c: c[0], carry), T)

  def grad_norm(layer):
    return lambda p, *a: sum(jnp.sum(g ** 2) for g in tree_leaves(
        jax.grad(_example_loss(layer))(p, *a)))

  with pytest.raises(TypeError, match="fused_vjp=False"):
    jax.grad(grad_norm(fused))(*args)
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda x: _example_loss(fused)(params, x, args[2], T), (args[1],), (args[1],))
  # fused_vjp=False: a gradient of a gradient against finite differences.
  g = jax.jit(jax.grad(grad_norm(plain)))(*args)
  v = ref.random_like(params, 96, scale=1.0)
  eps = 1e-6
  f = jax.jit(grad_norm(plain))
  fd = (f(tree_map(lambda p, d: p + eps * d, params, v), *args[1:])
        - f(tree_map(lambda p, d: p - eps * d, params, v), *args[1:])) / (2 * eps)
  analytic = sum(jnp.vdot(a, b) for a, b in zip(tree_leaves(g), tree_leaves(v)))
  np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6, atol=1e-8)
