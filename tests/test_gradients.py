"""Gradients: finite differences in float64, and every option (method,
remat, unroll) against the plain path, with lengths and junk padding;
forward mode and second derivatives against finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import CASES, D, H, T

tree_leaves = jax.tree_util.tree_leaves
tree_map = jax.tree_util.tree_map

# The plain path: autodiff through the reference scan, no remat, unroll 1.
PLAIN = dict(method="reference", unroll=1)


def _weights(shape, dtype):
  """Fixed, non-symmetric per-entry weights for a loss."""
  n = int(np.prod(shape))
  return jnp.cos(1.0 + jnp.arange(n, dtype=dtype)).reshape(shape)


def _loss_fn(layers):
  """A scalar loss of every layer's outputs AND final carry, summed."""

  def loss(params, xs, carry, length):
    total = 0.0
    for layer in layers:
      ys, out = layer.apply(params, xs, length=length, carry=carry)
      total = total + jnp.sum(jnp.sin(ys) * _weights(ys.shape, ys.dtype))
      for leaf in tree_leaves(out):
        total = total + jnp.sum(jnp.tanh(leaf) * _weights(leaf.shape, leaf.dtype))
    return total

  return loss


def _rnn_layers(cell, **options):
  return (jaxrnn.rnn(cell, **options), jaxrnn.rnn(cell, reverse=True, **options))


def _tree_dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(tree_leaves(a), tree_leaves(b)))


def _axpy(alpha, v, x):
  return tree_map(lambda vi, xi: xi + alpha * vi, v, x)


def _check_against_finite_differences(value_and_grad, args, length, seed):
  """Directional derivatives of ``value_and_grad(*args, length)`` (float64)
  against central differences; returns the gradients."""
  value, grads = value_and_grad(*args, length)
  for g in tree_leaves(grads):
    assert g.dtype == jnp.float64
    assert np.all(np.isfinite(g))
  assert any(np.any(g != 0) for g in tree_leaves(grads))
  eps = 1e-6
  for k in range(3):
    v = ref.random_like(args, seed + k, scale=1.0)
    plus, _ = value_and_grad(*_axpy(eps, v, args), length)
    minus, _ = value_and_grad(*_axpy(-eps, v, args), length)
    fd = (float(plus) - float(minus)) / (2 * eps)
    analytic = float(_tree_dot(grads, v))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-8,
                               err_msg=f"direction {k}")
  return grads


def _fd_data(layer, seed):
  params = ref.random_params(layer, seed)
  xs = np.array(ref.random_xs(seed + 1, dtype=np.float64))
  xs[3:] = 7.0  # junk in the padding of length 3
  carry = ref.random_like(layer.init_carry(), seed + 2)
  return params, jnp.asarray(xs), carry


def _check_modes(make_layers, modes, seed):
  """For every option set in ``modes``: gradients match finite differences,
  and outputs and gradients match those of the first mode to 1e-10."""
  first = None
  for name, options in modes.items():
    layers = make_layers(**options)
    loss = _loss_fn(layers)

    def with_outputs(params, xs, carry, length, layers=layers, loss=loss):
      outs = [layer.apply(params, xs, length=length, carry=carry) for layer in layers]
      return loss(params, xs, carry, length), outs

    value_and_grad = jax.jit(jax.value_and_grad(with_outputs, argnums=(0, 1, 2),
                                                has_aux=True))
    if first is None:
      args = _fd_data(layers[0], seed)
      for leaf in tree_leaves(args):
        assert leaf.dtype == jnp.float64
    results = {}
    for length in (3, T):
      def vg(*a, vg=value_and_grad):
        (value, _), grads = vg(*a)
        return value, grads
      grads = _check_against_finite_differences(vg, args, length, seed + 10)
      (_, outs), _ = value_and_grad(*args, length)
      results[length] = (outs, grads)
      for leaf in tree_leaves(outs):
        assert leaf.dtype == jnp.float64
      if length == 3:  # padded inputs get exactly zero gradient
        np.testing.assert_array_equal(grads[1][3:], 0)
    if first is None:
      first = results
    else:
      ref.assert_tree_close(results, first, rtol=1e-10, atol=1e-10, err_msg=name)


DEFAULT_U1 = dict(unroll=1)  # the default: the fused path where the cell has one
REMAT = dict(remat=True)
RNN_FD_MODES = {
    "elman_tanh": ("unfused", "default", "remat"),
    "lstm": ("unfused", "default", "remat"),
    "gru": ("unfused", "default", "remat"),
    "lstm_proj": ("unfused", "default"),  # with remat: the stack test
    "gru_before": ("unfused",),  # no fused path: its default is the reference
    "elman_relu": ("default",),
    "elman_callable": ("default",),
    "lstm_nobias": ("default",),
    "gru_nobias": ("default",),
}
MODE_OPTIONS = {"unfused": PLAIN, "default": DEFAULT_U1, "remat": REMAT,
                "remat2_unfused": dict(remat=2, method="reference")}
