"""The two value types of jaxrnn: `Cell` (one step) and `Layer` (a sequence).

Both are `NamedTuple`s of pure functions, in the manner of optax's
`GradientTransformation`: a factory closes over hyperparameters and returns
the functions; parameters and carries are plain pytrees passed explicitly.
"""

from typing import Any, Callable, NamedTuple, Optional

Params = Any
Carry = Any


class Cell(NamedTuple):
  """One time step of a recurrent network, for ONE example.

  Attributes:
    init_params: ``init_params(key, input_size, dtype=None) -> params``, a
      typed NamedTuple pytree.
    init_carry: ``init_carry(dtype=None) -> carry``, zeros for one example.
    cell_apply: ``cell_apply(params, carry, x) -> (carry, y)`` with ``x`` of
      shape ``(input_size,)``; the argument order of a ``jax.lax.scan`` body.
    hidden_size: the size H of the state (``None`` if not meaningful).
    output_size: the size of ``y`` (equal to ``hidden_size`` unless the cell
      projects its output; None where it is fixed only by ``init_params``).
    config: static description of the cell as ``((name, value), ...)``
      pairs, e.g. ``(("kind", "lstm"), ("hidden_size", 8), ...)``; read it
      with ``dict(cell.config)``. It describes the cell (for interop and
      printing); no computation depends on it. Empty for user cells.
    input_ndim: the rank of one step's input ``x``: 1 for vectors
      ``(input_size,)`` (the default), 3 for feature maps ``(height, width,
      channels)`` as in `jaxrnn.conv_lstm`. A layer over the cell takes
      ``xs`` of rank ``1 + input_ndim``.

  A user-defined cell needs only the first three fields:
  ``Cell(init_params, init_carry, cell_apply)``; `jaxrnn.rnn` runs it with
  its reference scan. The built-in cells also run a faster engine, found
  from their ``cell_apply``; a cell rebuilt with another ``cell_apply``
  runs the reference scan.
  """

  init_params: Callable[..., Params]
  init_carry: Callable[..., Carry]
  cell_apply: Callable[[Params, Carry, Any], tuple[Carry, Any]]
  hidden_size: Optional[int] = None
  output_size: Optional[int] = None
  config: tuple = ()
  input_ndim: int = 1


class Layer(NamedTuple):
  """A whole sequence, for ONE example; use ``jax.vmap`` for minibatches.

  Attributes:
    init_params: ``init_params(key, input_size, dtype=None) -> params``.
    apply: ``apply(params, xs, *, length=None, carry=None, reset=None,
      key=None) -> (ys, carry)`` with ``xs: (T, input_size)`` and ``ys: (T,
      output_size)``. ``length`` is an integer scalar (traced or not): steps
      ``t >= length`` are padding, their outputs are zero and they never
      change the final carry. ``carry=None`` starts from ``init_carry()``
      (or a learned initial carry). ``reset: (T,)`` bool restarts the carry
      at the first step of each packed segment; ``key`` drives the layer's
      dropout and zoneout (off without one). User layers need only
      ``length`` and ``carry``: `jaxrnn.stack` passes ``reset`` and ``key``
      on only when they are given.
    init_carry: ``init_carry(dtype=None) -> carry``, zeros for one example.
    config: static description as ``((name, value), ...)`` pairs, e.g.
      ``(("kind", "rnn"), ("cell", cell), ("reverse", False))``; read it
      with ``dict(layer.config)``. Empty for user layers.
  """

  init_params: Callable[..., Params]
  apply: Callable[..., tuple[Any, Carry]]
  init_carry: Callable[..., Carry]
  config: tuple = ()
