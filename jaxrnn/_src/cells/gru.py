"""The GRU, in both forms (reset gate after or before the recurrent product)."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.common import LayerNormParams
from jaxrnn._src.engine import hooks

Array = jax.Array


class GRUParams(NamedTuple):
  """Parameters of `gru`; gates fused in the order (r, z, n)."""

  W_x: Array  # (input_size, 3H)
  W_h: Array  # (H, 3H)
  b_x: Optional[Array]  # (3H,), None when bias=False
  b_h: Optional[Array]  # (3H,), None when bias=False
  ln_x: Optional[LayerNormParams] = None  # (3H,) each, only with layer_norm
  ln_h: Optional[LayerNormParams] = None  # (3H,) each, only with layer_norm


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    layer_norm: bool = False,
    layer_norm_eps: float = 1e-5,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The gated recurrent unit (gates fused in the order r, z, n).

  With ``reset_after=True`` (the PyTorch/cuDNN form, the default) the reset
  gate multiplies the recurrent product, bias included:

  .. math::
    r_t &= σ(x_t W_x^r + b_x^r + h_{t-1} W_h^r + b_h^r) \\
    z_t &= σ(x_t W_x^z + b_x^z + h_{t-1} W_h^z + b_h^z) \\
    n_t &= \tanh(x_t W_x^n + b_x^n + r_t ⊙ (h_{t-1} W_h^n + b_h^n)) \\
    h_t &= (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}, \qquad y_t = h_t

  With ``reset_after=False`` (Cho et al.'s original form, Keras's
  ``reset_after=False``) the reset gate multiplies the state first:
  ``n_t = tanh(x_t W_x^n + b_x^n + (r_t ⊙ h_{t-1}) W_h^n + b_h^n)``.

  With ``layer_norm=True`` (Ba, Kiros & Hinton 2016) the two products are
  normalised over all 3H pre-activations before the biases:
  ``x_t W_x -> LN(x_t W_x; γ_x, β_x)`` and ``h_{t-1} W_h -> LN(h_{t-1} W_h;
  γ_h, β_h)``, with ``LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + eps)
  + β``. It needs ``reset_after=True`` (the form where ``h_{t-1} W_h`` is
  one product).

  Args:
    hidden_size: H, the size of the state.
    reset_after: where the reset gate is applied (see above).
    layer_norm: normalise the two products (params ``ln_x``, ``ln_h``:
      `LayerNormParams` of size 3H).
    layer_norm_eps: the ``eps`` of the layer normalisation.
    bias: whether the cell has the biases ``b_x`` and ``b_h``.
    input_init, recurrent_init, bias_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, each ``(H, H)`` block of
      ``W_h`` and the biases.

  Returns:
    A `Cell` with params `GRUParams` and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.gru(5)
    >>> params = cell.init_params(jax.random.key(0), 2)
    >>> h, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(2))
    >>> h.shape
    (5,)

  References:
    Cho et al., Learning Phrase Representations using RNN Encoder-Decoder,
    2014; Ba, Kiros & Hinton, Layer Normalization, 2016.
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  reset_after = checks.check_bool(reset_after, "reset_after")
  layer_norm = checks.check_bool(layer_norm, "layer_norm")
  bias = checks.check_bool(bias, "bias")
  eps = checks.check_positive_float(layer_norm_eps, "layer_norm_eps")
  if layer_norm and not reset_after:
    raise ValueError(
        "layer_norm: needs reset_after=True (one recurrent product to "
        "normalise), got reset_after=False")
  H = hidden_size
  owner = f"gru(hidden_size={H}" + (", layer_norm=True)" if layer_norm else ")")

  def init_params(key, input_size, dtype=None):
    W_x, W_h, b_x, b_h = common.init_gated(
        key, input_size, dtype, (input_init, recurrent_init, bias_init),
        hidden_size=H, rows_h=H, num_gates=3, bias=bias)
    ln_x = ln_h = None
    if layer_norm:
      ln_x, ln_h = (common.init_layer_norm(3 * H, W_x.dtype) for _ in range(2))
    return GRUParams(W_x, W_h, b_x, b_h, ln_x, ln_h)

  def check(params):
    common.check_gated(params, GRUParams, owner, H, H, 3)
    common.check_layer_norm(params.ln_x, 3 * H, "ln_x", owner, layer_norm)
    common.check_layer_norm(params.ln_h, 3 * H, "ln_h", owner, layer_norm)

  def b_hn(params):
    """``b_h^n``, which sits inside ``r ⊙ (...)``; None without biases."""
    return None if params.b_h is None else params.b_h[2 * H:]

  def project(params, xs):
    # b_h^r and b_h^z are plain additive terms: they join the projection.
    b_h = params.b_h
    if b_h is not None:
      b_h = jnp.concatenate([b_h[:2 * H], jnp.zeros((H,), b_h.dtype)])
    zx = common.layer_norm(checks.matmul(xs, params.W_x), params.ln_x, eps)
    return common.add(zx, common.bias_sum(params.b_x, b_h))

  # The equation (reset_after=True).
  def pointwise(params, h_tm1, zx_t, zh_t):
    zh_t = common.layer_norm(zh_t, params.ln_h, eps)
    x_r, x_z, x_n = jnp.split(zx_t, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(zh_t, 3, axis=-1)
    r_t, z_t = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    hn_t = common.add(h_n, b_hn(params))
    n_t = jnp.tanh(x_n + r_t * hn_t)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t, (r_t, z_t, n_t, hn_t)

  # Its tangent (without layer_norm), tested against jax.jvp(pointwise).
  def tangent(params, h_tm1, res, dparams, dh_tm1, dzx_t, dzh_t):
    r_t, z_t, n_t, hn_t = res
    dx_r, dx_z, dx_n = jnp.split(dzx_t, 3, axis=-1)
    dh_r, dh_z, dh_n = jnp.split(dzh_t, 3, axis=-1)
    dr = common.dsigmoid(dx_r + dh_r, r_t)
    dz = common.dsigmoid(dx_z + dh_z, z_t)
    dhn = common.add(dh_n, None if params.b_h is None else b_hn(dparams))
    dn = common.dtanh(dx_n + dr * hn_t + dhn * r_t, n_t)
    dh = dn - dz * n_t - dn * z_t + dz * h_tm1 + dh_tm1 * z_t
    return dh, dh

  # The equation (reset_after=False): the reset gate multiplies the state
  # before the product, so the step has two recurrent products.
  def step_before(params, h_tm1, zx_t, h_mask):
    h_in = common.masked_hidden(h_tm1, h_mask)
    zh_rz = checks.matmul(h_in, params.W_h[:, :2 * H])
    r_t = jax.nn.sigmoid(zx_t[..., :H] + zh_rz[..., :H])
    z_t = jax.nn.sigmoid(zx_t[..., H:2 * H] + zh_rz[..., H:])
    zh_n = common.add(checks.matmul(r_t * h_in, params.W_h[:, 2 * H:]), b_hn(params))
    n_t = jnp.tanh(zx_t[..., 2 * H:] + zh_n)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t

  form: dict[str, Any] = (
      dict(product=hooks.Product(common.recur, lambda h: h, pointwise,
                                 None if layer_norm else tangent,
                                 narrow_hoist=False))  # benchmarks/README.md
      if reset_after else dict(step=step_before))
  return common.build(
      init_params=init_params, init_carry=common.zeros_carry(H), check=check,
      project=project, hidden_size=H, output_size=H,
      config=dict(kind="gru", hidden_size=H, reset_after=reset_after, bias=bias,
                  layer_norm=layer_norm, layer_norm_eps=eps),
      **form)
