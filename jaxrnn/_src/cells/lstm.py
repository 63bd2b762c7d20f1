"""The LSTM: its equation (`lstm_equations`, shared with `conv_lstm`), its
tangent, and the `lstm` cell."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.common import LayerNormParams
from jaxrnn._src.engine import hooks

Array = jax.Array


class LSTMParams(NamedTuple):
  """Parameters of `lstm`; gates fused in the order (i, f, g, o)."""

  W_x: Array  # (input_size, 4H)
  W_h: Array  # (P, 4H), P = proj_size if set, else H
  b_x: Optional[Array]  # (4H,), None when bias=False
  b_h: Optional[Array]  # (4H,), None when bias=False
  W_hr: Optional[Array] = None  # (H, P) output projection, only with proj_size
  W_c: Optional[Array] = None  # (3, H) peepholes (i, f, o), only with peephole
  ln_x: Optional[LayerNormParams] = None  # (4H,) each, only with layer_norm
  ln_h: Optional[LayerNormParams] = None  # (4H,) each, only with layer_norm
  ln_c: Optional[LayerNormParams] = None  # (H,) each, only with layer_norm


class LSTMState(NamedTuple):
  """The carry of `lstm`: hidden state and cell state."""

  h: Array  # (P,), P = proj_size if set, else H
  c: Array  # (H,)


def _gate_scale(like: Array, value: float) -> Array:
  """``like`` times ``value`` on the i, f, o blocks and 1 on g (last axis)."""
  H = like.shape[-1] // 4
  scale = np.repeat(np.array([value, value, 1.0, value]), H)
  return common.mul(like, jnp.asarray(scale, like.dtype))


def lstm_equations(c_tm1, z, W_c=None, ln_c=None, eps=1e-5):
  """The LSTM's update from the pre-activations ``z = [z^i, z^f, z^g, z^o]``.

  Returns ``(h_t, c_t, residuals)``. ``W_c = [w^i, w^f, w^o]`` (peepholes)
  and ``ln_c`` (layer normalisation of ``c_t`` before its tanh) are
  optional. Arrays have features last: ``z: (..., 4H)``, ``c_tm1: (...,
  H)``. The residuals, for the plain form only (None otherwise), are what
  `lstm_tangent` needs: ``p = (g, c_{t-1}, i, tanh c_t) ⊙ d(i, f, g, o)/dz``
  and ``a = o ⊙ (1 - tanh² c_t)``, with ``f``.
  """
  if W_c is not None:
    w_i, w_f, w_o = (w.astype(z.dtype) for w in W_c)
    zeros = jnp.zeros_like(c_tm1)
    z = z + jnp.concatenate([w_i * c_tm1, w_f * c_tm1, zeros, zeros], axis=-1)
  # One tanh over all 4H pre-activations (σ(z) = (1 + tanh(z/2)) / 2): a
  # nonlinearity over one contiguous array vectorises; four over slices of
  # it measured 3-5x slower on CPU.
  t = jnp.tanh(_gate_scale(z, 0.5))
  s = 0.5 * t + 0.5
  i_t, f_t, _, o_t = jnp.split(s, 4, axis=-1)
  g_t = jnp.split(t, 4, axis=-1)[2]
  c_t = f_t * c_tm1 + i_t * g_t
  if W_c is not None:  # the output gate sees the new cell state
    o_t = jax.nn.sigmoid(jnp.split(z, 4, axis=-1)[3] + w_o * c_t)
  tanh_c = jnp.tanh(common.layer_norm(c_t, ln_c, eps))
  h_t = o_t * tanh_c
  if W_c is not None or ln_c is not None:
    return h_t, c_t, None
  p = (jnp.concatenate([g_t, c_tm1, i_t, tanh_c], axis=-1)
       * common.dtanh(_gate_scale(jnp.ones_like(t), 0.25), t))
  a = o_t * common.dtanh(jnp.ones((), t.dtype), tanh_c)
  return h_t, c_t, (p, a, f_t)


def lstm_tangent(params, h_tm1, res, dparams, dcarry, dzx_t, dzh_t):
  """The JVP of the plain `lstm_equations` step, from its residuals.

  ``(dc, dh) = (dc_{t-1} f + Σ_{i,f,g} dz ⊙ p, dc ⊙ a + dz^o ⊙ p^o)``.
  """
  del params, h_tm1, dparams
  p, a, f_t = res
  q_i, q_f, q_g, q_o = jnp.split((dzx_t + dzh_t) * p, 4, axis=-1)
  dc = dcarry.c * f_t + q_i + q_f + q_g
  dh = dc * a + q_o
  return LSTMState(dh, dc), dh


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    proj_size: Optional[int] = None,
    peephole: bool = False,
    layer_norm: bool = False,
    layer_norm_eps: float = 1e-5,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
    projection_init: inits.Initializer = inits.default_input_init,
    peephole_init: inits.Initializer = jax.nn.initializers.zeros,
) -> Cell:
  r"""The long short-term memory cell (gates fused in the order i, f, g, o).

  .. math::
    z_t &= x_t W_x + b_x + h_{t-1} W_h + b_h = [z^i, z^f, z^g, z^o] \\
    i_t &= σ(z^i), \quad f_t = σ(z^f), \quad g_t = \tanh(z^g),
      \quad o_t = σ(z^o) \\
    c_t &= f_t ⊙ c_{t-1} + i_t ⊙ g_t \\
    h_t &= o_t ⊙ \tanh(c_t) \quad (\text{then } h_t W_{hr}
      \text{ with proj_size}), \qquad y_t = h_t

  With ``peephole=True`` (Gers & Schmidhuber 2000) the gates also see the
  cell state through diagonal weights ``W_c = [w^i, w^f, w^o]``:
  ``z^i += w^i ⊙ c_{t-1}``, ``z^f += w^f ⊙ c_{t-1}`` and
  ``z^o += w^o ⊙ c_t`` (the output gate sees the new cell state).

  With ``layer_norm=True`` (Ba, Kiros & Hinton 2016, section 3.1) both
  products are normalised over all 4H pre-activations, and so is the cell
  state before its ``tanh``; the carried ``c_t`` stays unnormalised:

  .. math::
    z_t = LN(x_t W_x; γ_x, β_x) + LN(h_{t-1} W_h; γ_h, β_h) + b_x + b_h,
    \qquad h_t = o_t ⊙ \tanh(LN(c_t; γ_c, β_c))

  where ``LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + eps) + β``.

  Args:
    hidden_size: H, the size of the cell state.
    forget_bias: added to the forget-gate slice of ``b_x`` at
      initialisation (ignored when ``bias=False``).
    proj_size: P; if set, ``h_t`` is projected to size P by ``W_hr: (H, P)``
      (PyTorch's ``proj_size``) and the recurrent matrix is ``(P, 4H)``.
    peephole: add the peephole connections ``W_c: (3, H)``.
    layer_norm: normalise the two products and the cell state (params
      ``ln_x``, ``ln_h``: `LayerNormParams` of size 4H; ``ln_c``: size H).
    layer_norm_eps: the ``eps`` of the layer normalisation.
    bias: whether the cell has the biases ``b_x`` and ``b_h``.
    input_init, recurrent_init, bias_init, projection_init, peephole_init:
      initialisers ``init(key, shape, dtype)`` for ``W_x``, each ``(P, H)``
      gate block of ``W_h``, the biases, ``W_hr`` and ``W_c`` (zeros: the
      cell starts as a plain LSTM).

  Returns:
    A `Cell` with params `LSTMParams` and carry `LSTMState` ``(h: (P,),
    c: (H,))``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.lstm(8)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_x.shape, params.W_h.shape
    ((3, 32), (8, 32))
    >>> carry, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> carry.c.shape, y.shape
    ((8,), (8,))
    >>> ln = jaxrnn.lstm(8, peephole=True, layer_norm=True)
    >>> p = ln.init_params(jax.random.key(0), 3)
    >>> p.W_c.shape, p.ln_x.scale.shape, p.ln_c.scale.shape
    ((3, 8), (32,), (8,))

  References:
    Hochreiter & Schmidhuber, Long Short-Term Memory, 1997; Gers, Schmidhuber
    & Cummins, Learning to Forget, 2000; Gers & Schmidhuber, Recurrent Nets
    that Time and Count, 2000 (peepholes); Ba, Kiros & Hinton, Layer
    Normalization, 2016.
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  if proj_size is not None:
    proj_size = checks.check_positive_int(proj_size, "proj_size")
    if proj_size >= hidden_size:
      raise ValueError(
          f"proj_size: expected a size smaller than hidden_size={hidden_size}, "
          f"got {proj_size}")
  peephole = checks.check_bool(peephole, "peephole")
  layer_norm = checks.check_bool(layer_norm, "layer_norm")
  bias = checks.check_bool(bias, "bias")
  eps = checks.check_positive_float(layer_norm_eps, "layer_norm_eps")
  H = hidden_size
  out_size = H if proj_size is None else proj_size
  owner = (f"lstm(hidden_size={H}" + (f", proj_size={proj_size}" if proj_size else "")
           + (", peephole=True" if peephole else "")
           + (", layer_norm=True" if layer_norm else "") + ")")

  def init_params(key, input_size, dtype=None):
    key, k_r = jax.random.split(key)
    W_x, W_h, b_x, b_h = common.init_gated(
        key, input_size, dtype, (input_init, recurrent_init, bias_init),
        hidden_size=H, rows_h=out_size, num_gates=4, bias=bias)
    dtype = W_x.dtype
    if b_x is not None:
      b_x = b_x.at[H:2 * H].add(jnp.asarray(forget_bias, b_x.dtype))
    W_hr = W_c = ln_x = ln_h = ln_c = None
    if proj_size is not None:
      W_hr = inits.draw(projection_init, k_r, (H, proj_size), dtype)
    if peephole:
      W_c = inits.draw(peephole_init, jax.random.fold_in(k_r, 1), (3, H), dtype)
    if layer_norm:
      ln_x, ln_h, ln_c = (common.init_layer_norm(n, dtype) for n in (4 * H, 4 * H, H))
    return LSTMParams(W_x, W_h, b_x, b_h, W_hr, W_c, ln_x, ln_h, ln_c)

  def check(params):
    common.check_gated(params, LSTMParams, owner, H, out_size, 4)
    checks.check_optional_array(params.W_hr, (H, out_size), "params.W_hr", owner,
                                present=proj_size is not None, what="projection")
    checks.check_optional_array(params.W_c, (3, H), "params.W_c", owner,
                                present=peephole, what="peepholes")
    for name, size in (("ln_x", 4 * H), ("ln_h", 4 * H), ("ln_c", H)):
      common.check_layer_norm(getattr(params, name), size, name, owner, layer_norm)

  def project(params, xs):
    zx = common.layer_norm(checks.matmul(xs, params.W_x), params.ln_x, eps)
    return common.add(zx, common.bias_sum(params.b_x, params.b_h))

  def pointwise(params, carry, zx_t, zh_t):
    z = zx_t + common.layer_norm(zh_t, params.ln_h, eps)
    h_t, c_t, res = lstm_equations(carry.c, z, params.W_c, params.ln_c, eps)
    if params.W_hr is not None:
      h_t = checks.matmul(h_t, params.W_hr)
    return LSTMState(h_t, c_t), h_t, res

  plain = proj_size is None and not peephole and not layer_norm
  return common.build(
      init_params=init_params, check=check, project=project,
      init_carry=common.zeros_carry(out_size, H, make=LSTMState),
      product=hooks.Product(common.recur, lambda c: c.h, pointwise,
                            lstm_tangent if plain else None,
                            summed=not layer_norm),
      hidden_size=H, output_size=out_size,
      config=dict(kind="lstm", hidden_size=H, proj_size=proj_size, bias=bias,
                  forget_bias=forget_bias, peephole=peephole,
                  layer_norm=layer_norm, layer_norm_eps=eps))
