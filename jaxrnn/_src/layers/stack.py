"""`stack`: layer l's outputs are layer l+1's inputs at every step."""

from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.base import Layer
from jaxrnn._src.layers import common


def _output_size(layer: Layer, params: Any, input_size: int, dtype) -> int:
  """The size of ``layer``'s outputs, read from its shapes (no computation)."""
  config = dict(layer.config)
  cell = config.get("cell")
  if config.get("kind") == "rnn" and cell is not None and cell.output_size is not None:
    return cell.output_size  # also for cells over feature maps (conv_lstm)
  dtype = checks.default_float() if dtype is None else dtype
  # One step of a sequence (T, D), or one position of an image (R, C, D).
  try:
    xs = jax.ShapeDtypeStruct((1, input_size), dtype)
    ys, _ = jax.eval_shape(lambda p, x: layer.apply(p, x), params, xs)
  except (ValueError, TypeError):
    xs = jax.ShapeDtypeStruct((1, 1, input_size), dtype)
    ys, _ = jax.eval_shape(lambda p, x: layer.apply(p, x), params, xs)
  return ys.shape[-1]


def stack(*layers: Layer, dropout: float = 0.0) -> Layer:
  """Stacks layers: layer l's outputs are layer l+1's inputs at every step.

  .. math::
    h^{[l]}_t = φ(W^{[l]}_x h^{[l-1]}_t + W^{[l]}_h h^{[l]}_{t-1} + b^{[l]}),
    \\qquad h^{[0]}_t = x_t

  Args:
    *layers: one or more `Layer`s (e.g. `rnn`, `bidirectional`, `readout`).
    dropout: the rate ``p`` in ``[0, 1)`` of dropout on the outputs of
      every layer but the last (PyTorch's ``dropout`` of ``nn.LSTM``):
      inverted dropout, ``y -> y ⊙ m / (1 - p)`` with a fresh mask for
      every step and unit. Only when ``apply`` gets a ``key``; without one
      it is the identity.

  Returns:
    A `Layer` whose params and carry are tuples with one entry per layer.
    ``length``, ``reset`` and ``key`` (split between the layers and the
    dropout masks) apply to every layer; ``reset`` and ``key`` are passed
    on only when given, so user layers without them still stack. 2-D
    layers (`rnn2d`, `multidirectional`) stack the same way, with their
    valid region ``shape=(h, w)`` passed on to every layer when given.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(8)), jaxrnn.readout(2))
    >>> params = net.init_params(jax.random.key(0), 3)
    >>> ys, carries = net.apply(params, jnp.ones((7, 3)), length=5)
    >>> ys.shape, len(carries)
    ((7, 2), 2)
  """
  if not layers:
    raise ValueError("layers: stack expects at least one Layer, got none")
  layers = tuple(common.check_layer(layer, f"layers[{i}]") for i, layer in enumerate(layers))
  dropout = checks.check_rate(dropout, "dropout")
  n = len(layers)

  def init_params(key, input_size, dtype=None):
    size = checks.check_positive_int(input_size, "input_size")
    params = []
    for layer, k in zip(layers, jax.random.split(key, n)):
      p = layer.init_params(k, size, dtype)
      params.append(p)
      size = _output_size(layer, p, size, dtype)
    return tuple(params)

  def init_carry(dtype=None):
    return tuple(layer.init_carry(dtype) for layer in layers)

  def check_entries(value, name):
    if not isinstance(value, (tuple, list)) or len(value) != n:
      got = f"{len(value)} entries" if isinstance(value, (tuple, list)) else type(value).__name__
      raise TypeError(
          f"{name}: stack of {n} layers expects a tuple of {n} entries, got {got}"
      )

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None,
            shape=None):
    check_entries(params, "params")
    if carry is None:
      carry = (None,) * n
    check_entries(carry, "carry")
    keys = [None] * (2 * n)
    if common.check_key(key) is not None:
      keys = list(jax.random.split(key, 2 * n))
    carries = []
    for k, (layer, p, c) in enumerate(zip(layers, params, carry)):
      options = {name: value for name, value in
                 (("reset", reset), ("shape", shape), ("key", keys[k])) if value is not None}
      xs, c = layer.apply(p, xs, length=length, carry=c, **options)
      carries.append(c)
      if dropout and k < n - 1 and keys[n + k] is not None:
        keep = jax.random.bernoulli(keys[n + k], 1 - dropout, xs.shape)
        xs = jnp.where(keep, xs / jnp.asarray(1 - dropout, xs.dtype),
                       jnp.zeros((), xs.dtype))
    return xs, tuple(carries)

  return Layer(init_params=init_params, apply=apply, init_carry=init_carry,
               config=(("kind", "stack"), ("layers", layers), ("dropout", dropout)))
