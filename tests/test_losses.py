"""`sequence_loss` against NumPy; padding (even NaN) never reaches it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import D, H, T

REDUCTIONS = ("sum", "mean", "last")


def np_sequence_loss(losses, length, reduction):
  """Loops over sequences; reads only the valid steps."""
  losses = np.asarray(losses, np.float64)
  batch_shape = losses.shape[:-1]
  length = np.broadcast_to(losses.shape[-1] if length is None else length, batch_shape)
  out = np.zeros(batch_shape)
  for idx in np.ndindex(*batch_shape):
    n = int(length[idx])
    valid = losses[idx][:n]
    if n == 0:
      out[idx] = 0.0
    elif reduction == "sum":
      out[idx] = valid.sum()
    elif reduction == "mean":
      out[idx] = valid.sum() / n
    else:
      out[idx] = valid[-1]
  return out


def _losses_with_junk(shape, length, seed, junk=np.nan):
  rng = np.random.default_rng(seed)
  losses = rng.random(shape)
  clean = losses.copy()
  mask = np.arange(shape[-1]) >= np.asarray(length)[..., None]
  losses[mask] = junk
  return jnp.asarray(losses, jnp.float32), clean


def all_reductions(length):
  """One jitted program per ``length`` for the three reductions (``length``
  closed over: a concrete value, as in an eager call)."""
  return jax.jit(lambda losses: {r: jaxrnn.sequence_loss(losses, length, reduction=r)
                                 for r in REDUCTIONS})


@pytest.mark.parametrize("shape, length", [
    ((T,), None),
    ((T,), 3),
    ((T,), 0),
    ((T,), T),
    ((4, T), np.array([0, 1, 3, T])),
    ((2, 3, T), np.array([[T, 2, 0], [1, 4, 3]])),
], ids=["1d_none", "1d_3", "1d_0", "1d_T", "2d", "3d"])
def test_matches_numpy(shape, length):
  if length is None:
    losses = jnp.asarray(np.random.default_rng(0).random(shape), jnp.float32)
    clean = np.asarray(losses)
  else:
    losses, clean = _losses_with_junk(shape, length, 1)
  results = all_reductions(length)(losses)
  for reduction, got in results.items():
    assert got.shape == shape[:-1]
    want = np_sequence_loss(clean, length, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=reduction)
    assert np.all(np.isfinite(got))


def test_length_zero_is_zero():
  losses = jnp.full((3, T), jnp.nan)
  for reduction, got in all_reductions(jnp.zeros(3, jnp.int32))(losses).items():
    np.testing.assert_array_equal(got, 0, err_msg=reduction)


def test_nan_padding_never_reaches_gradient():
  lengths = np.array([0, 2, T, 4])
  losses, clean = _losses_with_junk((4, T), lengths, 2, junk=np.nan)
  # The three reductions' values and gradients from one program.
  grad_fn = jax.jit(lambda l, n: {r: jax.value_and_grad(
      lambda l: jnp.sum(jaxrnn.sequence_loss(l, n, reduction=r)))(l) for r in REDUCTIONS})
  for reduction, (value, grad) in grad_fn(losses, jnp.asarray(lengths, jnp.int32)).items():
    np.testing.assert_allclose(value, np_sequence_loss(clean, lengths, reduction).sum(),
                               rtol=1e-6)
    want = np.zeros((4, T))
    for b, n in enumerate(lengths):
      if n == 0:
        continue
      if reduction == "sum":
        want[b, :n] = 1.0
      elif reduction == "mean":
        want[b, :n] = 1.0 / n
      else:
        want[b, n - 1] = 1.0
    np.testing.assert_allclose(grad, want, rtol=1e-6, err_msg=reduction)


def test_traced_lengths_under_jit_and_vmap():
  losses, clean = _losses_with_junk((3, T), np.array([1, 3, T]), 3)
  f = jax.jit(lambda l, n: jaxrnn.sequence_loss(l, n, reduction="mean"))
  got = f(losses, jnp.array([1, 3, T]))
  np.testing.assert_allclose(got, np_sequence_loss(clean, [1, 3, T], "mean"), rtol=1e-6)
  per_example = jax.jit(jax.vmap(lambda l, n: jaxrnn.sequence_loss(l, n, reduction="last")))
  got = per_example(losses, jnp.array([1, 3, T]))
  np.testing.assert_allclose(got, np_sequence_loss(clean, [1, 3, T], "last"), rtol=1e-6)


def test_with_rnn_outputs_and_nan_padding():
  """End to end: junk padding reaches neither the loss nor the gradient."""
  layer = jaxrnn.rnn(jaxrnn.gru(H), unroll=1)
  params = ref.random_params(layer, 5)
  lengths = jnp.array([2, T])
  xs = np.array(ref.random_xs(6, (2, T, D)))
  xs[0, 2:] = np.nan
  targets = np.random.default_rng(7).standard_normal((2, T, H)).astype(np.float32)

  def loss(params, xs):
    ys, _ = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
    per_step = jnp.sum((ys - targets) ** 2, axis=-1)
    return jnp.mean(jaxrnn.sequence_loss(per_step, lengths, reduction="mean"))

  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, jnp.asarray(xs))
  p_np = ref.np_params(params)
  want = 0.0
  for b, n in enumerate((2, T)):
    ys, _ = ref.run(ref.gru_step, p_np, xs[b], np.zeros(H), H, n)
    want += np.sum((ys[:n] - targets[b, :n]) ** 2) / n / 2
  np.testing.assert_allclose(value, want, rtol=1e-5)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(grads[1])[0, 2:], 0)
