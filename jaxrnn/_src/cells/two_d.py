"""Two-dimensional recurrent cells: one position of ONE image, as pure functions.

A 2-D cell sees the input ``x`` at position ``(i, j)`` and the carries of two
predecessors, the position above ``(i-1, j)`` and the one to the left
``(i, j-1)``::

  cell_apply(params, (carry_up, carry_left), x) -> (carry, y)

Weight layout: the 1-D cells' two-matrix layout with one recurrent matrix
per direction, gates fused along the last axis::

  W_x: (input_size, G * H)   W_up, W_left: (H, G * H)   b_x, b_h: (G * H,)

`jaxrnn.rnn2d` runs such a cell over an image.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.lstm import LSTMState
from jaxrnn._src.engine import hooks

Array = jax.Array


class LSTM2DParams(NamedTuple):
  """Parameters of `lstm2d`; gates fused in the order (i, f_up, f_left, g, o)."""

  W_x: Array  # (input_size, 5H)
  W_up: Array  # (H, 5H), multiplies h of the position above
  W_left: Array  # (H, 5H), multiplies h of the position to the left
  b_x: Array  # (5H,)
  b_h: Array  # (5H,)


class Elman2DParams(NamedTuple):
  """Parameters of `elman2d`."""

  W_x: Array  # (input_size, H)
  W_up: Array  # (H, H)
  W_left: Array  # (H, H)
  b_x: Array  # (H,)
  b_h: Array  # (H,)


def _init(key, input_size, dtype, *, hidden_size, num_gates, input_init,
          recurrent_init, bias_init):
  """Draws ``W_x``, ``W_up``, ``W_left``, ``b_x`` and ``b_h``."""
  input_size, dtype = checks.init_args(input_size, dtype)
  k_x, k_up, k_left, k_bx, k_bh = jax.random.split(key, 5)
  gh = num_gates * hidden_size
  return (
      inits.draw(input_init, k_x, (input_size, gh), dtype),
      inits.per_gate(recurrent_init, k_up, hidden_size, hidden_size, num_gates, dtype),
      inits.per_gate(recurrent_init, k_left, hidden_size, hidden_size, num_gates, dtype),
      inits.draw(bias_init, k_bx, (gh,), dtype),
      inits.draw(bias_init, k_bh, (gh,), dtype),
  )


def _check_params(params, params_type, owner, hidden_size, num_gates):
  checks.check_params(params, params_type, owner)
  gh = num_gates * hidden_size
  checks.check_input_matrix(params.W_x, gh, "params.W_x", owner)
  for name, shape in (("W_up", (hidden_size, gh)), ("W_left", (hidden_size, gh)),
                      ("b_x", (gh,)), ("b_h", (gh,))):
    checks.check_array_shape(getattr(params, name), shape, f"params.{name}", owner)


def _check_step(params, carries, x, reference_carry, owner):
  """Checks one position's input and its pair of neighbour carries."""
  # A NamedTuple is one carry (e.g. LSTMState(h, c)), never the pair.
  if (not isinstance(carries, (tuple, list)) or hasattr(carries, "_fields")
      or len(carries) != 2):
    got = (f"{len(carries)} entries" if type(carries) in (tuple, list)
           else f"one {type(carries).__name__}")
    raise TypeError(
        f"carries: {owner} expects a pair (carry_up, carry_left), got {got}")
  for k, name in enumerate(("carry_up", "carry_left")):
    checks.check_carry(carries[k], reference_carry, owner, f"carries[{k}] ({name})")
  checks.check_array_shape(x, (np.shape(params.W_x)[0],), "x", owner)
  checks.check_floating(x, "x")
  return carries


def _build(*, config, params_type, num_gates, init_params, init_carry, equation, hidden):
  """A 2-D `Cell` whose ``cell_apply`` checks its arguments and runs
  ``equation(params, carry_up, carry_left, x) -> (carry, y)``, registered
  with its hooks: the params check, the input size they record (``W_x``'s
  rows) and ``hidden(carry)``, the hidden part of a carry."""
  H = config["hidden_size"]
  owner = f"{config['kind']}(hidden_size={H})"

  def check(params):
    _check_params(params, params_type, owner, H, num_gates)

  def cell_apply(params, carries, x):
    check(params)
    up, left = _check_step(params, carries, x, init_carry(), owner)
    return equation(params, up, left, x)

  hooks.register(cell_apply, hooks.Hooks(
      check=check, input_size=lambda params: params.W_x.shape[0], hidden=hidden))
  return Cell(init_params=init_params, init_carry=init_carry, cell_apply=cell_apply,
              hidden_size=H, output_size=H, config=tuple(config.items()))


def _preactivation(params, h_up, h_left, x):
  """``x W_x + b_x + h_up W_up + h_left W_left + b_h``."""
  return (checks.matmul(x, params.W_x) + params.b_x
          + checks.matmul(h_up, params.W_up) + checks.matmul(h_left, params.W_left)
          + params.b_h)


