"""`bidirectional`: a forward and a reversed scan over the same sequence."""

from typing import Any, Callable, NamedTuple, Union

import jax

from jaxrnn._src import checks
from jaxrnn._src.base import Cell, Layer
from jaxrnn._src.layers import common
from jaxrnn._src.layers.rnn import rnn

Array = jax.Array


class BidirectionalParams(NamedTuple):
  """Parameters of `bidirectional`: one set per direction."""

  forward: Any
  backward: Any


class BidirectionalCarry(NamedTuple):
  """Carry of `bidirectional`: the final carry of each direction."""

  forward: Any
  backward: Any


def bidirectional(
    forward: Cell,
    backward: Cell,
    *,
    merge: Union[str, Callable[[Array, Array], Array]] = "concat",
    **rnn_options,
) -> Layer:
  """Runs ``forward`` over the sequence and ``backward`` by a reversed scan.

  The backward cell sees ``xs[length-1], ..., xs[0]`` (connections that go
  backward in time) and its outputs are aligned with the inputs, so
  ``ys[t]`` merges both directions' outputs at step ``t``.

  Args:
    forward: the `Cell` run forward in time.
    backward: the `Cell` run backward in time.
    merge: how outputs of the two directions combine at each step:
      ``"concat"`` (``(T, O_f + O_b)``), ``"sum"``, ``"mean"``, ``"mul"`` or
      a callable ``merge(y_forward, y_backward)`` on ``(T, O)`` arrays.
    **rnn_options: options of `rnn` (``method``, ``unroll``, ``remat``,
      ``recurrent_dropout``, ``zoneout``, ``learned_carry``), passed to both
      directions.

  Returns:
    A `Layer` with params `BidirectionalParams` and carry
    `BidirectionalCarry`. ``apply`` takes the keywords of `rnn`'s apply:
    with ``reset`` each direction restarts at segment boundaries (the
    backward scan at each segment's last step), and ``key`` is split
    between the directions.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.bidirectional(jaxrnn.lstm(3), jaxrnn.lstm(3))
    >>> params = layer.init_params(jax.random.key(0), 2)
    >>> ys, carry = layer.apply(params, jnp.ones((5, 2)), length=3)
    >>> ys.shape, bool(jnp.all(ys[3:] == 0))
    ((5, 6), True)
  """
  forward = common.check_cell(forward, "forward")
  backward = common.check_cell(backward, "backward")
  merge_fn = common.merge_function(merge)
  fwd = rnn(forward, **rnn_options)
  bwd = rnn(backward, reverse=True, **rnn_options)

  def init_params(key, input_size, dtype=None):
    k_f, k_b = jax.random.split(key)
    return BidirectionalParams(
        fwd.init_params(k_f, input_size, dtype), bwd.init_params(k_b, input_size, dtype))

  def init_carry(dtype=None):
    return BidirectionalCarry(fwd.init_carry(dtype), bwd.init_carry(dtype))

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    checks.check_params(params, BidirectionalParams, "bidirectional")
    if carry is None:
      carry = BidirectionalCarry(None, None)
    elif not isinstance(carry, BidirectionalCarry):
      raise TypeError(
          "carry: bidirectional expects a BidirectionalCarry(forward, "
          f"backward) or None, got {type(carry).__name__}")
    k_f = k_b = None
    if common.check_key(key) is not None:
      k_f, k_b = jax.random.split(key)
    ys_f, c_f = fwd.apply(params.forward, xs, length=length, carry=carry.forward,
                          reset=reset, key=k_f)
    ys_b, c_b = bwd.apply(params.backward, xs, length=length, carry=carry.backward,
                          reset=reset, key=k_b)
    ys = merge_fn(ys_f, ys_b)
    if callable(merge):
      # A user merge may map (0, 0) to something else: re-zero the padding.
      ys = common.mask_steps(ys, checks.check_length(length, xs.shape[0]))
    return ys, BidirectionalCarry(c_f, c_b)

  return Layer(
      init_params=init_params, apply=apply, init_carry=init_carry,
      config=(("kind", "bidirectional"), ("forward", forward),
              ("backward", backward), ("merge", merge),
              ("rnn_options", tuple(sorted(rnn_options.items())))))
