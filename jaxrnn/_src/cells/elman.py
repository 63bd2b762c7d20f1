"""The Elman (simple) recurrent cell."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.engine import hooks

Array = jax.Array


class ElmanParams(NamedTuple):
  """Parameters of `elman`: ``h_t = φ(x_t W_x + b_x + h_{t-1} W_h + b_h)``."""

  W_x: Array  # (input_size, H)
  W_h: Array  # (H, H)
  b_x: Optional[Array]  # (H,), None when bias=False
  b_h: Optional[Array]  # (H,), None when bias=False


def elman(
    hidden_size: int,
    *,
    activation: common.ActivationArg = "tanh",
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The Elman (simple) recurrent cell.

  .. math::
    h_t = φ(x_t W_x + b_x + h_{t-1} W_h + b_h), \qquad y_t = h_t

  Args:
    hidden_size: H, the size of the state.
    activation: φ: ``"tanh"``, ``"relu"`` or a callable on arrays.
      ``jnp.tanh``, ``jax.lax.tanh`` and ``jax.nn.relu`` count as
      ``"tanh"`` and ``"relu"``, whose derivatives the fused scan of
      `jaxrnn.rnn` has written out; other callables are differentiated by
      JAX.
    bias: whether the cell has the biases ``b_x`` and ``b_h``.
    input_init, recurrent_init, bias_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, each ``(H, H)`` block of
      ``W_h`` and the biases.

  Returns:
    A `Cell` with params `ElmanParams` and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.elman(4)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> h, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> h.shape, bool(jnp.all(h == y))
    ((4,), True)
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  bias = checks.check_bool(bias, "bias")
  activation = common.activation_name(activation)
  phi = common.activation_function(activation)
  H = hidden_size
  owner = f"elman(hidden_size={H})"

  def init_params(key, input_size, dtype=None):
    return ElmanParams(*common.init_gated(
        key, input_size, dtype, (input_init, recurrent_init, bias_init),
        hidden_size=H, rows_h=H, num_gates=1, bias=bias))

  def check(params):
    common.check_gated(params, ElmanParams, owner, H, H, 1)

  def project(params, xs):
    # Both biases are plain additive terms: they join the input projection.
    return common.add(checks.matmul(xs, params.W_x),
                      common.bias_sum(params.b_x, params.b_h))

  # The equation.
  def pointwise(params, h_tm1, zx_t, zh_t):
    del params, h_tm1
    h_t = phi(zx_t + zh_t)
    # relu keeps its mask, so the tangent needs no comparison of primals.
    return h_t, h_t, (h_t > 0 if activation == "relu" else h_t)

  # Its tangent, tested against jax.jvp(pointwise).
  def tangent(params, h_tm1, res, dparams, dh_tm1, dzx_t, dzh_t):
    del params, h_tm1, dparams, dh_tm1
    dz = dzx_t + dzh_t
    if activation == "relu":
      dh = jnp.where(res, dz, jnp.zeros((), dz.dtype))
    else:
      dh = common.dtanh(dz, res)
    return dh, dh

  return common.build(
      init_params=init_params, init_carry=common.zeros_carry(H), check=check,
      project=project,
      product=hooks.Product(
          common.recur, lambda h: h, pointwise,
          tangent if activation in ("tanh", "relu") else None, summed=True),
      hidden_size=H, output_size=H,
      config=dict(kind="elman", hidden_size=H, activation=activation, bias=bias))