assert sorted(RNN_FD_MODES) == sorted(ref.CASE_IDS)


@pytest.mark.parametrize("case", CASES, ids=ref.CASE_IDS)
def test_rnn_gradients_match_finite_differences(x64, case):
  """fwd and reversed layers, from a random carry, length 3 (junk padding)
  and T; the default method, method="reference" and remat=True agree to
  1e-10."""
  cell = case.make()
  modes = {m: MODE_OPTIONS[m] for m in RNN_FD_MODES[case.name]}
  _check_modes(lambda **o: _rnn_layers(cell, **o), modes, 60)


def test_bidirectional_gradients_match_finite_differences(x64):
  _check_modes(lambda **o: [ref.bidirectional_layer("mul", **o)],
               {"default": DEFAULT_U1, "remat": REMAT}, 62)


def test_stack_gradients_match_finite_differences(x64):
  _check_modes(lambda **o: [ref.stack_layer(**o)],
               {"default": DEFAULT_U1, "remat2_unfused": MODE_OPTIONS["remat2_unfused"]}, 64)


# ---------------------------------------------------------------------------
# Options against the plain path (float32, true defaults included), on a
# vmapped minibatch with per-example lengths (0, 2, T) and NaN / huge junk in
# the padding.

OPTIONS = {"plain": PLAIN, "default": {},
           "remat3_unroll2_fused": dict(remat=3, unroll=2, fused_vjp=True)}
LENGTHS = np.array([0, 2, T], np.int32)


def _batch_data(layer, seed):
  batch = len(LENGTHS)
  params = ref.random_params(layer, seed)
  xs = np.array(ref.random_xs(seed + 1, (batch, T, D)))
  xs[1, 2:] = np.nan
  xs[0, :] = 1e30
  carry = ref.random_like(
      tree_map(lambda c: jnp.stack([c] * batch), layer.init_carry()), seed + 2)
  return params, jnp.asarray(xs), carry


def _batched_value_and_grad(layers):
  loss = _loss_fn(layers)

  def total(params, xs, carry, lengths):
    def one(x, c, n):
      outs = [layer.apply(params, x, length=n, carry=c) for layer in layers]
      return loss(params, x, c, n), outs
    values, outs = jax.vmap(one)(xs, carry, lengths)
    return jnp.sum(values), outs

  return jax.jit(jax.grad(total, argnums=(0, 1, 2), has_aux=True))


