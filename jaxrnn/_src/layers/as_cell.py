"""`as_cell`: a causal layer stepped one time step at a time."""

from typing import Optional

import jax

from jaxrnn._src.base import Cell, Layer
from jaxrnn._src.layers import common

CAUSAL = "rnn not reversed, readout, and stack of causal layers"


def _needs_whole_sequence(layer: Layer, name: str) -> Optional[str]:
  """Why ``layer`` cannot be stepped (naming it), or None if it is causal."""
  config = dict(layer.config)
  kind = config.get("kind")
  if kind == "stack":
    for k, inner in enumerate(config["layers"]):
      why = _needs_whole_sequence(inner, f"{name}.layers[{k}]")
      if why:
        return why
    return None
  if kind == "readout":
    return None
  if kind == "rnn":
    if config["reverse"]:
      return (f"{name} (rnn, reverse=True) needs the whole sequence: it starts "
              "from the last step")
    return None
  if kind == "bidirectional":
    return (f"{name} (bidirectional) needs the whole sequence: its backward "
            "direction starts from the last step")
  if kind is None:
    return f"{name} (a user layer) has no config that says it is causal"
  return f"{name} ({kind}) needs the whole input: it runs over an image, not step by step"


def _last_output_size(layer: Layer) -> Optional[int]:
  config = dict(layer.config)
  if config.get("kind") == "stack":
    return _last_output_size(config["layers"][-1])
  if config.get("kind") == "rnn":
    return config["cell"].output_size
  return config.get("output_size")


def as_cell(layer: Layer) -> Cell:
  """One time step of a causal layer, as a `Cell`, for decoding and streaming.

  Causal layers are `rnn` (not reversed), `readout`, and a `stack` of
  causal layers. The cell's ``init_params`` and ``init_carry`` are the
  layer's; ``cell_apply(params, carry, x) -> (carry, y)`` runs one step of
  the whole layer: for a stack, each layer's step feeds the next. Its
  meaning is the layer's own on a sequence of one step::

    rank = common.input_rank((layer,))  # of xs; a step's input is one rank less

  def cell_apply(params, carry, x):
      ys, carry = layer.apply(params, x[None], carry=carry)
      return carry, ys[0]

  so stepping through a sequence gives exactly ``layer.apply``'s outputs
  and final carry, with the layer's options as ``apply`` runs them without
  a ``key`` (dropout off, zoneout by its expectation). The carry is
  explicit: start from ``init_carry()``, or from a learned initial carry
  (``params.initial_carry`` of an ``rnn(..., learned_carry=True)``).

  Args:
    layer: a causal `Layer`.

  Returns:
    A `Cell` with ``output_size`` the layer's (where its config records
    it) and ``config`` ``(("kind", "as_cell"), ("layer", layer))``.

  Raises:
    ValueError: a layer inside is reversed, bidirectional, 2-D or a user
      layer; the message names it and says why it needs the whole sequence.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(8)), jaxrnn.readout(5))
    >>> params = net.init_params(jax.random.key(0), 3)
    >>> xs = jax.random.normal(jax.random.key(1), (6, 3))
    >>> step = jaxrnn.as_cell(net)
    >>> carry, ys = jax.lax.scan(lambda c, x: step.cell_apply(params, c, x),
    ...                          step.init_carry(), xs)
    >>> bool(jnp.allclose(ys, net.apply(params, xs)[0], atol=1e-6))
    True
  """
  layer = common.check_layer(layer, "layer")
  why = _needs_whole_sequence(layer, "layer")
  if why:
    raise ValueError(f"layer: as_cell steps causal layers ({CAUSAL}); {why}")

  rank = common.input_rank((layer,))  # of xs; a step's input is one rank less

  def cell_apply(params, carry, x):
    ys, carry = layer.apply(params, jax.tree_util.tree_map(lambda a: a[None], x), carry=carry)
    return carry, jax.tree_util.tree_map(lambda y: y[0], ys)

  return Cell(init_params=layer.init_params, init_carry=layer.init_carry,
              cell_apply=cell_apply, output_size=_last_output_size(layer),
              config=(("kind", "as_cell"), ("layer", layer)),
              input_ndim=1 if rank is None else rank - 1)
