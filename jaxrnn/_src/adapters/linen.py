"""`RNN`: any jaxrnn layer as a ``flax.linen.Module``."""

from typing import Any, Optional

from jaxrnn._src.adapters import common
from jaxrnn._src.base import Layer

try:
  import flax.linen as nn
except ImportError as err:
  raise common.missing_extra(err, extra="flax", user="jaxrnn.flax") from err


class RNN(nn.Module):
  """Any jaxrnn layer as a Flax linen module, called like ``flax.linen.RNN``.

  The params live under ``variables["params"]["layer"]`` in the layer's own
  structure (its NamedTuples, unchanged), so ``layer.apply`` takes them as
  they are. The batch runs as ``jax.vmap(layer.apply)``: the numbers and the
  padding guarantees are the layer's own (outputs at steps ``t >=
  seq_lengths[b]`` are exactly zero; whatever the padding holds, NaN
  included, never reaches a valid output, a carry or a gradient).

  Attributes:
    layer: a `jaxrnn.Layer` (`jaxrnn.rnn`, `jaxrnn.bidirectional`,
      `jaxrnn.stack`, ...).
    time_major: inputs and outputs are ``(T, B, ...)`` instead of ``(B, T,
      ...)``.
    return_carry: return ``(carry, ys)`` instead of ``ys`` (the order of
      ``flax.linen.RNN``).
    deterministic: when False, the layer's dropout and zoneout draw from the
      ``"dropout"`` RNG stream (one key per call, split into one per
      sequence); when True they are off (their expectation).
    param_dtype: the dtype of the params; None: the layer's default
      (float32, or float64 with ``jax_enable_x64``).

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> from jaxrnn.flax import RNN
    >>> model = RNN(jaxrnn.bidirectional(jaxrnn.gru(4), jaxrnn.gru(4)))
    >>> xs = jnp.ones((2, 5, 3))                           # (B, T, D)
    >>> variables = model.init(jax.random.key(0), xs)
    >>> type(variables["params"]["layer"]).__name__
    'BidirectionalParams'
    >>> ys = model.apply(variables, xs, seq_lengths=jnp.array([5, 2]))
    >>> ys.shape, bool(jnp.all(ys[1, 2:] == 0))
    ((2, 5, 8), True)
  """

  layer: Layer
  time_major: bool = False
  return_carry: bool = False
  deterministic: bool = True
  param_dtype: Any = None

  @nn.compact
  def __call__(
      self,
      xs: Any,
      *,
      seq_lengths: Optional[Any] = None,
      initial_carry: Optional[Any] = None,
      reset: Optional[Any] = None,
      return_carry: Optional[bool] = None,
      time_major: Optional[bool] = None,
      deterministic: Optional[bool] = None,
  ) -> Any:
    """Runs the layer over a batch.

    Args:
      xs: ``(B, T, features)`` (``(T, B, features)`` when time-major).
      seq_lengths: ``(B,)`` integers; steps ``t >= seq_lengths[b]`` are
        padding. None: every step is valid.
      initial_carry: the layer's carry with a leading batch axis ``B``;
        None starts from the layer's initial carry.
      reset: ``(B, T)`` bool (time-major: ``(T, B)``), True at the first
        step of each packed segment: the carry restarts there
        (``layer.apply``'s ``reset``). None: no restarts.
      return_carry, time_major, deterministic: override the attributes of
        the same names (None keeps the attribute).

    Returns:
      ``ys: (B, T, output_size)`` (time-major: ``(T, B, output_size)``), or
      ``(carry, ys)`` with ``return_carry``; ``carry`` has a leading batch
      axis.
    """
    layer = common.check_layer(self.layer)
    return_carry = common.check_flag(return_carry, self.return_carry, "return_carry")
    time_major = common.check_flag(time_major, self.time_major, "time_major")
    deterministic = common.check_flag(deterministic, self.deterministic, "deterministic")
    params = self.param(
        "layer", lambda key, size, dtype: layer.init_params(key, size, dtype),
        xs.shape[-1], self.param_dtype)
    key = None if deterministic else self.make_rng("dropout")
    ys, carry = common.apply_batch(
        layer, params, xs, seq_lengths=seq_lengths, initial_carry=initial_carry, reset=reset,
        key=key, time_major=time_major, owner="jaxrnn.flax.RNN")
    return (carry, ys) if return_carry else ys
