"""The sLSTM of xLSTM: its equation (`slstm_equations`) and the `slstm` cell.

The specification is the authors' code, xlstm's vanilla ``slstm_forward``
with the pointwise function ``"slstm"``, quirks included: its stabiliser
starts at ``ĩ_t`` on a step whose normaliser is all zeros (a zero carry,
and so every reset).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.engine import hooks

Array = jax.Array


class SLSTMParams(NamedTuple):
  """Parameters of `slstm`; gates fused in the order (i, f, z, o).

  ``W_x`` and ``b`` are four blocks of H, one per gate, each head's units
  together (head k's are ``k H/K ... (k+1) H/K - 1`` of its block). ``R[k]``
  maps head k's part of ``h_{t-1}`` to its own four gates, gate-major:
  head k's z gate is ``(h_{t-1}[k] @ R[k])[2 H/K : 3 H/K]``.
  """

  W_x: Array  # (input_size, 4H)
  R: Array  # (K, H/K, 4H/K), K = num_heads: the blocks of the recurrent matrix
  b: Array  # (4H,)


class SLSTMState(NamedTuple):
  """The carry of `slstm`: hidden state, cell state, normaliser, stabiliser."""

  h: Array  # (H,)
  c: Array  # (H,)
  n: Array  # (H,)
  m: Array  # (H,)


def block_recur(params: SLSTMParams, h: Array) -> Array:
  """``h_{t-1}`` times the block-diagonal ``R``, gate-major over 4H.

  ``h: (..., H)`` to ``(..., 4H)``: entry ``g H + k H/K + j`` is entry ``g
  H/K + j`` of ``h[k] @ R[k]``, so that it adds to ``x_t W_x + b``. Linear
  in ``h`` and in ``R``.
  """
  K, head, width = params.R.shape
  z = checks.block_matmul(h, params.R)  # (..., K, 4 H/K)
  z = jnp.reshape(z, z.shape[:-1] + (4, head))
  return jnp.reshape(jnp.swapaxes(z, -3, -2), z.shape[:-3] + (K * width,))


def _tie_weight(x: Array, y: Array, z: Array) -> Array:
  """The share of ``dx`` in the tangent of ``z = max(x, y)`` or ``min(x,
  y)``: 1 where only ``x`` attains ``z``, 0.5 where both do (JAX's
  balanced rule), 0 where only ``y`` does."""
  return jnp.where(x == z, jnp.where(y == z, 0.5, 1.0), 0.0).astype(z.dtype)


def slstm_equations(carry: SLSTMState, z: Array) -> tuple[SLSTMState, tuple]:
  """The sLSTM's update from the pre-activations ``z = [ĩ, f̃, z̃, õ]``.

  Features last: ``z: (..., 4H)``, the carry's arrays ``(..., H)``.
  Returns the new carry and the residuals of `slstm_tangent`.
  """
  i_raw, f_raw, z_raw, o_raw = jnp.split(z, 4, axis=-1)
  log_f_m = carry.m + jax.nn.log_sigmoid(f_raw)
  # xlstm's `torch.all(n == 0)`, per example: a zero normaliser is a fresh
  # start, whose stabiliser is the input gate's pre-activation.
  first = jnp.all(carry.n == 0, axis=-1, keepdims=True)
  m_t = jnp.where(first, i_raw, jnp.maximum(i_raw, log_f_m))
  one = jnp.ones((), z.dtype)
  a_t, e_t = jnp.exp(i_raw - m_t), jnp.exp(log_f_m - m_t)
  i_t, f_t = jnp.minimum(a_t, one), jnp.minimum(e_t, one)
  tanh_z = jnp.tanh(z_raw)
  c_t = f_t * carry.c + i_t * tanh_z
  n_t = f_t * carry.n + i_t
  o_t = jax.nn.sigmoid(o_raw)
  h_t = o_t * c_t / n_t
  # The tangents of the stabiliser and of the clipped gates, with JAX's
  # rules for max, min and where at ties: dm_t = dl + w u, di_t = g_i u,
  # df_t = g_f u, where dl = dm + σ(-f̃) df̃ and u = dĩ - dl.
  w = jnp.where(first, one, _tie_weight(i_raw, log_f_m, m_t))
  g_i = a_t * _tie_weight(a_t, one, i_t) * (one - w)
  g_f = -e_t * _tie_weight(e_t, one, f_t) * w
  k = o_t / n_t
  residuals = (jax.nn.sigmoid(-f_raw), w, g_f * carry.c + g_i * tanh_z, g_f * carry.n + g_i,
               f_t, common.dtanh(i_t, tanh_z), (one - o_t) * h_t, k, h_t / n_t)
  return SLSTMState(h_t, c_t, n_t, m_t), residuals


def slstm_tangent(params, h_tm1, res, dparams, dcarry, dzx_t, dzh_t):
  """The JVP of `slstm_equations` from its residuals, linear in the tangents."""
  del params, h_tm1, dparams
  sig_neg_f, w, p_c, p_n, f_t, q_z, q_o, k, k_h = res
  di, df, dz, do = jnp.split(dzx_t + dzh_t, 4, axis=-1)
  dl = dcarry.m + sig_neg_f * df
  u = di - dl
  dc = p_c * u + f_t * dcarry.c + q_z * dz
  dn = p_n * u + f_t * dcarry.n
  dh = q_o * do + k * dc - k_h * dn
  return SLSTMState(dh, dc, dn, dl + w * u), dh


def _forget_bias(head_size: int) -> np.ndarray:
  """xlstm's ``"powerlaw_blockdependent"`` forget-gate bias of one head (a
  single block): ``5 - 12 (j / (head_size - 1))^0.3``, from 5 down to -7."""
  ramp = np.arange(head_size) / max(head_size - 1, 1)
  return 5.0 - 12.0 * ramp ** 0.3


def slstm(hidden_size: int, *, num_heads: int = 1) -> Cell:
  r"""The sLSTM of xLSTM: exponential gating, a normaliser and a stabiliser.

  With the pre-activations of head-wise (block-diagonal) recurrent weights,
  ``z_t = x_t W_x + b + h_{t-1} \mathrm{blockdiag}(R_1, …, R_K) = [ĩ_t,
  f̃_t, z̃_t, õ_t]``:

  .. math::
    m_t &= \max(ĩ_t, \; m_{t-1} + \log σ(f̃_t))
      \quad (m_t = ĩ_t \text{ where } n_{t-1} = 0) \\
    i_t &= \min(\exp(ĩ_t - m_t), 1), \quad
    f_t = \min(\exp(m_{t-1} + \log σ(f̃_t) - m_t), 1) \\
    c_t &= f_t ⊙ c_{t-1} + i_t ⊙ \tanh(z̃_t), \qquad
    n_t = f_t ⊙ n_{t-1} + i_t \\
    h_t &= σ(õ_t) ⊙ c_t / n_t, \qquad y_t = h_t

  This is xlstm's vanilla ``slstm_forward`` with its pointwise function
  ``"slstm"``, quirks included: the stabiliser is ``ĩ_t`` on a step whose
  normaliser ``n_{t-1}`` is zero in every unit (the zero carry of a first
  step or a reset), where the forget gate is clipped at 1 rather than
  rescaled. The stabiliser is differentiated through, as there.

  Initialisation, as xlstm's sLSTM layer (one block): ``W_x`` normal with
  variance ``2 / (5 input_size)`` (its ``small_init``), ``R`` zeros (its
  ``recurrent_weight_init="zeros"``), ``b`` zero but the forget gate's,
  ``5 - 12 (j / (H/K - 1))^{0.3}`` on unit j of each head (its
  ``"powerlaw_blockdependent"``; 5 when a head has one unit).

  Args:
    hidden_size: H, the size of each of the four states.
    num_heads: K, the number of heads (diagonal blocks of the recurrent
      matrix); it must divide H.

  Returns:
    A `Cell` with params `SLSTMParams` ``(W_x: (input_size, 4H), R: (K, H/K,
    4H/K), b: (4H,))`` and carry `SLSTMState` ``(h, c, n, m)``, each
    ``(H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.slstm(8, num_heads=2)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_x.shape, params.R.shape, params.b.shape
    ((3, 32), (2, 4, 16), (32,))
    >>> carry, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> y.shape, bool(jnp.allclose(carry.n, 1.0))
    ((8,), True)
    >>> ys, carry = jaxrnn.rnn(cell).apply(params, jnp.ones((5, 3)))
    >>> ys.shape, carry.m.shape
    ((5, 8), (8,))

  References:
    Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter
    & Hochreiter, xLSTM: Extended Long Short-Term Memory, 2024; the xlstm
    package (NXAI), ``xlstm/blocks/slstm/src/vanilla``.
  """
  H, K = checks.check_heads(hidden_size, num_heads)
  head = H // K
  owner = f"slstm(hidden_size={H}, num_heads={K})"

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    std = np.sqrt(2.0 / (5.0 * input_size))
    W_x = inits.draw(jax.nn.initializers.normal(std), key, (input_size, 4 * H), dtype)
    R = jnp.zeros((K, head, 4 * head), dtype)
    b = np.zeros((4, K, head))
    b[1] = _forget_bias(head)
    return SLSTMParams(W_x, R, jnp.asarray(b.reshape(4 * H), dtype))

  def check(params):
    checks.check_params(params, SLSTMParams, owner)
    checks.check_input_matrix(params.W_x, 4 * H, "params.W_x", owner)
    checks.check_array_shape(params.R, (K, head, 4 * head), "params.R", owner)
    checks.check_array_shape(params.b, (4 * H,), "params.b", owner)

  def pointwise(params, carry, zx_t, zh_t):
    del params
    new, res = slstm_equations(carry, zx_t + zh_t)
    return new, new.h, res

  return common.build(
      init_params=init_params, check=check, project=common.project_b,
      init_carry=common.zeros_carry(H, H, H, H, make=SLSTMState),
      product=hooks.Product(block_recur, lambda c: c.h, pointwise, slstm_tangent,
                            summed=True),
      hidden_size=H, output_size=H,
      config=dict(kind="slstm", hidden_size=H, num_heads=K))
