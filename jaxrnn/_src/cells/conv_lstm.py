"""The convolutional LSTM (Shi et al. 2015): an LSTM over feature maps.

One step's input is a feature map ``(height, width, in_channels)`` (NHWC for
one example) and the state is two maps ``(height, width, C)``. The products
of the LSTM become 'SAME'-padded stride-1 convolutions, gates fused along
the output channels in the order (i, f, g, o) as `jaxrnn.lstm`. The input
convolution does not depend on the recurrence, so `jaxrnn.rnn` computes it
for all T steps as ONE convolution, with time as the batch axis.
"""

import math
import numbers
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.lstm import LSTMState, lstm_equations, lstm_tangent
from jaxrnn._src.engine import hooks

Array = jax.Array


class ConvLSTMParams(NamedTuple):
  """Parameters of `conv_lstm`; gates fused in the order (i, f, g, o)."""

  W_x: Array  # (kh, kw, in_channels, 4C), HWIO
  W_h: Array  # (kh, kw, C, 4C), HWIO
  b: Optional[Array]  # (4C,), None when bias=False
  W_c: Optional[Array]  # (3, height, width, C) peepholes (i, f, o), or None


def _int_pair(value, name: str, *, odd: bool) -> tuple[int, int]:
  """``kernel_size`` (``odd``: an int or a pair of odd positive ints) or
  ``spatial_shape`` (a pair of positive ints) as a pair of ints."""
  pair = (value, value) if odd and isinstance(value, numbers.Integral) else value
  what = ("an odd positive int or a pair of them" if odd
          else "a pair of positive ints (height, width)")
  if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
      isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in pair)):
    raise TypeError(f"{name}: expected {what}, got {value!r}")
  if any(k <= 0 or (odd and k % 2 == 0) for k in pair):
    if odd:
      what = "odd positive sizes ('SAME' padding is symmetric only for odd kernels)"
    raise ValueError(f"{name}: expected {what}, got {value!r}")
  return int(pair[0]), int(pair[1])


def _conv(x: Array, w: Array) -> Array:
  """'SAME'-padded stride-1 convolution of ``x: (..., H, W, I)`` by ``w: HWIO``
  (the leading axes of ``x`` are the convolution's batch axis).

  Follows `checks.matmul`'s dtype policy: with 16-bit weights the operands
  are 16-bit and the result accumulates in float32.
  """
  lead = x.shape[:-3]
  x = x.reshape((math.prod(lead),) + x.shape[-3:])
  kh, kw = w.shape[:2]
  padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  if jnp.finfo(w.dtype).bits < 32:
    x, preferred = x.astype(w.dtype), jnp.float32
  else:
    dtype = jnp.result_type(x, w)
    x, w, preferred = x.astype(dtype), w.astype(dtype), None
  out = jax.lax.conv_general_dilated(
      x, w, window_strides=(1, 1), padding=padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=preferred)
  return out.reshape(lead + out.shape[1:])