def _check_options_match_plain(make_layers, options, seed):
  results = {}
  for name, opts in options.items():
    layers = make_layers(**opts)
    if name == "plain":
      args = _batch_data(layers[0], seed)
    grads, outputs = _batched_value_and_grad(layers)(*args, LENGTHS)
    results[name] = outputs, grads
  outputs, grads = results["plain"]
  for leaf in tree_leaves((outputs, grads)):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(grads[1][0], 0)  # length 0: no gradient
  np.testing.assert_array_equal(grads[1][1, 2:], 0)  # NaN padding
  for name, (out, g) in results.items():
    ref.assert_tree_close(out, outputs, rtol=1e-5, atol=1e-6, err_msg=name)
    ref.assert_tree_close(g, grads, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(g[1][1, 2:], 0)


def test_rnn_options_match_plain_path():
  cell = jaxrnn.lstm(H)
  _check_options_match_plain(lambda **o: _rnn_layers(cell, **o), OPTIONS, 70)


def test_bidirectional_options_match_plain_path():
  """gru forward, lstm backward."""
  _check_options_match_plain(lambda **o: [ref.bidirectional_layer("concat", **o)],
                             {"plain": PLAIN, "default": {}}, 71)


# ---------------------------------------------------------------------------
# Forward mode and higher orders. The default path of the built-in cells is
# a custom JVP, so jax.jvp, Hessians and gradients of gradients work on it
# as on method="reference"; both are checked against finite differences.

JVP_MODES = [("lstm", "default"), ("gru", "default"), ("gru", "reference"),
             ("lstm", "default_reset")]


def _reset_layers(cell):
  """Both directions, restarting the carry at step 2."""
  reset = jnp.zeros(T, bool).at[2].set(True)
  return [layer._replace(apply=functools.partial(layer.apply, reset=reset))
          for layer in _rnn_layers(cell, remat=2)]


@pytest.mark.parametrize("name, mode", JVP_MODES, ids=[f"{n}-{m}" for n, m in JVP_MODES])
def test_jvp_matches_finite_differences(x64, name, mode):
  cell = ref.BY_NAME[name].make()
  if mode == "default_reset":
    loss = _loss_fn(_reset_layers(cell))
  else:
    loss = _loss_fn(_rnn_layers(cell, remat=2, method="auto" if mode == "default" else mode))
  args = _fd_data(jaxrnn.rnn(cell), 80)
  v = ref.random_like(args, 81, scale=1.0)
  jvp = jax.jit(lambda a, t: jax.jvp(lambda *a: loss(*a, 3), a, t))
  value, tangent = jvp(args, v)
  eps = 1e-6
  plus, _ = jvp(_axpy(eps, v, args), v)
  minus, _ = jvp(_axpy(-eps, v, args), v)
  np.testing.assert_allclose(float(tangent), (float(plus) - float(minus)) / (2 * eps),
                             rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["auto", "reference"])
def test_hessian_matches_finite_differences(x64, method):
  """Hessian w.r.t. the initial carry against central differences of the
  gradient, on the default path and on the reference path."""
  cell = jaxrnn.gru(H)
  params, xs, carry = _fd_data(jaxrnn.rnn(cell), 82)
  loss = _loss_fn([jaxrnn.rnn(cell, reverse=True, unroll=1, method=method)])
  of_carry = lambda c: loss(params, xs, c, 3)
  hess = np.asarray(jax.jit(jax.hessian(of_carry))(carry))
  assert hess.shape == (H, H)
  np.testing.assert_allclose(hess, hess.T, atol=1e-10)
  grad = jax.jit(jax.grad(of_carry))
  eps = 1e-5
  for i in range(H):
    e = jnp.zeros(H, jnp.float64).at[i].set(eps)
    column = (grad(carry + e) - grad(carry - e)) / (2 * eps)
    np.testing.assert_allclose(hess[:, i], column, rtol=1e-6, atol=1e-8)


def _np_loss(reference):
  """``loss(params, xs)`` of a jax-params reference ``reference(params, xs)
  -> ys``."""
  return lambda params, xs: np.sum(np.sin(reference(params, xs)))


_ZERO_BIDIRECTIONAL = jaxrnn.BidirectionalCarry(np.zeros(H), (np.zeros(H), np.zeros(H)))
_ZERO_STACK = ((np.zeros(ref.P), np.zeros(H)),
               jaxrnn.BidirectionalCarry(np.zeros(H), np.zeros(H)), np.zeros(H), ())
FORWARD_MODE_LAYERS = {
    **{c.name: (lambda c=c: jaxrnn.rnn(c.make()),
                _np_loss(lambda p, x, c=c: ref.ref_run(c, p, x, c.make().init_carry(), 3)[0]))
       for c in ref.FUSED_CASES},
    "reverse_remat": (
        lambda: jaxrnn.rnn(jaxrnn.lstm(H), reverse=True, remat=2),
        _np_loss(lambda p, x: ref.ref_run(ref.BY_NAME["lstm"], p, x, jaxrnn.lstm(H).init_carry(),
                                          3, reverse=True)[0])),
    "bidirectional": (
        lambda: ref.bidirectional_layer("sum"),
        _np_loss(lambda p, x: ref.ref_bidirectional(p, x, _ZERO_BIDIRECTIONAL, 3, "sum")[0])),
    "stack": (ref.stack_layer,
              _np_loss(lambda p, x: ref.ref_stack(p, x, _ZERO_STACK, 3)[0])),
}


@pytest.mark.parametrize("name", sorted(FORWARD_MODE_LAYERS))
def test_jvp_and_hessian_of_every_layer_match_numpy(name, x64):
  """On the default path: jax.jvp along random directions of params and
  inputs, and jax.hessian w.r.t. the inputs, against central differences
  of the float64 NumPy reference (length 3: the Hessian is zero on the
  padding)."""
  make, loss_np = FORWARD_MODE_LAYERS[name]
  layer = make()
  params = ref.random_params(layer, 90)
  xs = ref.random_xs(91, dtype=np.float64)
  d_params, d_xs = ref.random_like((params, xs), 92, scale=1.0)

  def loss(params, xs):
    return jnp.sum(jnp.sin(layer.apply(params, xs, length=3)[0]))

  @jax.jit
  def derivatives(params, xs):
    return (jax.jvp(loss, (params, xs), (d_params, d_xs)),
            jax.hessian(loss, argnums=1)(params, xs))

  (value, tangent), hess = derivatives(params, xs)
  p_np, x_np = params, np.asarray(xs)
  np.testing.assert_allclose(value, loss_np(p_np, x_np), rtol=1e-12)
  eps = 1e-6
  moved = lambda e: (jax.tree_util.tree_map(lambda p, d: np.asarray(p) + e * np.asarray(d),
                                            params, d_params),
                     x_np + e * np.asarray(d_xs))
  fd = (loss_np(*moved(eps)) - loss_np(*moved(-eps))) / (2 * eps)
  np.testing.assert_allclose(tangent, fd, rtol=1e-7, atol=1e-9)
  hess = np.asarray(hess)
  assert hess.shape == (T, D, T, D)
  np.testing.assert_array_equal(hess[3:], 0)
  np.testing.assert_array_equal(hess[:, :, 3:], 0)
  h = 1e-4
  valid = [(t, d) for t in range(3) for d in range(D)]
  for i in valid:
    for j in valid:
      def at(a, b):
        x = x_np.copy()
        x[i] += a
        x[j] += b
        return loss_np(p_np, x)
      fd2 = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h * h)
      np.testing.assert_allclose(hess[i + j], fd2, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} {i} {j}")
