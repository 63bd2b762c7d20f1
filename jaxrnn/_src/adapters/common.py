"""What the framework adapters share: the lazy import and the batched apply.

Every adapter runs exactly ``jax.vmap(layer.apply, in_axes=(None, 0))`` over
the batch, so its numbers and padding guarantees are the layer's own.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src.base import Cell, Layer


def missing_extra(err: ImportError, *, extra: str, user: str) -> ImportError:
  """The ImportError to raise when a framework is missing: it names the extra.

  Args:
    err: the ImportError raised by importing the framework.
    extra: the jaxrnn extra that installs it, e.g. ``"flax"``.
    user: the jaxrnn module that needs it, e.g. ``"jaxrnn.flax"``.

  Returns:
    An ImportError to raise ``from err``.

  Example:
    >>> from jaxrnn._src.adapters import common
    >>> try:
    ...   import no_such_framework
    ... except ImportError as err:
    ...   print(common.missing_extra(err, extra="flax", user="jaxrnn.flax"))
    jaxrnn.flax needs no_such_framework, which is not installed: pip install 'jaxrnn[flax]' (...)
  """
  name = (getattr(err, "name", None) or "its framework").split(".")[0]
  return ImportError(
      f"{user} needs {name}, which is not installed: pip install "
      f"'jaxrnn[{extra}]' ({err})")


def check_layer(layer: Any, name: str = "layer") -> Layer:
  """Returns ``layer`` if it is a `jaxrnn.Layer`, else raises TypeError."""
  if isinstance(layer, Cell):
    raise TypeError(
        f"{name}: expected a jaxrnn.Layer, got a jaxrnn.Cell; wrap it as "
        "jaxrnn.rnn(cell)")
  if not isinstance(layer, Layer):
    raise TypeError(
        f"{name}: expected a jaxrnn.Layer (jaxrnn.rnn, bidirectional, stack, "
        f"...), got {type(layer).__name__}")
  return layer


def apply_batch(
    layer: Layer,
    params: Any,
    xs: Any,
    *,
    seq_lengths: Optional[Any] = None,
    initial_carry: Optional[Any] = None,
    reset: Optional[Any] = None,
    key: Optional[Any] = None,
    time_major: bool = False,
    owner: str,
) -> tuple[Any, Any]:
  """``jax.vmap(layer.apply)`` over a batch; one PRNG key per sequence.

  Args:
    layer: a `jaxrnn.Layer`.
    params: the layer's params (shared by the batch).
    xs: ``(B, T, ...)``, or ``(T, B, ...)`` when ``time_major``.
    seq_lengths: ``(B,)`` integers, or None (every step valid).
    initial_carry: the layer's carry with a leading batch axis, or None.
    reset: ``(B, T)`` bool (``(T, B)`` when ``time_major``), True at the
      first step of each packed segment, or None.
    key: one PRNG key for the batch (split into ``B``), or None.
    time_major: whether time is axis 0 of ``xs`` and of the outputs.
    owner: the adapter's name, for error messages.

  Returns:
    ``(ys, carry)``: ``ys`` laid out as ``xs`` (exactly zero at padded
    steps), ``carry`` with a leading batch axis.
  """
  shape = np.shape(xs)
  if len(shape) < 3:
    layout = "(T, B, features)" if time_major else "(B, T, features)"
    raise ValueError(
        f"xs: {owner} expects a batch of shape {layout}, got shape "
        f"{tuple(shape)}; for ONE sequence call layer.apply directly")
  if time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  batch = np.shape(xs)[0]
  options = {}
  if seq_lengths is not None:
    if np.shape(seq_lengths) != (batch,):
      raise ValueError(
          f"seq_lengths: {owner} expects shape (B,) = ({batch},), got shape "
          f"{tuple(np.shape(seq_lengths))}")
    options["length"] = seq_lengths
  if initial_carry is not None:
    options["carry"] = initial_carry
  if reset is not None:
    if time_major:
      reset = jnp.swapaxes(reset, 0, 1)
    if np.shape(reset) != np.shape(xs)[:2]:
      raise ValueError(
          f"reset: {owner} expects shape {'(T, B)' if time_major else '(B, T)'} like xs' "
          f"leading axes, got shape {tuple(np.shape(reset))}")
    options["reset"] = reset
  if key is not None:
    options["key"] = jax.random.split(key, batch)
  ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, **options)
  if time_major:
    ys = jax.tree_util.tree_map(lambda y: jnp.swapaxes(y, 0, 1), ys)
  return ys, carry


def check_flag(value: Any, default: bool, name: str) -> bool:
  """``default`` when ``value`` is None, else ``value`` checked as a bool."""
  return default if value is None else checks.check_bool(value, name)