def conv_lstm(
    hidden_channels: int,
    kernel_size: Union[int, Sequence[int]],
    spatial_shape: Sequence[int],
    *,
    peephole: bool = False,
    bias: bool = True,
    forget_bias: float = 1.0,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
    peephole_init: inits.Initializer = jax.nn.initializers.zeros,
) -> Cell:
  r"""The convolutional LSTM cell (gates fused in the order i, f, g, o).

  ``*`` is a 'SAME'-padded stride-1 2-D convolution, ⊙ the elementwise
  product; ``X_t: (height, width, in_channels)``, ``H_t, C_t: (height,
  width, C)``:

  .. math::
    i_t &= σ(W_{xi} * X_t + W_{hi} * H_{t-1} + W_{ci} ⊙ C_{t-1} + b_i) \\
    f_t &= σ(W_{xf} * X_t + W_{hf} * H_{t-1} + W_{cf} ⊙ C_{t-1} + b_f) \\
    C_t &= f_t ⊙ C_{t-1} + i_t ⊙ \tanh(W_{xc} * X_t + W_{hc} * H_{t-1}
      + b_c) \\
    o_t &= σ(W_{xo} * X_t + W_{ho} * H_{t-1} + W_{co} ⊙ C_t + b_o) \\
    H_t &= o_t ⊙ \tanh(C_t), \qquad Y_t = H_t

  The peephole terms ``W_c ⊙ C`` (per-position weights, as in the paper)
  are there only with ``peephole=True``.

  Under `jaxrnn.rnn`'s ``recurrent_dropout`` (Gal & Ghahramani 2016) the
  mask ``(height, width, C)`` multiplies ``H_{t-1}`` where it enters the
  recurrent convolution
  ``W_h * (H_{t-1} ⊙ m)`` and nowhere else.

  Args:
    hidden_channels: C, the channels of the state.
    kernel_size: an odd positive int, or a pair ``(kh, kw)`` of them; the
      size of both convolutions.
    spatial_shape: ``(height, width)`` of every feature map (fixed: the
      carry and the peepholes have this shape).
    peephole: add the peephole weights ``W_c: (3, height, width, C)`` for
      the gates (i, f, o).
    bias: whether the cell has the bias ``b``.
    forget_bias: added to the forget-gate slice of ``b`` at initialisation
      (ignored when ``bias=False``).
    input_init, recurrent_init, bias_init, peephole_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x`` (LeCun normal: fan-in
      ``kh * kw * in_channels``), each ``(kh, kw, C, C)`` gate block of
      ``W_h``, ``b``, and ``W_c`` (zeros: the cell starts without
      peepholes).

  Returns:
    A `Cell` with ``input_ndim=3``, params `ConvLSTMParams` (``W_x: (kh, kw,
    in_channels, 4C)``, ``W_h: (kh, kw, C, 4C)``, ``b: (4C,)``, ``W_c: (3,
    height, width, C)`` or None) and carry `LSTMState` ``(h, c)``, each
    ``(height, width, C)``. ``init_params(key, input_size)`` takes the
    number of input channels; `jaxrnn.rnn` over the cell takes
    ``xs: (T, height, width, in_channels)`` and returns
    ``ys: (T, height, width, C)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.conv_lstm(4, 3, (8, 8), peephole=True)
    >>> params = cell.init_params(jax.random.key(0), 2)  # 2 input channels
    >>> params.W_x.shape, params.W_h.shape, params.W_c.shape
    ((3, 3, 2, 16), (3, 3, 4, 16), (3, 8, 8, 4))
    >>> ys, carry = jaxrnn.rnn(cell).apply(params, jnp.ones((5, 8, 8, 2)), length=3)
    >>> ys.shape, carry.c.shape, bool(jnp.all(ys[3:] == 0))
    ((5, 8, 8, 4), (8, 8, 4), True)

  References:
    Shi, Chen, Wang, Yeung, Wong & Woo, Convolutional LSTM Network: A
    Machine Learning Approach for Precipitation Nowcasting, 2015; Gal &
    Ghahramani, A Theoretically Grounded Application of Dropout in Recurrent
    Neural Networks, 2016.
  """
  C = checks.check_positive_int(hidden_channels, "hidden_channels")
  kh, kw = _int_pair(kernel_size, "kernel_size", odd=True)
  height, width = _int_pair(spatial_shape, "spatial_shape", odd=False)
  peephole = checks.check_bool(peephole, "peephole")
  bias = checks.check_bool(bias, "bias")
  state_shape = (height, width, C)
  owner = (f"conv_lstm(hidden_channels={C}, kernel_size={(kh, kw)}, "
           f"spatial_shape={(height, width)}" + (", peephole=True)" if peephole else ")"))

  def init_params(key, input_size, dtype=None):
    in_channels, dtype = checks.init_args(input_size, dtype)
    k_x, k_h, k_b, k_c = jax.random.split(key, 4)
    W_x = inits.draw(input_init, k_x, (kh, kw, in_channels, 4 * C), dtype)
    # One draw per gate, so an orthogonal initialiser is orthogonal per gate.
    W_h = jnp.concatenate(
        [inits.draw(recurrent_init, k, (kh, kw, C, C), dtype)
         for k in jax.random.split(k_h, 4)], axis=-1)
    b = W_c = None
    if bias:
      b = inits.draw(bias_init, k_b, (4 * C,), dtype)
      b = b.at[C:2 * C].add(jnp.asarray(forget_bias, dtype))
    if peephole:
      W_c = inits.draw(peephole_init, k_c, (3,) + state_shape, dtype)
    return ConvLSTMParams(W_x, W_h, b, W_c)

  def check(params):
    checks.check_params(params, ConvLSTMParams, owner)
    if params.W_x.ndim != 4 or tuple(params.W_x.shape[:2]) != (kh, kw) or (
        params.W_x.shape[3] != 4 * C):
      raise ValueError(
          f"params.W_x: {owner} expects shape ({kh}, {kw}, in_channels, "
          f"{4 * C}), got {tuple(params.W_x.shape)}")
    checks.check_array_shape(params.W_h, (kh, kw, C, 4 * C), "params.W_h", owner)
    checks.check_optional_array(params.b, (4 * C,), "params.b", owner,
                                present=bias, what="bias (bias=False)")
    checks.check_optional_array(params.W_c, (3,) + state_shape, "params.W_c", owner,
                                present=peephole, what="peepholes")

  def check_inputs(params, xs, want_rank):
    name = "x" if want_rank else "xs"
    in_channels = params.W_x.shape[2]
    shape = tuple(np.shape(xs))
    if len(shape) < 3 or (want_rank is not None and len(shape) != want_rank) or (
        shape[-3:] != (height, width, in_channels)):
      lead = "" if want_rank == 3 else "..., "
      raise ValueError(
          f"{name}: {owner} expects shape ({lead}{height}, {width}, "
          f"{in_channels}) (height, width, in_channels), got shape {shape}")
    checks.check_floating(xs, name)

  def project(params, xs):
    # All steps at once: time (and any batch axes) is the conv's batch axis.
    return common.add(_conv(xs, params.W_x), params.b)

  def recur(params, h):
    return _conv(h, params.W_h)

  # The LSTM's own equation, with convolution products.
  def pointwise(params, carry, zx_t, zh_t):
    h_t, c_t, res = lstm_equations(carry.c, zx_t + zh_t, params.W_c)
    return LSTMState(h_t, c_t), h_t, res

  return common.build(
      init_params=init_params, check=check, project=project,
      init_carry=common.zeros_carry(state_shape, state_shape, make=LSTMState),
      input_size=lambda params: params.W_x.shape[2], check_inputs=check_inputs,
      product=hooks.Product(recur, lambda c: c.h, pointwise,
                            None if peephole else lstm_tangent, summed=True),
      hidden_size=C, output_size=C, input_ndim=3,
      config=dict(kind="conv_lstm", hidden_channels=C, kernel_size=(kh, kw),
                  spatial_shape=(height, width), peephole=peephole, bias=bias,
                  forget_bias=forget_bias))