def lstm2d(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The two-dimensional LSTM cell of Graves, Fernández & Schmidhuber (2007).

  One input gate, one output gate and one forget gate per dimension; at
  position ``(i, j)``, with ``up = (i-1, j)`` and ``left = (i, j-1)``:

  .. math::
    z &= x W_x + b_x + h_{up} W_{up} + h_{left} W_{left} + b_h
      = [z^i, z^{f_{up}}, z^{f_{left}}, z^g, z^o] \\
    i &= σ(z^i), \quad f_{up} = σ(z^{f_{up}}),
      \quad f_{left} = σ(z^{f_{left}}), \quad g = \tanh(z^g),
      \quad o = σ(z^o) \\
    c &= f_{up} ⊙ c_{up} + f_{left} ⊙ c_{left} + i ⊙ g \\
    h &= o ⊙ \tanh(c), \qquad y = h

  The cell has no peepholes (the paper's cell has them, as the 1-D `lstm`
  has them only on request).

  Args:
    hidden_size: H, the size of the cell state.
    forget_bias: added to both forget-gate slices of ``b_x`` at
      initialisation, as `lstm` does.
    input_init, recurrent_init, bias_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, each ``(H, H)`` gate block of
      ``W_up`` and ``W_left``, and the biases.

  Returns:
    A `Cell` with params `LSTM2DParams` and carry `LSTMState` ``(h: (H,),
    c: (H,))``; ``cell_apply(params, (carry_up, carry_left), x)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.lstm2d(4)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_x.shape, params.W_up.shape, params.W_left.shape
    ((3, 20), (4, 20), (4, 20))
    >>> zero = cell.init_carry()
    >>> carry, y = cell.cell_apply(params, (zero, zero), jnp.ones(3))
    >>> carry.c.shape, bool(jnp.all(y == carry.h))
    ((4,), True)

  References:
    Graves, Fernández & Schmidhuber, Multi-Dimensional Recurrent Neural
    Networks, ICANN 2007 (arXiv:0705.2011).
  """
  H = checks.check_positive_int(hidden_size, "hidden_size")
  # σ(z) = (1 + tanh(z / 2)) / 2: one tanh over all 5H pre-activations, as
  # `lstm` does (one nonlinearity over a contiguous array vectorises).
  gate_scale = np.repeat(np.array([0.5, 0.5, 0.5, 1.0, 0.5]), H)

  def init_params(key, input_size, dtype=None):
    W_x, W_up, W_left, b_x, b_h = _init(
        key, input_size, dtype, hidden_size=H, num_gates=5, input_init=input_init,
        recurrent_init=recurrent_init, bias_init=bias_init)
    b_x = b_x.at[H:3 * H].add(jnp.asarray(forget_bias, b_x.dtype))
    return LSTM2DParams(W_x, W_up, W_left, b_x, b_h)

  def equation(params, up, left, x):
    z = _preactivation(params, up.h, left.h, x)
    t = jnp.tanh(z * jnp.asarray(gate_scale, z.dtype))
    i, f_up, f_left, _, o = jnp.split(0.5 * t + 0.5, 5)
    g = jnp.split(t, 5)[3]
    c = f_up * up.c + f_left * left.c + i * g
    h = o * jnp.tanh(c)
    return LSTMState(h, c), h

  return _build(config=dict(kind="lstm2d", hidden_size=H, forget_bias=forget_bias),
                params_type=LSTM2DParams, num_gates=5, init_params=init_params,
                init_carry=common.zeros_carry((H,), (H,), make=LSTMState),
                equation=equation, hidden=lambda carry: carry.h)


def elman2d(
    hidden_size: int,
    *,
    activation: common.ActivationArg = "tanh",
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The two-dimensional Elman (simple) recurrent cell.

  .. math::
    h = φ(x W_x + b_x + h_{up} W_{up} + h_{left} W_{left} + b_h),
    \qquad y = h

  Args:
    hidden_size: H, the size of the state.
    activation: φ: ``"tanh"``, ``"relu"`` or a callable on arrays.
    input_init, recurrent_init, bias_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, ``W_up`` and ``W_left``
      (each ``(H, H)``), and the biases.

  Returns:
    A `Cell` with params `Elman2DParams` and carry ``h: (H,)``;
    ``cell_apply(params, (h_up, h_left), x)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.elman2d(4, activation="relu")
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> h, y = cell.cell_apply(params, (cell.init_carry(), cell.init_carry()),
    ...                        jnp.ones(3))
    >>> h.shape, bool(jnp.all(h >= 0))
    ((4,), True)
  """
  H = checks.check_positive_int(hidden_size, "hidden_size")
  activation = common.activation_name(activation)
  phi = common.activation_function(activation)

  def init_params(key, input_size, dtype=None):
    return Elman2DParams(*_init(
        key, input_size, dtype, hidden_size=H, num_gates=1, input_init=input_init,
        recurrent_init=recurrent_init, bias_init=bias_init))

  def equation(params, h_up, h_left, x):
    h = phi(_preactivation(params, h_up, h_left, x))
    return h, h

  return _build(config=dict(kind="elman2d", hidden_size=H, activation=activation),
                params_type=Elman2DParams, num_gates=1, init_params=init_params,
                init_carry=common.zeros_carry((H,)), equation=equation,
                hidden=lambda carry: carry)
