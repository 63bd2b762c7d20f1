"""The Real-Gated Linear Recurrent Unit of Griffin (De et al. 2024).

Its gates come from the input alone, so it is a member of the linear family
(`cells.linear.linear_family`) and runs on the linear engine, by the
multiply-add scan or the associative scan. recurrentgemma's ``RGLRU`` is
its specification, two of its choices included: a segment's first step
(``segment_pos == 0``) takes ``a_t = 0`` before the normaliser, so it is
``h_t = i_t ⊙ x_t``; and the normaliser ``sqrt(1 - a_t²)`` has its
derivative bounded by 1000 (there by a ``custom_vjp``, here by a
``custom_jvp``, so forward mode keeps working).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.linear import linear_family

Array = jax.Array

# recurrentgemma's bound on the derivative of the normaliser's square root.
MAX_SQRT_GRADIENT = 1000.0


class RGLRUParams(NamedTuple):
  """Parameters of `rg_lru` (H = hidden_size = input size, K = num_heads)."""

  a_param: Array  # (H,): softplus(a_param) is -log a at r_t = 1, per c
  W_a: Array  # (K, H/K, H/K): block k of the recurrence gate's weights
  b_a: Array  # (K, H/K)
  W_i: Array  # (K, H/K, H/K): block k of the input gate's weights
  b_i: Array  # (K, H/K)


@jax.custom_jvp
def sqrt_bounded_derivative(x: Array) -> Array:
  """``sqrt(x)`` whose derivative is at most `MAX_SQRT_GRADIENT`."""
  return jnp.sqrt(x)


@sqrt_bounded_derivative.defjvp
def _sqrt_bounded_derivative_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  floor = jnp.asarray(1 / (4 * MAX_SQRT_GRADIENT ** 2), x.dtype)
  return jnp.sqrt(x), dx * (0.5 * jax.lax.rsqrt(jnp.maximum(x, floor)))


def rg_lru(
    hidden_size: int,
    *,
    num_heads: int = 1,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
) -> Cell:
  r"""The Real-Gated Linear Recurrent Unit (RG-LRU) of Griffin.

  .. math::
    r_t &= σ(x_t W_a + b_a), \qquad i_t = σ(x_t W_i + b_i), \qquad
    \log a_t = -c \, r_t ⊙ \mathrm{softplus}(a) \\
    h_t &= a_t ⊙ h_{t-1} + \sqrt{1 - a_t^2} ⊙ (i_t ⊙ x_t), \qquad y_t = h_t

  with block-diagonal ``W_a`` and ``W_i`` (K = ``num_heads`` blocks: block
  k maps ``x[k*H/K:(k+1)*H/K]``). At a reset step (``reset[t]`` of
  `jaxrnn.rnn`) ``h_t = i_t ⊙ x_t``, recurrentgemma's convention for
  ``segment_pos == 0``: pass a ``reset`` that is True at step 0 to match a
  recurrentgemma sequence from its start. The derivative of the square root
  is bounded by 1000, as recurrentgemma bounds it.

  Args:
    hidden_size: H, the size of the state, which equals the input size.
    num_heads: K, the number of diagonal blocks of the gates' weights; it
      must divide H.
    c: the constant ``c`` of ``log a_t``.
    min_rad, max_rad: ``a = exp(-softplus(a_param))`` is initialised
      uniformly on the ring ``[min_rad, max_rad]`` (area-uniform).

  Returns:
    A `Cell` with params `RGLRUParams` and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.rg_lru(8, num_heads=2), method="parallel")
    >>> params = layer.init_params(jax.random.key(0), 8)
    >>> xs = jax.random.normal(jax.random.key(1), (6, 8))
    >>> reset = jnp.array([True, False, False, True, False, False])
    >>> ys, h = jax.jit(layer.apply)(params, xs, reset=reset)
    >>> sequential = jaxrnn.rnn(jaxrnn.rg_lru(8, num_heads=2), method="sequential")
    >>> seq, _ = jax.jit(sequential.apply)(params, xs, reset=reset)
    >>> ys.shape, bool(jnp.allclose(ys, seq, atol=1e-6))
    ((6, 8), True)

  References:
    De, Smith, Fernando, Botev, Cristian-Muraru, Gu, Haroun, Berrada, Chen,
    Srinivasan, Desjardins, Doucet, Budden, Teh, Pascanu, De Freitas &
    Gulcehre, Griffin: Mixing Gated Linear Recurrences with Local Attention
    for Efficient Language Models, 2024; recurrentgemma's ``RGLRU``.
  """
  H, K = checks.check_heads(hidden_size, num_heads)
  c = checks.check_positive_float(c, "c")
  for name, value in (("min_rad", min_rad), ("max_rad", max_rad)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
      raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
  if not min_rad < max_rad:
    raise ValueError(f"max_rad: expected min_rad < max_rad, got min_rad={min_rad}, "
                     f"max_rad={max_rad}")
  d = H // K
  owner = f"rg_lru(hidden_size={H}, num_heads={K})"

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    checks.check_input_size_equals(input_size, H, "hidden_size", owner)
    k_a, k_wa, k_wi = jax.random.split(key, 3)
    work = checks.accumulation_dtype(dtype)
    # recurrentgemma's ring: softplus(a_param) = -log|a|, |a|^2 area-uniform.
    u = jax.random.uniform(k_a, (H,), work)
    log_a = 0.5 * jnp.log(u * (max_rad ** 2 - min_rad ** 2) + min_rad ** 2 + 1e-8)
    a_param = jnp.log(jnp.expm1(-log_a))
    # Variance scaling 1 / fan_in with fan_in = H, as flax counts it for (K, d, d).
    weight = lambda k: jax.random.normal(k, (K, d, d), work) / math.sqrt(H)
    params = RGLRUParams(a_param, weight(k_wa), jnp.zeros((K, d), work),
                         weight(k_wi), jnp.zeros((K, d), work))
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

  def check(params):
    checks.check_params(params, RGLRUParams, owner)
    checks.check_array_shape(params.a_param, (H,), "params.a_param", owner)
    for name in ("W_a", "W_i"):
      checks.check_array_shape(getattr(params, name), (K, d, d), f"params.{name}", owner)
    for name in ("b_a", "b_i"):
      checks.check_array_shape(getattr(params, name), (K, d), f"params.{name}", owner)

  def gate(xs, w, b):
    z = checks.block_matmul(xs, w)
    return jnp.reshape(common.add(z, b), z.shape[:-2] + (H,))

  def project(params, xs):
    """``zx = [x W_a + b_a, x W_i + b_i, x]``, both gates' pre-activations."""
    z_a, z_i = gate(xs, params.W_a, params.b_a), gate(xs, params.W_i, params.b_i)
    return jnp.concatenate([z_a, z_i, xs.astype(z_a.dtype)], axis=-1)

  def gated_input(zx):
    return zx[..., 2 * H:] * jax.nn.sigmoid(zx[..., H:2 * H])

  # The equation: a_t and the normalised, gated input b_t.
  def coefficients(params, zx):
    softplus_a = jax.nn.softplus(params.a_param.astype(zx.dtype))
    log_a = common.mul(-c * jax.nn.sigmoid(zx[..., :H]), softplus_a)
    a, a_squared = jnp.exp(log_a), jnp.exp(2 * log_a)
    return a, gated_input(zx) * sqrt_bounded_derivative(1 - a_squared)

  # A segment's first step: a_t = 0, so the normaliser is 1.
  def restart(params, zx):
    b = gated_input(zx)
    return jnp.zeros_like(b), b

  return linear_family(
      init_params=init_params, coefficients=coefficients, hidden_size=H,
      outputs=lambda params, hs, zx: hs, project=project, check=check,
      input_size=lambda params: H, restart=restart, output_size=H,
      config=dict(kind="rg_lru", hidden_size=H, num_heads=K, c=c, min_rad=min_rad,
                  max_rad=max_rad))
