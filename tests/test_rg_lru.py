"""`rg_lru` against recurrentgemma 1.0.1's ``RGLRU``, the authors' code.

The reference module runs each example's valid prefix (reversed for
``reverse=True``) with ``segment_pos`` built from the resets in scan order,
and a cache where the sequence continues one; jaxrnn runs the padded batch
under ``jit(vmap)`` with lengths and resets, by the multiply-add scan, the
associative scan and the reference scan. Values and gradients (with the
square root's bounded derivative active) are compared; forward mode is
checked against the gradient.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from recurrentgemma.jax import layers as rg_layers

import jaxrnn
from jaxrnn.interop import from_recurrentgemma
import reference as ref

B, T, H, K = 3, 7, 8, 2
LENGTHS = np.array([7, 5, 3], np.int32)
RESET = np.zeros((B, T), bool)
RESET[0, 4] = True  # example 0 continues a cached state, then restarts at 4
RESET[1, [0, 2]] = True
RESET[2, [0, 3]] = True  # the reset at 3 is on padding: no effect


@functools.lru_cache(maxsize=None)
def _reference():
  """recurrentgemma's module, its params (some units with ``1 - a²`` below
  the derivative bound), jaxrnn's params by `from_recurrentgemma`, inputs
  and a cache."""
  module = rg_layers.RGLRU(width=H, num_heads=K)
  xs = jax.random.normal(jax.random.key(1), (B, T, H))
  with jax.numpy_rank_promotion("allow"):  # the reference broadcasts
    variables = module.init(jax.random.key(0), xs[:1], jnp.zeros((1, T), jnp.int32))
  params = jax.tree_util.tree_map(lambda a: a, variables["params"])
  rng = np.random.default_rng(3)
  for gate in ("a_gate", "input_gate"):  # non-zero biases
    params[gate]["b"] = jnp.asarray(rng.normal(size=(K, H // K)), jnp.float32)
  params["a_param"] = params["a_param"].at[:2].set(-20.0)  # a ≈ 1: the bound acts
  h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
  return module, params, from_recurrentgemma({"params": params}), xs, h0


def _segment_pos(restart):
  pos, out = 5, []  # a sequence that does not restart at its first step continues
  for flag in restart:
    pos = 0 if flag else pos + 1
    out.append(pos)
  return jnp.asarray([out], jnp.int32)


def _reference_run(rg_params, x, h0, n, reverse, reset):
  """``(ys, h)`` of one example by the reference module: the valid prefix,
  in scan order; zeros on padding."""
  module = _reference()[0]
  if n == 0:
    return jnp.zeros((T, H)), h0
  order = np.arange(n)[::-1] if reverse else np.arange(n)
  # A reversed scan restarts at t when a segment starts at t + 1.
  restart = [bool(reset[t + 1]) if t + 1 < n else False for t in order] if reverse else \
      [bool(reset[t]) for t in order]
  with jax.numpy_rank_promotion("allow"):  # the reference broadcasts
    ys, h = module.apply({"params": rg_params}, x[order][None], _segment_pos(restart),
                         cache=h0[None])
  full = jnp.zeros((T, H)).at[order].set(ys[0])
  return full, h[0]


@functools.lru_cache(maxsize=None)
def _program(method, reverse):
  """``(outputs, gradients)`` by ``method``; "auto" crosses to the
  associative scan, differentiated as the sequential one."""
  layer = jaxrnn.rnn(jaxrnn.rg_lru(H, num_heads=K), method=method, reverse=reverse)
  run = lambda p, x, h0, n, r: layer.apply(p, x, carry=h0, length=n, reset=r)
  batched = jax.vmap(run, in_axes=(None, 0, 0, 0, 0))
  loss = lambda p, xs, h0, n, r: jnp.sum(jnp.sin(batched(p, xs, h0, n, r)[0]))
  program = jax.jit(lambda *args: (batched(*args), jax.grad(loss, argnums=(0, 1))(*args)))

  def traced_with_auto_crossing(*args):
    with jaxrnn.engine_settings(parallel_min_steps={"rg_lru": 1}, parallel_derivatives=False):
      return program(*args)

  return traced_with_auto_crossing


@functools.partial(jax.jit, static_argnums=3)
def _reference_values_and_grads(rg_params, xs, h0, reverse):
  """The reference's per-example ``(ys, h)`` and the gradient of its loss,
  in one program."""
  runs = [_reference_run(rg_params, xs[b], h0[b], LENGTHS[b], reverse, RESET[b])
          for b in range(B)]
  return runs, jax.grad(_reference_loss, argnums=(0, 1))(rg_params, xs, h0, reverse)


def _reference_loss(rg_params, xs, h0, reverse):
  total = 0.0
  for b in range(B):
    ys, _ = _reference_run(rg_params, xs[b], h0[b], LENGTHS[b], reverse, RESET[b])
    total = total + jnp.sum(jnp.sin(ys))
  return total


@pytest.mark.parametrize("reverse", [False, True])
def test_every_method_equals_recurrentgemma(reverse):
  _, rg_params, params, xs, h0 = _reference()
  want, want_grads = _reference_values_and_grads(rg_params, xs, h0, reverse)
  want_grads = (from_recurrentgemma(want_grads[0]), want_grads[1])
  assert np.max(np.abs(want_grads[0].a_param[:2])) > 0  # the bounded units learn
  args = (params, xs, h0, jnp.asarray(LENGTHS), jnp.asarray(RESET))
  for method in ("sequential", "parallel", "auto", "reference"):
    (ys, final), grads = _program(method, reverse)(*args)
    for b in range(B):
      np.testing.assert_allclose(ys[b], want[b][0], rtol=1e-5, atol=1e-5, err_msg=method)
      np.testing.assert_allclose(final[b], want[b][1], rtol=1e-5, atol=1e-5, err_msg=method)
    ref.assert_tree_close(grads, want_grads, rtol=1e-4, atol=1e-5)


def test_forward_mode_and_the_bounded_derivative():
  _, _, params, xs, h0 = _reference()
  layer = jaxrnn.rnn(jaxrnn.rg_lru(H, num_heads=K), method="parallel")
  loss = lambda p: jnp.sum(jnp.sin(layer.apply(p, xs[0], carry=h0[0])[0]))
  tangent = ref.random_like(params, seed=4)
  (_, jvp), grad = jax.jit(lambda p, v: (jax.jvp(loss, (p,), (v,)), jax.grad(loss)(p)))(
      params, tangent)
  want = sum(jnp.vdot(g, v) for g, v in zip(jax.tree_util.tree_leaves(grad),
                                             jax.tree_util.tree_leaves(tangent)))
  np.testing.assert_allclose(jvp, want, rtol=1e-4)
  # sqrt's derivative is bounded by 1000 at 0, as recurrentgemma bounds it.
  d = jax.grad(jaxrnn._src.cells.rg_lru.sqrt_bounded_derivative)(jnp.float32(0.0))
  np.testing.assert_allclose(d, 1000.0, rtol=1e-6)


def test_initialisation_follows_recurrentgemma():
  params = jaxrnn.rg_lru(256, num_heads=4, min_rad=0.9, max_rad=0.999).init_params(
      jax.random.key(0), 256)
  a = np.exp(-jax.nn.softplus(params.a_param))  # |a| at r_t = 1 and c = 1
  assert a.min() >= 0.9 - 1e-6 and a.max() <= 0.999 + 1e-6
  assert params.W_a.shape == (4, 64, 64) and params.b_i.shape == (4, 64)
  np.testing.assert_allclose(np.std(params.W_i), 1 / np.sqrt(256), rtol=0.05)
  assert not np.any(params.b_a) and not np.any(params.b_i)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="hidden_size: expected a multiple of num_heads=3"):
    jaxrnn.rg_lru(8, num_heads=3)
  with pytest.raises(ValueError, match=r"input_size: rg_lru\(hidden_size=8, num_heads=1\) "
                                       "expects input_size equal to hidden_size=8, got 5"):
    jaxrnn.rg_lru(8).init_params(jax.random.key(0), 5)
  with pytest.raises(ValueError, match="max_rad"):
    jaxrnn.rg_lru(8, min_rad=0.99, max_rad=0.9)
  params = jaxrnn.rg_lru(8, num_heads=2).init_params(jax.random.key(0), 8)
  with pytest.raises(ValueError, match=r"x: .*\(8,\)"):
    jaxrnn.rg_lru(8, num_heads=2).cell_apply(params, jnp.zeros(8), jnp.zeros(5))
  gate = {"w": jnp.zeros((2, 4, 4)), "b": jnp.zeros((2, 4))}
  good = {"a_param": jnp.zeros(8), "a_gate": gate, "input_gate": gate}
  with pytest.raises(ValueError, match="'input_gate'"):
    from_recurrentgemma({"a_param": jnp.zeros(8), "a_gate": gate})
  with pytest.raises(ValueError, match=r"'input_gate/b' of shape \(2, 4\)"):
    from_recurrentgemma({**good, "input_gate": {"w": gate["w"], "b": jnp.zeros((2, 3))}})
  with pytest.raises(ValueError, match="'a_gate/w' of shape"):
    from_recurrentgemma({**good, "a_gate": {"w": jnp.zeros((2, 4, 3)), "b": gate["b"]}})
