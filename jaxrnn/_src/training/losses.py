"""Sequence losses masked over padded steps."""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks

_REDUCTIONS = ("sum", "mean", "last")


def sequence_loss(per_step_losses: jax.Array, length: Optional[jax.Array] = None,
                  *, reduction: str = "sum") -> jax.Array:
  r"""Reduces per-step losses over time, ignoring padded steps.

  .. math::
    \text{sum: } L = \sum_{t < \text{length}} L_t, \qquad
    \text{mean: } L / \text{length}, \qquad
    \text{last: } L_{\text{length}-1}

  Whatever the padded steps hold (even NaN) never reaches the result or its
  gradient. With ``length == 0``, every reduction returns 0.

  Args:
    per_step_losses: ``(..., T)`` losses, time on the last axis.
    length: ``None`` (every step is valid) or integers of shape
      ``per_step_losses.shape[:-1]`` (a scalar for one sequence).
    reduction: ``"sum"`` (the total loss), ``"mean"`` (per valid step) or
      ``"last"`` (the loss at the last valid step).

  Returns:
    The reduced loss, of shape ``per_step_losses.shape[:-1]``.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> losses = jnp.array([1.0, 2.0, 3.0, 100.0])
    >>> float(jaxrnn.sequence_loss(losses, 3)), float(jaxrnn.sequence_loss(losses, 3, reduction="last"))
    (6.0, 3.0)
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
  shape = np.shape(per_step_losses)
  if len(shape) < 1:
    raise ValueError("per_step_losses: expected shape (..., T), got a scalar")
  checks.check_floating(per_step_losses, "per_step_losses")
  per_step_losses = jnp.asarray(per_step_losses)
  num_steps = shape[-1]
  if length is None:
    length = jnp.full(shape[:-1], num_steps, jnp.int32)
  else:
    if isinstance(length, bool) or not jnp.issubdtype(jnp.result_type(length), jnp.integer):
      raise TypeError(
          f"length: expected integers, got {jnp.result_type(length) if not isinstance(length, bool) else 'bool'}")
    if np.shape(length) != shape[:-1]:
      raise ValueError(
          f"length: expected shape {shape[:-1]} (per_step_losses.shape[:-1]), "
          f"got {tuple(np.shape(length))}")
    length = jnp.clip(jnp.asarray(length), 0, num_steps)
  # Explicit leading axes: no implicit rank promotion against length[..., None].
  steps = jnp.arange(num_steps).reshape((1,) * (len(shape) - 1) + (num_steps,))
  lengths = length[..., None]
  if reduction == "last":
    picked = steps == lengths - 1
  else:
    picked = steps < lengths
  zero = jnp.zeros((), per_step_losses.dtype)
  total = jnp.sum(jnp.where(picked, per_step_losses, zero), axis=-1)
  if reduction == "mean":
    total = total / jnp.maximum(length, 1).astype(total.dtype)
  return total
