"""`RNN`: any jaxrnn layer as a ``flax.nnx.Module``."""

from typing import Any, Optional

import jax

from jaxrnn._src.adapters import common
from jaxrnn._src.base import Layer

try:
  from flax import nnx
except ImportError as err:
  raise common.missing_extra(err, extra="flax", user="jaxrnn.nnx") from err


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def _value(variable: Any) -> Any:
  get = getattr(variable, "get_value", None)  # .value is deprecated in 0.12
  return get() if get is not None else variable.value


class RNN(nnx.Module):
  """Any jaxrnn layer as a Flax NNX module, called like ``flax.linen.RNN``.

  Every leaf of the layer's params is an ``nnx.Param`` (in the layer's own
  structure, e.g. ``model.params.W_x``), so ``nnx.Optimizer(model, tx,
  wrt=nnx.Param)`` trains it; `layer_params` gives the plain pytree that
  ``layer.apply`` takes. The batch runs as ``jax.vmap(layer.apply)``: the
  numbers and the padding guarantees are the layer's own.

  Dropout and zoneout follow NNX's usual mechanism, as ``nnx.Dropout``: they
  are on when ``deterministic`` is False (``model.train()``,
  ``nnx.view(model, deterministic=False)``, or ``deterministic=False`` in
  the call) and draw one key per call from the ``"dropout"`` stream of the
  ``rngs`` given at construction (or from ``rngs=`` in the call), split
  into one key per sequence. ``model.eval()`` turns them off.

  Args:
    layer: a `jaxrnn.Layer` (`jaxrnn.rnn`, `jaxrnn.bidirectional`,
      `jaxrnn.stack`, ...).
    in_features: the size of the last axis of the inputs.
    time_major: inputs and outputs are ``(T, B, ...)`` instead of ``(B, T,
      ...)``.
    return_carry: return ``(carry, ys)`` instead of ``ys``.
    deterministic: whether dropout and zoneout are off (the default).
    param_dtype: the dtype of the params; None: the layer's default.
    rngs: an ``nnx.Rngs``; its ``"params"`` stream initialises the params
      and a fork of its ``"dropout"`` stream drives dropout (both fall back
      to ``"default"``).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> from flax import nnx
    >>> from jaxrnn.nnx import RNN
    >>> model = RNN(jaxrnn.rnn(jaxrnn.lstm(4)), 3, rngs=nnx.Rngs(0))
    >>> type(model.layer_params()).__name__, model.params.W_x.shape
    ('LSTMParams', (3, 16))
    >>> ys = model(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2]))
    >>> ys.shape, bool(jnp.all(ys[1, 2:] == 0))
    ((2, 5, 4), True)
  """

  def __init__(
      self,
      layer: Layer,
      in_features: int,
      *,
      time_major: bool = False,
      return_carry: bool = False,
      deterministic: bool = True,
      param_dtype: Any = None,
      rngs: Any,
  ):
    if not isinstance(rngs, nnx.Rngs):
      raise TypeError(f"rngs: expected an nnx.Rngs, got {type(rngs).__name__}")
    self.layer = common.check_layer(layer)
    self.in_features = in_features
    self.time_major = common.check_flag(time_major, False, "time_major")
    self.return_carry = common.check_flag(return_carry, False, "return_carry")
    self.deterministic = common.check_flag(deterministic, True, "deterministic")
    params = layer.init_params(rngs.params(), in_features, param_dtype)
    self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, params))
    self.rngs = rngs["dropout"].fork()

  def layer_params(self) -> Any:
    """The layer's params as the plain pytree that ``layer.apply`` takes."""
    return jax.tree_util.tree_map(_value, self.params, is_leaf=_is_variable)

  def set_view(self, deterministic: Optional[bool] = None) -> None:
    """Used by ``nnx.view``: sets ``deterministic`` when given."""
    if deterministic is not None:
      self.deterministic = common.check_flag(deterministic, True, "deterministic")

  def __call__(
      self,
      xs: Any,
      *,
      seq_lengths: Optional[Any] = None,
      initial_carry: Optional[Any] = None,
      reset: Optional[Any] = None,
      return_carry: Optional[bool] = None,
      deterministic: Optional[bool] = None,
      rngs: Any = None,
  ) -> Any:
    """Runs the layer over a batch.

    Args:
      xs: ``(B, T, in_features)`` (``(T, B, in_features)`` when
        time-major).
      seq_lengths: ``(B,)`` integers; steps ``t >= seq_lengths[b]`` are
        padding. None: every step is valid.
      initial_carry: the layer's carry with a leading batch axis ``B``;
        None starts from the layer's initial carry.
      reset: ``(B, T)`` bool (time-major: ``(T, B)``), True at the first
        step of each packed segment: the carry restarts there
        (``layer.apply``'s ``reset``). None: no restarts.
      return_carry, deterministic: override the attributes (None keeps
        them).
      rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or PRNG key used instead of
        the stream kept at construction (only when not deterministic).

    Returns:
      ``ys: (B, T, output_size)`` (time-major: ``(T, B, output_size)``), or
      ``(carry, ys)`` with ``return_carry``; ``carry`` has a leading batch
      axis.
    """
    return_carry = common.check_flag(return_carry, self.return_carry, "return_carry")
    deterministic = common.check_flag(deterministic, self.deterministic, "deterministic")
    key = None
    if not deterministic:
      if rngs is None:
        key = self.rngs()
      elif isinstance(rngs, nnx.Rngs):
        key = rngs["dropout"]()
      elif isinstance(rngs, nnx.RngStream):
        key = rngs()
      else:
        key = rngs
    ys, carry = common.apply_batch(
        self.layer, self.layer_params(), xs, seq_lengths=seq_lengths,
        initial_carry=initial_carry, reset=reset, key=key, time_major=self.time_major,
        owner="jaxrnn.nnx.RNN")
    return (carry, ys) if return_carry else ys
