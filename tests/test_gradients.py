"""Gradients, JVPs and Hessians in float64 against finite differences.

Two kinds of program, each compiled once and probed with many data values:

* `GRADIENT_CASES`: one program per cell (and for a bidirectional layer and
  a stack) that returns the loss, outputs and gradients of several layers
  at once: each pairs a mode (the options below) with a direction. Every
  gradient matches central differences of its own loss along random
  directions, with lengths 0, 3 (NaN in the padding, which gets exactly
  zero gradient) and T, from a random carry; every other mode matches the
  default path of the same direction to 1e-10.
* `SECOND_ORDER`: one program per layer with `jax.jvp` along a random
  direction of (params, xs, carry) and `jax.hessian` with respect to (xs,
  carry), against central differences of the float64 NumPy reference, and
  the Hessian against differences of the program's own gradient.

The modes and directions are chosen pairwise, not multiplied out. Reverse,
remat and ``method="reference"`` are the engine's, the same code for every
cell, so each (cell, mode), (cell, direction) and (mode, direction) pair is
checked at least once: the default path of every cell (both directions for
elman_tanh, lstm and gru, one cell of each family, for lstm_proj, the fused
path without a hand-written tangent, and for gru_before, the reference
scan; one direction for the variants whose difference lies inside the cell:
activation, bias), the reference path beside it for one cell of each
family, and remat on the fused path (chunks of sqrt(T) and of 3 with
unroll 2) and on the reference path. The hand-written tangents themselves
are checked to 1e-12 against `jax.jvp` in test_cells.py, and every
transformation of the default layers against the reference path to 1e-8
in test_transformations.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import D, H, T

tree_leaves = jax.tree_util.tree_leaves
tree_map = jax.tree_util.tree_map

MODES = {
    "default": dict(unroll=1),  # the fused path where the cell has one
    "reference": dict(method="reference", unroll=1),  # autodiff of the masked scan
    "remat": dict(remat=True),  # chunks of sqrt(T) steps, the backend's unroll
    "remat3_unroll2": dict(remat=3, unroll=2, method="sequential"),
    "remat2_reference": dict(remat=2, method="reference"),
}
FORWARD, REVERSE = "forward", "reverse"
BOTH = (FORWARD, REVERSE)

# {case: {mode: directions}}; see the module docstring for the choice.
GRADIENT_CASES = {
    "elman_tanh": {"default": BOTH, "remat2_reference": (REVERSE,)},
    "elman_relu": {"default": (REVERSE,)},
    "elman_callable": {"default": (FORWARD,)},
    "lstm": {"default": BOTH, "reference": (FORWARD,), "remat": (REVERSE,)},
    "lstm_proj": {"default": BOTH, "reference": (REVERSE,)},
    "lstm_nobias": {"default": (REVERSE,)},
    "gru": {"default": BOTH, "reference": (REVERSE,), "remat3_unroll2": (FORWARD,)},
    "gru_before": {"default": BOTH},  # its default path is the reference
    "gru_nobias": {"default": (FORWARD,)},
}
assert sorted(GRADIENT_CASES) == sorted(ref.CASE_IDS)


def _weights(shape, dtype):
  """Fixed, non-symmetric per-entry weights for a loss."""
  n = int(np.prod(shape))
  return jnp.cos(1.0 + jnp.arange(n, dtype=dtype)).reshape(shape)


def _loss(layer, params, xs, carry, length):
  """A scalar of the outputs AND the final carry; returns (loss, outputs)."""
  ys, out = layer.apply(params, xs, length=length, carry=carry)
  total = jnp.sum(jnp.sin(ys) * _weights(ys.shape, ys.dtype))
  for leaf in tree_leaves(out):
    total = total + jnp.sum(jnp.tanh(leaf) * _weights(leaf.shape, leaf.dtype))
  return total, (ys, out)


def _gradient_program(layers):
  """``f(params, xs, carry, length) -> {name: ((loss, outputs), grads)}``,
  one jitted program for every layer of ``layers`` ({name: layer})."""
  value_and_grads = {
      name: jax.value_and_grad(functools.partial(_loss, layer), argnums=(0, 1, 2),
                               has_aux=True)
      for name, layer in layers.items()}
  return jax.jit(lambda *args: {name: vg(*args) for name, vg in value_and_grads.items()})


def _numpy(tree):
  return tree_map(lambda a: np.asarray(a, np.float64), tree)


def _axpy(alpha, v, x):
  return tree_map(lambda vi, xi: xi + alpha * vi, v, x)


def _tree_dot(a, b):
  return sum(float(np.vdot(x, y)) for x, y in zip(tree_leaves(a), tree_leaves(b)))


def _check_gradients(layers, seed, compare_with=None):
  """Every layer's gradients against central differences of its loss, for
  lengths 0, 3 and T; with ``compare_with`` ({name: other name}) its loss,
  outputs and gradients also against the other's to 1e-10."""
  program = _gradient_program(layers)
  first = next(iter(layers.values()))
  params = ref.random_params(first, seed)
  xs = np.asarray(ref.random_xs(seed + 1, dtype=np.float64))
  carry = ref.random_like(first.init_carry(), seed + 2)
  args = _numpy((params, xs, carry))
  for leaf in tree_leaves(args):
    assert leaf.dtype == np.float64
  eps = 1e-6
  for length in (0, 3, T):
    p, x, c = args
    x = x.copy()
    x[length:] = np.nan  # junk in the padding: never read
    results = program(p, x, c, length)
    for leaf in tree_leaves(results):
      assert leaf.dtype == jnp.float64
    results = _numpy(results)
    rng = np.random.default_rng(seed + length)
    directions = [tree_map(lambda a: rng.standard_normal(np.shape(a)), (p, xs, c))
                  for _ in range(3)]
    moved = [(_numpy(program(*_axpy(eps, v, (p, x, c)), length)),
              _numpy(program(*_axpy(-eps, v, (p, x, c)), length))) for v in directions]
    for name, ((value, outputs), grads) in results.items():
      msg = f"{name}, length={length}"
      assert np.all(np.isfinite(value)), msg
      for g in tree_leaves((outputs, grads)):
        assert np.all(np.isfinite(g)), msg
      assert any(np.any(g != 0) for g in tree_leaves(grads)), msg
      np.testing.assert_array_equal(grads[1][length:], 0, err_msg=msg)  # the padding
      np.testing.assert_array_equal(outputs[0][length:], 0, err_msg=msg)
      for k, (v, (plus, minus)) in enumerate(zip(directions, moved)):
        fd = (plus[name][0][0] - minus[name][0][0]) / (2 * eps)
        np.testing.assert_allclose(_tree_dot(grads, v), fd, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{msg}, direction {k}")
    for name, other in (compare_with or {}).items():
      ref.assert_tree_close(results[name], results[other], rtol=1e-10, atol=1e-10,
                            err_msg=f"{name} against {other}, length={length}")


@pytest.mark.parametrize("name", ref.CASE_IDS)
def test_rnn_gradients_match_finite_differences(x64, name):
  cell = ref.BY_NAME[name].make()
  layers = {(mode, direction): jaxrnn.rnn(cell, reverse=direction == REVERSE, **MODES[mode])
            for mode, directions in GRADIENT_CASES[name].items() for direction in directions}
  compare_with = {(mode, direction): ("default", direction)
                  for mode, direction in layers if mode != "default"}
  _check_gradients(layers, 60, compare_with)


def test_bidirectional_gradients_match_finite_differences(x64):
  _check_gradients({"default": ref.bidirectional_layer("mul", **MODES["default"])}, 62)


def test_stack_gradients_match_finite_differences(x64):
  _check_gradients({"default": ref.stack_layer(**MODES["default"])}, 64)


# ---------------------------------------------------------------------------
# Forward mode and second derivatives. The default path of the built-in
# cells is a custom JVP, so jax.jvp, Hessians and gradients of gradients
# work on it as on method="reference". Each layer below is one program:
# jvp along a random direction of (params, xs, carry) and the Hessian with
# respect to (xs, carry), at length 3 (the Hessian is exactly zero on the
# padding). Chosen pairwise like `GRADIENT_CASES`: every family of
# hand-written tangent, the fused path without one (a callable activation),
# both directions, remat, segment resets and the reference path, the
# cheapest cell standing for a path where the cell makes no difference;
# the bidirectional layer (gru forward, lstm backward) composes them with
# jax.numpy operations and is checked in forward mode.

RESET = np.zeros(T, bool)
RESET[2] = True


class SecondOrder:
  """An rnn layer and its NumPy reference (``reverse``, ``reset``)."""

  def __init__(self, case, reverse=False, reset=None, **options):
    self.case, self.reverse, self.reset = ref.BY_NAME[case], reverse, reset
    self.layer = jaxrnn.rnn(self.case.make(), reverse=reverse, **options)

  def apply(self, params, xs, carry):
    reset = None if self.reset is None else jnp.asarray(self.reset)
    return self.layer.apply(params, xs, length=3, carry=carry, reset=reset)

  def numpy(self, params, xs, carry):
    return ref.run(self.case.step, params, xs, carry, self.case.out_size, 3, self.reverse,
                   reset=self.reset)


SECOND_ORDER = {  # unroll 1 (a smaller program) but where remat=2 takes the backend's
    "elman_tanh": lambda: SecondOrder("elman_tanh", unroll=1),
    "elman_callable_reverse": lambda: SecondOrder("elman_callable", reverse=True, unroll=1),
    "elman_tanh_reference_reset": lambda: SecondOrder("elman_tanh", method="reference",
                                                      reset=RESET, unroll=1),
    "lstm_reverse_remat_reset": lambda: SecondOrder("lstm", reverse=True, remat=2,
                                                    reset=RESET),
    "gru": lambda: SecondOrder("gru", unroll=1),
}


def _numpy_loss(ys, carry):
  return np.sum(np.sin(ys)) + sum(np.sum(np.tanh(c)) for c in tree_leaves(carry))


def _unravel(z, like):
  """The flat vector ``z`` (NumPy or jax) as a pytree shaped like ``like``."""
  leaves, treedef = jax.tree_util.tree_flatten(like)
  bounds = np.cumsum([0] + [np.size(leaf) for leaf in leaves])
  return jax.tree_util.tree_unflatten(treedef, [
      z[a:b].reshape(np.shape(leaf)) for a, b, leaf in zip(bounds, bounds[1:], leaves)])


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_jvp_and_hessian_match_finite_differences(x64, name):
  layer = SECOND_ORDER[name]()
  params = ref.random_params(layer.layer, 90)
  xs = ref.random_xs(91, dtype=np.float64)
  carry = ref.random_like(layer.layer.init_carry(), 92)
  direction = ref.random_like((params, xs, carry), 93, scale=1.0)
  p_np, x_np, c_np = _numpy((ref.np_params(params), xs, ref.np_carry(carry)))
  z = np.concatenate([np.ravel(leaf) for leaf in tree_leaves((x_np, c_np))])
  n = z.size

  def loss(params, xs, carry):
    ys, final = layer.apply(params, xs, carry)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.tanh(c)) for c in tree_leaves(final))

  @jax.jit
  def derivatives(params, xs, carry, z):
    value, tangent = jax.jvp(loss, (params, xs, carry), direction)
    grad = jax.grad(lambda z: loss(params, *_unravel(z, (xs, carry))))
    # The Hessian as jax.hessian builds it (forward over reverse), with the
    # gradient itself as the primal output.
    g, hess = jax.vmap(lambda e: jax.jvp(grad, (z,), (e,)), out_axes=(None, 0))(
        jnp.eye(n, dtype=z.dtype))
    return value, tangent, g, hess

  value, tangent, _, hess = _numpy(derivatives(params, xs, carry, z))
  loss_np = lambda p, x, c: _numpy_loss(*layer.numpy(p, x, c))  # noqa: E731
  np.testing.assert_allclose(value, loss_np(p_np, x_np, c_np), rtol=1e-12)
  # jvp: along the direction, in params, xs and the carry at once.
  d_p, d_x, d_c = _numpy((ref.np_params(direction[0]), direction[1],
                          ref.np_carry(direction[2])))
  eps = 1e-6
  moved = lambda e: (_axpy(e, d_p, p_np), x_np + e * d_x, _axpy(e, d_c, c_np))  # noqa: E731
  fd = (loss_np(*moved(eps)) - loss_np(*moved(-eps))) / (2 * eps)
  np.testing.assert_allclose(tangent, fd, rtol=1e-7, atol=1e-9)
  # The Hessian: symmetric, zero on the padding, against second differences
  # of the NumPy loss, and each column against differences of the gradient.
  assert hess.shape == (n, n)
  np.testing.assert_allclose(hess, hess.T, atol=1e-10)
  padding = np.zeros(n, bool)
  padding[3 * D:T * D] = True  # xs[3:]
  np.testing.assert_array_equal(hess[padding], 0)
  np.testing.assert_array_equal(hess[:, padding], 0)
  valid = np.flatnonzero(~padding)
  h = 1e-4
  for i in valid:
    for j in valid[valid >= i]:
      def at(a, b):
        moved_z = z.copy()
        moved_z[i] += a
        moved_z[j] += b
        return loss_np(p_np, *_unravel(moved_z, (x_np, c_np)))
      fd2 = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h * h)
      np.testing.assert_allclose(hess[i, j], fd2, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} {i} {j}")
  eps = 1e-5
  for i in valid:
    e = np.zeros(n)
    e[i] = eps
    column = (np.asarray(derivatives(params, xs, carry, z + e)[2])
              - np.asarray(derivatives(params, xs, carry, z - e)[2])) / (2 * eps)
    np.testing.assert_allclose(hess[:, i], column, rtol=1e-6, atol=1e-8, err_msg=f"column {i}")


