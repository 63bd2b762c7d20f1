"""`readout`: the per-step output map ``y_t = W_hy h_t + b_y``."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Layer
from jaxrnn._src.layers import common

Array = jax.Array


class ReadoutParams(NamedTuple):
  """Parameters of `readout`: ``y_t = h_t W_hy + b_y``."""

  W_hy: Array  # (H, output_size): the seeds' W_hy, stored transposed
  b_y: Array  # (output_size,)


def readout(
    output_size: int,
    *,
    kernel_init=jax.nn.initializers.lecun_normal(),
    bias_init=jax.nn.initializers.zeros,
) -> Layer:
  """The per-step output map ``y_t = W_hy h_t + b_y`` (stateless).

  It maps every step of a sequence ``xs: (T, H)`` (``length`` zeroes the
  padding) or every position of an image ``xs: (R, C, H)`` (``shape=(h,
  w)`` zeroes what lies outside the valid region).

  ``W_hy`` is stored as ``(H, output_size)`` so that ``y_t = h_t @ W_hy``,
  the same orientation as the cells' ``W_x``.

  Args:
    output_size: the size of ``y_t``.
    kernel_init, bias_init: initialisers for ``W_hy`` and ``b_y``.

  Returns:
    A `Layer` with params `ReadoutParams` and an empty carry ``()``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> head = jaxrnn.readout(2)
    >>> params = head.init_params(jax.random.key(0), 4)
    >>> ys, _ = head.apply(params, jnp.ones((3, 4)), length=2)
    >>> ys.shape, bool(jnp.all(ys[2] == 0))
    ((3, 2), True)
  """
  output_size = checks.check_positive_int(output_size, "output_size")

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    k_w, k_b = jax.random.split(key)
    return ReadoutParams(
        inits.draw(kernel_init, k_w, (input_size, output_size), dtype),
        inits.draw(bias_init, k_b, (output_size,), dtype))

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None,
            shape=None):
    del reset, key  # stateless and deterministic
    owner = f"readout(output_size={output_size})"
    checks.check_params(params, ReadoutParams, owner)
    checks.check_input_matrix(params.W_hy, output_size, "params.W_hy", owner)
    checks.check_array_shape(params.b_y, (output_size,), "params.b_y", owner)
    if carry is not None and not (isinstance(carry, tuple) and not carry):
      raise TypeError(f"carry: {owner} is stateless and expects () or None")
    # A sequence (T, input_size), or an image (R, C, input_size).
    image = jnp.ndim(xs) == 3
    checks.check_sequence(xs, params.W_hy.shape[0], "readout.apply",
                          input_ndim=2 if image else 1)
    if shape is not None and not image:
      raise ValueError(
          f"shape: {owner} takes shape=(h, w) with images xs: (R, C, input_size), "
          f"got xs of shape {tuple(jnp.shape(xs))}")
    b_y = params.b_y.reshape((1,) * (xs.ndim - 1) + (output_size,))
    ys = checks.matmul(xs, params.W_hy) + b_y
    ys = common.mask_steps(ys, checks.check_length(length, xs.shape[0]))
    if shape is not None:
      ys = common.mask_region(ys, common.check_shape2d(shape, *xs.shape[:2]))
    return ys, ()

  return Layer(init_params=init_params, apply=apply, init_carry=lambda dtype=None: (),
               config=(("kind", "readout"), ("output_size", output_size)))
