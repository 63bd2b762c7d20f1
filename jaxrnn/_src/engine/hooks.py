"""What the package knows about a built-in cell, kept out of the public `Cell`.

A `Cell` holds the user's contract only. For the built-in cells the layers
also read the input size that params record and the hidden part of a
carry (`input_size_of`, `hidden_of`), and the engine steps the equation
split at its recurrent product. These live here, in a private registry
keyed by the cell's ``cell_apply`` function. A cell the user builds (or
rebuilds with another ``cell_apply``) has no entry and runs the reference
path: a masked ``lax.scan`` of ``cell_apply``.
"""

import weakref
from typing import Any, Callable, NamedTuple, Optional

import jax

from jaxrnn._src.engine import window as window_lib

Array = jax.Array


class Product(NamedTuple):
  """A step of the form ``pointwise(p, c, zx_t, recur(p, hidden(c)))``.

  ``recur(params, h) -> zh`` is the recurrent product (``h @ W_h``, or a
  convolution), linear in ``h`` and in the weights it reads; it accepts any
  leading axes on ``h``, so that ``recur(dparams, hiddens)`` computes the
  weights' share of every step's tangent as one product.
  ``pointwise(params, carry, zx_t, zh_t) -> (carry, y, residuals)`` is the
  rest of the equation. ``tangent(params, h_tm1, residuals, dparams,
  dcarry, dzx_t, dzh_t) -> (dcarry, dy)``, where given, is its JVP written
  by hand, linear in the tangents, with every product taking a tangent
  first, so that JAX's transpose of it is a backward step that recomputes
  nothing; it sits beside its equation and is tested against ``jax.jvp`` of
  ``pointwise``. Without one the engine differentiates ``pointwise`` itself.
  ``summed``: ``pointwise`` reads ``zx_t`` and ``zh_t`` only through their
  sum, so the tangent scan takes one pre-activation input per step (and its
  transpose, the backward pass, emits one cotangent per step instead of
  two equal ones). ``narrow_hoist``: the narrow form of the inference loop
  (`EngineSettings.narrow_max_batch`) projects every step's input before
  the loop (measured per cell, benchmarks/README.md).
  """

  recur: Callable[[Any, Array], Array]
  hidden: Callable[[Any], Array]
  pointwise: Callable[..., tuple[Any, Array, Any]]
  tangent: Optional[Callable[..., tuple[Any, Array]]] = None
  summed: bool = False
  narrow_hoist: bool = True


class Linear(NamedTuple):
  """A recurrence ``h_t = a_t ⊙ h_{t-1} + b_t`` with gates from the input.

  ``coefficients(params, zx) -> (a, b)`` maps projected inputs ``zx: (T,
  ...)`` to ``a, b: (T, N)`` (complex for the LRU); ``to_state(carry) -> h``
  and ``from_state(h) -> carry`` convert the carry; ``outputs(params, hs,
  zx) -> ys`` maps the states to outputs. ``restart(params, zx) -> (a,
  b)``, where given, are the coefficients of a segment's first step, which
  starts from the initial carry (`rg_lru`: recurrentgemma's reset, ``a_t =
  0`` before its normaliser); None: ``coefficients``, as on every step.
  ``window``, where given, is a short causal convolution before the
  coefficients (`window.Window`, `mamba`): ``coefficients`` and
  ``outputs`` then read its ``convolve``'s output, and ``to_state`` and
  ``from_state`` the carry without its buffer.
  """

  coefficients: Callable[[Any, Array], tuple[Array, Array]]
  to_state: Callable[[Any], Array]
  from_state: Callable[[Array], Any]
  outputs: Callable[[Any, Array, Array], Array]
  restart: Optional[Callable[[Any, Array], tuple[Array, Array]]] = None
  window: Optional[window_lib.Window] = None
  name: str = ""  # the cell's key in `EngineSettings.parallel_min_steps`

  def step(self, params, carry, zx_t, *, restart=False):
    """One step, ``(carry, y)``; ``restart``: a segment's first step."""
    buffer = None
    if self.window is not None:  # the window: the carry's buffer, then this input
      zx_t, carry, buffer = self.window.step(params, carry, zx_t)
    coefficients = self.restart if restart and self.restart is not None else self.coefficients
    a_t, b_t = coefficients(params, zx_t)
    h_t = a_t * self.to_state(carry).astype(b_t.dtype) + b_t
    carry = self.from_state(h_t)
    if buffer is not None:
      carry = self.window.join(buffer, carry)
    return carry, self.outputs(params, h_t, zx_t)


