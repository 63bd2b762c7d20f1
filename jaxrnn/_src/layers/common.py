"""Checks and masking shared by the layers."""

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src.base import Cell, Layer

Array = jax.Array
tree_map = jax.tree_util.tree_map


def mask_steps(ys: Any, length: Optional[Array]) -> Any:
  """Zeros ``ys[t]`` for ``t >= length`` (every leaf has time on axis 0)."""
  if length is None:
    return ys

  def mask(y):
    valid = jnp.arange(y.shape[0]) < length
    return jnp.where(valid.reshape((-1,) + (1,) * (y.ndim - 1)), y,
                     jnp.zeros((), y.dtype))

  return tree_map(mask, ys)


def _check_type(value: Any, name: str, want: type, other: type, hint: str) -> Any:
  """``value`` if it is a ``want`` (a `Cell` or a `Layer`), else TypeError."""
  if isinstance(value, other):
    raise TypeError(f"{name}: expected a jaxrnn.{want.__name__}, got a "
                    f"jaxrnn.{other.__name__}; {hint}")
  if not isinstance(value, want):
    raise TypeError(f"{name}: expected a jaxrnn.{want.__name__}, got {type(value).__name__}")
  return value


def check_cell(cell: Any, name: str) -> Cell:
  return _check_type(cell, name, Cell, Layer,
                     "pass the cell itself (e.g. jaxrnn.lstm(64)), not rnn(cell)")


def check_layer(layer: Any, name: str) -> Layer:
  return _check_type(layer, name, Layer, Cell, "wrap it as jaxrnn.rnn(cell)")


def check_key(key: Any) -> Any:
  """``key`` if it is ONE PRNG key (typed, or raw ``uint32[2]``), or None."""
  if key is None:
    return None
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if np.shape(key) != ():
      raise ValueError(
          f"key: expected ONE PRNG key (shape ()), got shape {np.shape(key)}; "
          "for a minibatch pass jax.random.split(key, B) through jax.vmap")
    return key
  if dtype is not None and dtype == jnp.uint32 and np.shape(key) == (2,):
    return key
  raise TypeError(
      "key: expected a PRNG key from jax.random.key (or a raw uint32 key of "
      f"shape (2,)), got {checks.describe(key)}")


def check_reset(reset: Any, num_steps: int) -> Optional[Array]:
  """Validates a per-step reset mask ``(T,)`` of bools."""
  if reset is None:
    return None
  shape = np.shape(reset)
  if shape != (num_steps,):
    raise ValueError(
        f"reset: expected shape (T,) = ({num_steps},) (one flag per step of "
        f"ONE sequence; vmap it with xs), got shape {tuple(shape)}")
  dtype = jnp.result_type(reset)
  if dtype != jnp.bool_:
    raise TypeError(f"reset: expected a bool array, got dtype {dtype}")
  return jnp.asarray(reset)


def check_rates(zoneout: Any, reference_carry: Any) -> Any:
  """A rate per carry leaf (a float, or a pytree structured like the carry)."""
  if isinstance(zoneout, numbers.Real) and not isinstance(zoneout, bool):
    rate = checks.check_rate(zoneout, "zoneout")
    return tree_map(lambda _: rate, reference_carry)
  try:
    rates = tree_map(lambda r, _: r, zoneout, reference_carry)
  except ValueError:
    raise TypeError(
        "zoneout: expected a rate in [0, 1) or rates structured like the "
        f"cell's carry {jax.tree_util.tree_structure(reference_carry)}, got "
        f"{zoneout!r}") from None
  return tree_map(lambda r: checks.check_rate(r, "zoneout"), rates)


def check_shape2d(shape: Any, rows: int, cols: int):
  """Validates a 2-D valid region ``(h, w)``: returns a pair of int32
  scalars (clamped when traced), or None."""
  if shape is None:
    return None
  if not isinstance(shape, (tuple, list)) or len(shape) != 2:
    raise TypeError(f"shape: expected a pair (h, w) of integer scalars, got {shape!r}")
  return (checks.check_length(shape[0], rows, "shape[0]"),
          checks.check_length(shape[1], cols, "shape[1]"))


def mask_region(ys: Any, shape) -> Any:
  """Zeros ``ys[i, j]`` outside the valid region ``i < h, j < w``."""
  if shape is None:
    return ys
  h, w = shape

  def mask(y):
    valid = ((jnp.arange(y.shape[0]) < h)[:, None]
             & (jnp.arange(y.shape[1]) < w)[None, :])
    return jnp.where(valid.reshape(valid.shape + (1,) * (y.ndim - 2)), y,
                     jnp.zeros((), y.dtype))

  return tree_map(mask, ys)