_ZERO_BIDIRECTIONAL = jaxrnn.BidirectionalCarry(np.zeros(H), (np.zeros(H), np.zeros(H)))


def test_bidirectional_jvp_matches_finite_differences(x64):
  layer = ref.bidirectional_layer("sum")
  params = ref.random_params(layer, 94)
  xs = ref.random_xs(95, dtype=np.float64)
  d_params, d_xs = ref.random_like((params, xs), 96, scale=1.0)

  def loss(p, x):
    return jnp.sum(jnp.sin(layer.apply(p, x, length=3)[0]))

  def loss_np(p, x):
    return np.sum(np.sin(ref.ref_bidirectional(p, x, _ZERO_BIDIRECTIONAL, 3, "sum")[0]))

  value, tangent = jax.jit(lambda p, x: jax.jvp(loss, (p, x), (d_params, d_xs)))(params, xs)
  p_np, x_np, d_p, d_x = _numpy((params, xs, d_params, d_xs))
  np.testing.assert_allclose(value, loss_np(p_np, x_np), rtol=1e-12)
  eps = 1e-6
  fd = (loss_np(_axpy(eps, d_p, p_np), x_np + eps * d_x)
        - loss_np(_axpy(-eps, d_p, p_np), x_np - eps * d_x)) / (2 * eps)
  np.testing.assert_allclose(tangent, fd, rtol=1e-7, atol=1e-9)
