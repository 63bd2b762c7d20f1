"""Checks, masking, merges and output sizes shared by the layers."""

import functools
import numbers
import operator
from typing import Any, Callable, Optional

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


def check_cell(cell: Any, name: str,
               hint: str = "pass the cell itself (e.g. jaxrnn.lstm(64)), not rnn(cell)") -> Cell:
  """``cell`` if it is a `Cell`; ``hint`` says what to do when a `Layer` came."""
  return _check_type(cell, name, Cell, Layer, hint)


def check_layer(layer: Any, name: str, hint: str = "wrap it as jaxrnn.rnn(cell)") -> Layer:
  """``layer`` if it is a `Layer`; ``hint`` says what to do when a `Cell` came."""
  return _check_type(layer, name, Layer, Cell, hint)


def check_key(key: Any) -> Any:
  """``key`` if it is ONE PRNG key (typed, or raw ``uint32[2]``), or None."""
  if key is None:
    return None
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  if not typed and dtype != jnp.uint32:
    raise TypeError(
        "key: expected a PRNG key from jax.random.key (or a raw uint32 key of "
        f"shape (2,)), got {checks.describe(key)}")
  one, shape = (() if typed else (2,)), np.shape(key)
  if shape != one:
    cut = "" if shape else (" (under jax.vmap, a raw key that was not split reaches "
                            "each example as one uint32 word)")
    raise ValueError(
        f"key: expected ONE {'' if typed else 'raw uint32 '}PRNG key (shape {one}), got "
        f"shape {shape}{cut}; for a minibatch pass jax.random.split(key, B) through jax.vmap")
  return key


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


def check_shape2d(shape: Any, rows: int, columns: int) -> Optional[tuple[Any, Any]]:
  """Validates the valid region ``shape = (h, w)`` of ONE ``(rows, columns)`` image.

  ``shape`` is a pair of integer scalars or an integer array of shape
  ``(2,)``, traced or not. Returns ``(h, w)`` as int32 scalars (Python and
  concrete integers outside ``[0, rows]``, ``[0, columns]`` raise
  ValueError; traced ones are clamped), or None for None.
  """
  if shape is None:
    return None
  if hasattr(shape, "shape") and hasattr(shape, "dtype"):
    if np.shape(shape) != (2,):
      raise ValueError(
          f"shape: expected (h, w), a pair or an integer array of shape (2,), got an "
          f"array of shape {np.shape(shape)}; for a minibatch, vmap over `shape` "
          "together with `xs`")
    shape = (shape[0], shape[1])
  if not isinstance(shape, (tuple, list)) or len(shape) != 2:
    raise TypeError(f"shape: expected a pair (h, w), got {checks.describe(shape)} {shape!r}")
  if any(np.ndim(extent) for extent in shape):
    raise ValueError(
        f"shape: expected a pair (h, w) of scalars (one image), got shapes "
        f"{tuple(np.shape(extent) for extent in shape)}; for a minibatch, vmap over "
        "`shape` together with `xs`")
  return (checks.check_length(shape[0], rows, "shape[0] (h)", bound="R"),
          checks.check_length(shape[1], columns, "shape[1] (w)", bound="C"))


def mask_region(ys: Any, extent: Optional[tuple[Array, Array]]) -> Any:
  """Zeros ``ys[i, j]`` outside the valid region ``i < h, j < w`` of every leaf
  (``extent = (h, w)`` from `check_shape2d`; None: the whole image)."""
  if extent is None:
    return ys
  h, w = extent

  def mask(y):
    valid = ((jnp.arange(y.shape[0]) < h)[:, None]
             & (jnp.arange(y.shape[1]) < w)[None, :])
    return jnp.where(valid.reshape(valid.shape + (1,) * (y.ndim - 2)), y,
                     jnp.zeros((), y.dtype))

  return tree_map(mask, ys)


# How `bidirectional` and `multidirectional` merge their directions' outputs
# (each ``(..., O)``, zero where padded: every merge keeps zeros zero).
MERGES = {
    "concat": lambda *ys: jnp.concatenate(ys, axis=-1),
    "sum": lambda *ys: functools.reduce(operator.add, ys),
    "mean": lambda *ys: functools.reduce(operator.add, ys) / len(ys),
    "mul": lambda *ys: functools.reduce(operator.mul, ys),
}


def merge_function(merge: Any) -> Callable[..., Array]:
  """The function ``merge(y_1, ..., y_n)`` named by ``merge``, or ``merge`` itself."""
  if callable(merge):
    return merge
  if isinstance(merge, str) and merge in MERGES:
    return MERGES[merge]
  raise ValueError(f"merge: expected one of {sorted(MERGES)} or a callable, got {merge!r}")


# The rank of ``xs`` (one example) that each 2-D layer kind takes.
_IMAGE_KINDS = ("rnn2d", "multidirectional", "renet")


def input_rank(layers: tuple[Layer, ...], default: Optional[int] = 2) -> Optional[int]:
  """The rank of ``xs`` that the first of ``layers`` takes, from the layers'
  ``config``: the first layer whose kind fixes a rank decides (every
  built-in layer keeps the rank: sequences map to sequences, images to
  images); ``default`` when none does (user layers, `readout`): 2, the
  `Layer` contract's ``(T, input_size)``."""
  for layer in layers:
    config = dict(layer.config)
    kind = config.get("kind")
    cell: Any = config.get("cell", config.get("forward"))
    rank = (3 if kind in _IMAGE_KINDS else 1 + cell.input_ndim
            if kind in ("rnn", "bidirectional") else input_rank(config["layers"], None)
            if kind == "stack" else None)
    if rank is not None:
      return rank
  return default


def output_size(layer: Layer, params: Any, input_size: int, dtype: Any, rank: int) -> int:
  """The size of the last axis of ``layer``'s outputs for inputs of rank
  ``rank`` and last axis ``input_size``: from its ``config`` where that
  states it, else from shapes alone (``jax.eval_shape``, no computation)."""
  config = dict(layer.config)
  cell: Any = config.get("cell")
  if config.get("kind") == "readout":
    return config["output_size"]
  if config.get("kind") in ("rnn", "rnn2d") and cell.output_size is not None:
    return cell.output_size
  dtype = checks.default_float() if dtype is None else dtype
  xs = jax.ShapeDtypeStruct((1,) * (rank - 1) + (input_size,), dtype)
  ys, _ = jax.eval_shape(lambda p, x: layer.apply(p, x), params, xs)
  return ys.shape[-1]
