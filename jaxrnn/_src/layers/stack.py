"""`stack`: layer l's outputs are layer l+1's inputs at every step."""

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.base import Layer
from jaxrnn._src.layers import common


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
  for i, layer in enumerate(layers[:-1]):
    if dict(layer.config).get("return_carries"):
      raise ValueError(
          f"layers[{i}]: an rnn with return_carries=True outputs (ys, carries), which no "
          "layer takes as inputs; it can only be the last layer of a stack")
  dropout = checks.check_rate(dropout, "dropout")
  n = len(layers)

  # Sequences (T, ..., D) or images (R, C, D): every layer keeps the rank.
  rank = common.input_rank(layers)

  def init_params(key, input_size, dtype=None):
    size = checks.check_positive_int(input_size, "input_size")
    params = []
    for layer, k in zip(layers, jax.random.split(key, n)):
      p = layer.init_params(k, size, dtype)
      params.append(p)
      size = common.output_size(layer, p, size, dtype, rank)
    return tuple(params)

  def init_carry(dtype=None):
    return tuple(layer.init_carry(dtype) for layer in layers)

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None,
            shape=None):
    carry = (None,) * n if carry is None else carry
    for name, value in (("params", params), ("carry", carry)):
      checks.check_entries(value, n, name, f"stack of {n} layers")
    keys = [None] * (2 * n) if common.check_key(key) is None else jax.random.split(key, 2 * n)
    carries = []
    for k, (layer, p, c) in enumerate(zip(layers, params, carry)):
      options = {name: value for name, value in
                 (("reset", reset), ("shape", shape), ("key", keys[k])) if value is not None}
      try:
        xs, c = layer.apply(p, xs, length=length, carry=c, **options)
      except (ValueError, TypeError) as err:
        # From layer 1 on, the inputs are inner outputs: the message names the layer.
        if k and type(err) in (ValueError, TypeError) and len(err.args) == 1:
          err.args = (f"layers[{k}] ({dict(layer.config).get('kind', 'user layer')}): {err}",)
        raise
      carries.append(c)
      if dropout and k < n - 1 and keys[n + k] is not None:
        keep = jax.random.bernoulli(keys[n + k], 1 - dropout, xs.shape)
        xs = jnp.where(keep, xs / jnp.asarray(1 - dropout, xs.dtype),
                       jnp.zeros((), xs.dtype))
    return xs, tuple(carries)

  return Layer(init_params=init_params, apply=apply, init_carry=init_carry,
               config=(("kind", "stack"), ("layers", layers), ("dropout", dropout)))