class Chunkwise(NamedTuple):
  """A matrix memory with stabilised exponential gates from the input alone.

  Per head, from a query and key ``q_t, k_t: (d,)``, a value ``v_t: (e,)``
  and the scalar gates ``ĩ_t`` and ``log f_t``, all computed from the
  input alone (`mlstm`)::

    m_t = max(log f_t + m_{t-1}, ĩ_t)
    C_t = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(ĩ_t - m_t) k_t v_t^T
    n_t = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(ĩ_t - m_t) k_t
    h_t = readout(q_t C_t, q_t · n_t, m_t)

  The stabiliser ``m`` follows a max-plus recurrence of the inputs and
  ``(C, n)`` a linear one given ``m``, so `chunkwise.run` evaluates chunks
  of steps with matrix products. ``gates(params, zx) -> (q, k, v, i,
  log_f)`` maps projected inputs ``zx`` (any leading axes, the cell's
  pytree) to ``(..., K, d)``, ``(..., K, d)``, ``(..., K, e)``, ``(..., K)``
  and ``(..., K)`` (K heads);
  ``readout(numerator (..., K, e), denominator (..., K), m (..., K)) -> h
  (..., K, e)``; ``outputs(params, h, zx) -> ys``; ``to_state(carry) -> (C,
  n, m)`` and ``from_state(C, n, m) -> carry`` convert the carry.
  ``chunk_size``: the steps per chunk; ``name``: the cell's key in
  `EngineSettings.parallel_min_steps`.
  """

  gates: Callable[[Any, Array], tuple[Array, Array, Array, Array, Array]]
  readout: Callable[[Array, Array, Array], Array]
  outputs: Callable[[Any, Array, Array], Array]
  to_state: Callable[[Any], tuple[Array, Array, Array]]
  from_state: Callable[[Array, Array, Array], Any]
  chunk_size: int = 64
  name: str = ""


class Hooks(NamedTuple):
  """What the package knows about one built-in cell beyond its contract.

  Every built-in cell has ``check(params)``, which validates params;
  ``input_size(params) -> int``, the input size its checked params record
  (what ``init_params`` took); and ``hidden(carry)``, the hidden part of a
  carry: the state that enters the recurrent product and that the cell
  outputs, but for `lru` (an LSTM's ``h``; the carry itself where the carry
  is one state). The rest is how `engine.run` steps a 1-D cell, None for
  the 2-D cells:
  ``check_inputs(params, xs, ndim)`` validates inputs whose last axes are
  one step's (``ndim``: the rank of one step, or None for any leading
  axes); ``project(params, xs) -> zx`` is the input part of the step for
  any leading axes (it checks both); ``step(params, carry, zx_t, h_mask) ->
  (carry, y)`` is the rest, with an optional variational dropout mask on
  the recurrent input. For every 1-D cell ``cell_apply(p, c, x) == step(p,
  c, project(p, x), None)``. ``product``, ``linear`` and ``chunkwise`` are
  the decompositions the fast paths use.
  """

  check: Callable[[Any], None]
  input_size: Callable[[Any], int]
  hidden: Callable[[Any], Any]
  check_inputs: Optional[Callable[[Any, Array, Optional[int]], None]] = None
  project: Optional[Callable[[Any, Array], Array]] = None
  step: Optional[Callable[..., tuple[Any, Array]]] = None
  product: Optional[Product] = None
  linear: Optional[Linear] = None
  chunkwise: Optional[Chunkwise] = None


_REGISTRY: "weakref.WeakKeyDictionary[Callable, Hooks]" = weakref.WeakKeyDictionary()


def register(cell_apply: Callable, hooks: Hooks) -> None:
  _REGISTRY[cell_apply] = hooks


def hooks_of(cell, *, stepped: bool = True) -> Optional[Hooks]:
  """The hooks of a built-in cell; None for a user cell and, unless
  ``stepped=False``, for a cell that `engine.run` cannot step (no
  ``step``: the 2-D cells)."""
  try:
    hooks = _REGISTRY.get(cell.cell_apply)
  except TypeError:  # not weak-referenceable: a user callable
    return None
  return None if hooks is None or (stepped and hooks.step is None) else hooks


def input_size_of(cell, params) -> Optional[int]:
  """The input size that ``params`` of a built-in cell record, after the
  cell's check of them; None for a user cell (its params are opaque)."""
  hooks = hooks_of(cell, stepped=False)
  if hooks is None:
    return None
  hooks.check(params)
  return hooks.input_size(params)


def hidden_of(cell, carry) -> Any:
  """The hidden part of ``carry`` (or of its shapes, from
  ``jax.eval_shape``): by the cell's hook, and for a user cell the carry
  itself (`jaxrnn.rnn`'s contract for zoneout)."""
  hooks = hooks_of(cell, stepped=False)
  return carry if hooks is None else hooks.hidden(carry)
