"""The minimal gated unit (Zhou et al. 2016): a GRU with one gate.

Weights follow the layout of the other cells (`jaxrnn._src.cells.common`): the
input matrix ``W_x`` and the recurrent matrix ``W_h`` are stored apart, the
two gates fused along the last axis in the order (f, h̃). ``x_t W_x + b``
does not depend on the recurrence, so `jaxrnn.rnn` computes it for all steps
as one product before the scan.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common

Array = jax.Array


class MGUParams(NamedTuple):
  """Parameters of `mgu`; gates fused in the order (f, h̃)."""

  W_x: Array  # (input_size, 2H)
  W_h: Array  # (H, 2H)
  b: Optional[Array]  # (2H,) = [b_f, b_h], None when bias=False


def mgu(
    hidden_size: int,
    *,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The minimal gated unit (gates fused in the order f, h̃).

  One forget gate does the work of both GRU gates: it resets the state
  inside the candidate and interpolates between state and candidate.

  .. math::
    f_t &= σ(x_t W_x^f + h_{t-1} W_h^f + b_f) \\
    \tilde h_t &= \tanh(x_t W_x^h + (f_t ⊙ h_{t-1}) W_h^h + b_h) \\
    h_t &= (1 - f_t) ⊙ h_{t-1} + f_t ⊙ \tilde h_t, \qquad y_t = h_t

  The paper's ``W_f [h_{t-1}, x_t]`` is ``h_{t-1} W_h^f + x_t W_x^f`` here.
  Flax's ``MGUCell`` is a different model: its gate weighs the state,
  ``h_t = (1 - f_t) ⊙ \tilde h_t + f_t ⊙ h_{t-1}``, and resets the
  candidate after the recurrent product, ``f_t ⊙ (h_{t-1} W_h^h + b)``
  (``reset_gate=True``) or not at all (``reset_gate=False``).

  Under `jaxrnn.rnn`'s ``recurrent_dropout`` (Gal & Ghahramani 2016) the
  mask multiplies ``h_{t-1}`` where it enters the two recurrent products,
  ``(h_{t-1} ⊙ m) W_h^f`` and ``(f_t ⊙ h_{t-1} ⊙ m) W_h^h``, and nowhere
  else (not in ``(1 - f_t) ⊙ h_{t-1}``).

  Args:
    hidden_size: H, the size of the state.
    bias: whether the cell has the bias ``b = [b_f, b_h]`` (one per gate,
      as the paper).
    input_init, recurrent_init, bias_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, each ``(H, H)`` gate block of
      ``W_h``, and ``b``.

  Returns:
    A `Cell` with params `MGUParams` (``W_x: (input_size, 2H)``,
    ``W_h: (H, 2H)``, ``b: (2H,)``) and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.mgu(4)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_x.shape, params.W_h.shape, params.b.shape
    ((3, 8), (4, 8), (8,))
    >>> h, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> h.shape, bool(jnp.all(h == y))
    ((4,), True)

  References:
    Zhou, Wu, Zhang & Zhou, Minimal Gated Unit for Recurrent Neural
    Networks, 2016; Gal & Ghahramani, A Theoretically Grounded Application
    of Dropout in Recurrent Neural Networks, 2016.
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  bias = checks.check_bool(bias, "bias")
  H = hidden_size
  owner = f"mgu(hidden_size={hidden_size})"

  def init_params(key, input_size, dtype=None):
    key, k_b = jax.random.split(key)
    W_x, W_h, _, _ = common.init_gated(
        key, input_size, dtype, (input_init, recurrent_init, bias_init),
        hidden_size=H, rows_h=H, num_gates=2, bias=False)
    b = inits.draw(bias_init, k_b, (2 * H,), W_x.dtype) if bias else None
    return MGUParams(W_x, W_h, b)

  def check(params):
    checks.check_params(params, MGUParams, owner)
    checks.check_input_matrix(params.W_x, 2 * H, "params.W_x", owner)
    checks.check_array_shape(params.W_h, (H, 2 * H), "params.W_h", owner)
    checks.check_optional_array(params.b, (2 * H,), "params.b", owner,
                                present=bias, what="bias (bias=False)")

  # The equation: the reset needs f_t first, so two products per step.
  def step(params, h_tm1, zx_t, h_mask):
    h_in = common.masked_hidden(h_tm1, h_mask)
    zx_f, zx_h = jnp.split(zx_t, 2, axis=-1)
    f_t = jax.nn.sigmoid(zx_f + checks.matmul(h_in, params.W_h[:, :H]))
    cand_t = jnp.tanh(zx_h + checks.matmul(f_t * h_in, params.W_h[:, H:]))
    h_t = (1 - f_t) * h_tm1 + f_t * cand_t
    return h_t, h_t

  return common.build(
      init_params=init_params, init_carry=common.zeros_carry(H), check=check,
      project=common.project_b, step=step, hidden_size=H, output_size=H,
      config=dict(kind="mgu", hidden_size=H, bias=bias))
