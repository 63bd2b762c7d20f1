"""`RNN`: any jaxrnn layer as an ``equinox.Module``."""

from typing import Any, Optional

from jaxrnn._src.adapters import common
from jaxrnn._src.base import Layer

try:
  import equinox as eqx
except ImportError as err:
  raise common.missing_extra(err, extra="equinox", user="jaxrnn.equinox") from err


class RNN(eqx.Module):
  """Any jaxrnn layer as an Equinox module, on ONE sequence (vmap for batches).

  The layer's params pytree is the array field ``params`` (so
  ``eqx.filter_grad`` and ``eqx.filter_jit`` see exactly those arrays) and
  the layer itself is a static field. Calling the module is calling
  ``layer.apply(params, ...)``: same numbers, same padding guarantees.

  Dropout and zoneout follow Equinox's convention, as ``eqx.nn.Dropout``:
  they are on when a ``key`` is given, unless ``inference`` is True (set it
  for a whole model with ``eqx.nn.inference_mode``).

  Args:
    layer: a `jaxrnn.Layer` (`jaxrnn.rnn`, `jaxrnn.bidirectional`,
      `jaxrnn.stack`, ...).
    in_features: the size of the last axis of the inputs.
    key: the PRNG key that initialises the params.
    dtype: the dtype of the params; None: the layer's default.
    inference: whether dropout and zoneout are off even with a key.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> from jaxrnn.equinox import RNN
    >>> model = RNN(jaxrnn.rnn(jaxrnn.gru(4)), 3, key=jax.random.key(0))
    >>> ys, h = model(jnp.ones((5, 3)), length=2)          # ONE sequence
    >>> ys.shape, bool(jnp.all(ys[2:] == 0))
    ((5, 4), True)
    >>> ys, h = jax.vmap(model)(jnp.ones((8, 5, 3)))       # a batch
    >>> ys.shape, h.shape
    ((8, 5, 4), (8, 4))
  """

  params: Any
  layer: Layer = eqx.field(static=True)
  inference: bool = False

  def __init__(
      self,
      layer: Layer,
      in_features: int,
      *,
      key: Any,
      dtype: Any = None,
      inference: bool = False,
  ):
    self.layer = common.check_layer(layer)
    self.params = layer.init_params(key, in_features, dtype)
    self.inference = common.check_flag(inference, False, "inference")

  def __call__(
      self,
      xs: Any,
      *,
      length: Optional[Any] = None,
      carry: Optional[Any] = None,
      reset: Optional[Any] = None,
      key: Optional[Any] = None,
      inference: Optional[bool] = None,
  ) -> tuple[Any, Any]:
    """Runs the layer over ONE sequence: ``layer.apply(params, xs, ...)``.

    Args:
      xs: ``(T, in_features)``.
      length: an integer scalar; steps ``t >= length`` are padding.
      carry: the layer's carry for this sequence; None: its initial carry.
      reset: ``(T,)`` bool, True at the first step of each packed segment
        (``layer.apply``'s ``reset``), or None.
      key: a PRNG key for dropout and zoneout (off without one).
      inference: overrides the ``inference`` field (None keeps it).

    Returns:
      ``(ys, carry)`` as ``layer.apply``: ``ys: (T, output_size)``, exactly
      zero at padded steps, and the carry after the last valid step.
    """
    if common.check_flag(inference, self.inference, "inference"):
      key = None
    options = {} if reset is None else {"reset": reset}
    return self.layer.apply(self.params, xs, length=length, carry=carry, key=key, **options)
