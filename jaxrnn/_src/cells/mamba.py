"""The Mamba block (Gu & Dao 2023) as a cell: one token per step.

Its selective state space model is a diagonal linear recurrence whose
coefficients come from the input through a short causal convolution, so the
cell runs on the linear engine (`jaxrnn._src.engine.linear`) with a causal
window (`jaxrnn._src.engine.window`): the convolution over time for all
steps at once, then a multiply-add scan or ``jax.lax.associative_scan`` over
the state. The equation is written once, as the window's ``convolve`` and
the recurrence's ``coefficients`` and ``outputs``; ``cell_apply`` and every
method of `jaxrnn.rnn` derive from them.
"""

import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.cells.linear import linear_family
from jaxrnn._src.engine import window as window_lib

Array = jax.Array

# mambapy's and mamba_ssm's initialisation of the step size Δ: log-uniform
# in [DT_MIN, DT_MAX], floored at DT_FLOOR, stored as softplus⁻¹(Δ).
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class MambaParams(NamedTuple):
  """Parameters of `mamba` (D = d_model, ED = expand·D, R = dt_rank, N =
  d_state); every matrix is used as ``x @ W``."""

  in_proj: Array  # (D, 2ED): the x branch, then the gate z
  conv_w: Array  # (d_conv, ED): conv_w[j] weights the input d_conv-1-j steps back
  conv_b: Optional[Array]  # (ED,), None when conv_bias=False
  x_proj: Array  # (ED, R + 2N): Δ's low-rank input, then B, then C
  dt_proj_w: Array  # (R, ED)
  dt_proj_b: Array  # (ED,)
  A_log: Array  # (ED, N): A = -exp(A_log)
  D: Array  # (ED,): the skip connection
  out_proj: Array  # (ED, D)
  in_proj_b: Optional[Array] = None  # (2ED,), only with bias=True
  out_proj_b: Optional[Array] = None  # (D,), only with bias=True


class MambaState(NamedTuple):
  """The carry of `mamba`: the convolution's last inputs and the SSM state."""

  conv: Array  # (d_conv - 1, ED): the x branch of the last steps, oldest first
  ssm: Array  # (ED, N)


def _transpose(h: Array) -> Array:
  """``h`` with its last two axes swapped: ``(ED, N)`` to ``(N, ED)`` and back."""
  return jnp.swapaxes(h, -1, -2)


def _check_dt_rank(dt_rank, d_model: int) -> int:
  if isinstance(dt_rank, str) and dt_rank == "auto":
    return math.ceil(d_model / 16)
  if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
    raise ValueError(f"dt_rank: expected 'auto' or a positive int, got {dt_rank!r}")
  return dt_rank


def mamba(
    d_model: int,
    *,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    dt_rank: Union[int, str] = "auto",
    conv_bias: bool = True,
    bias: bool = False,
) -> Cell:
  r"""The Mamba block: a causal convolution, then a selective SSM, gated.

  One token of the block of Gu & Dao (mambapy's ``MambaBlock``, mamba_ssm's
  ``Mamba``), with ``E·D = expand * d_model`` inner channels and ``N =
  d_state`` states per channel:

  .. math::
    [x̃_t, z_t] &= x_t W_{in} + b_{in}, \qquad
    u_t = \mathrm{silu}\Big(\sum_{j=0}^{W-1} w_j ⊙ x̃_{t-W+1+j} + b_w\Big) \\
    [δ_t, B_t, C_t] &= u_t W_x, \qquad
    Δ_t = \mathrm{softplus}(δ_t W_Δ + b_Δ), \qquad A = -\exp(A_{log}) \\
    h_t &= \exp(Δ_t A) ⊙ h_{t-1} + (Δ_t B_t^⊤) ⊙ u_t, \qquad
    y_t = \big((h_t C_t + D ⊙ u_t) ⊙ \mathrm{silu}(z_t)\big) W_{out} + b_{out}

  with ``W = d_conv`` and the convolution's window of the last ``W`` steps
  of ``x̃`` (``w_{W-1} = conv_w[-1]`` weights the current step; before the
  first step, the carry's buffer). The state ``h_t: (ED, N)`` is linear in
  ``h_{t-1}``, so ``jaxrnn.rnn(mamba(D))`` evaluates it by a multiply-add
  scan (``method="sequential"``, ``"auto"``) or by an associative scan
  (``"parallel"``), after the convolution of all steps at once, with
  lengths, reverse over the valid prefix and resets (a reset clears the
  convolution's buffer too: both restart from the initial carry).

  Args:
    d_model: D, the size of the input and of the output.
    d_state: N, the states per inner channel.
    d_conv: W, the length of the causal convolution (>= 1).
    expand: E, inner channels per input channel.
    dt_rank: R, the rank of Δ's projection; ``"auto"`` is ``ceil(D / 16)``.
    conv_bias: whether the convolution has the bias ``conv_b``.
    bias: whether the input and output projections have biases
      (``in_proj_b``, ``out_proj_b``), mambapy's ``MambaConfig.bias``.

  Returns:
    A `Cell` with params `MambaParams`, carry `MambaState` ``(conv: (W - 1,
    ED), ssm: (ED, N))`` (zeros to start) and outputs ``(D,)``; its
    ``init_params`` takes ``input_size == d_model`` and draws the weights as
    mambapy does.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.mamba(8, d_state=4)
    >>> layer = jaxrnn.rnn(cell, method="parallel")
    >>> params = layer.init_params(jax.random.key(0), 8)
    >>> xs = jax.random.normal(jax.random.key(1), (6, 8))
    >>> ys, state = jax.jit(layer.apply)(params, xs, length=5)
    >>> ys.shape, state.conv.shape, state.ssm.shape
    ((6, 8), (3, 16), (16, 4))
    >>> loop, last = jax.jit(jaxrnn.rnn(cell, method="reference").apply)(params, xs, length=5)
    >>> bool(jnp.allclose(ys, loop, atol=1e-5)), bool(jnp.allclose(state.ssm, last.ssm, atol=1e-5))
    (True, True)

  References:
    Gu & Dao, Mamba: Linear-Time Sequence Modeling with Selective State
    Spaces, 2023; the reference code: mambapy (Torres,
    ``mambapy/mamba.py``) and mamba_ssm (``modules/mamba_simple.py``).
  """
  D = checks.check_positive_int(d_model, "d_model")
  N = checks.check_positive_int(d_state, "d_state")
  W = checks.check_positive_int(d_conv, "d_conv")
  E = checks.check_positive_int(expand, "expand")
  R = _check_dt_rank(dt_rank, D)
  conv_bias = checks.check_bool(conv_bias, "conv_bias")
  bias = checks.check_bool(bias, "bias")
  ED = E * D
  owner = f"mamba(d_model={D})"

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    checks.check_input_size_equals(input_size, D, "d_model", owner)
    work = checks.accumulation_dtype(dtype)
    keys = iter(jax.random.split(key, 9))

    def uniform(shape, bound):  # PyTorch's default for Linear and Conv1d
      return jax.random.uniform(next(keys), shape, work, -bound, bound)

    log_dt = jax.random.uniform(next(keys), (ED,), work, math.log(DT_MIN), math.log(DT_MAX))
    dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
    params = MambaParams(
        in_proj=uniform((D, 2 * ED), D ** -0.5),
        conv_w=uniform((W, ED), W ** -0.5),
        conv_b=uniform((ED,), W ** -0.5) if conv_bias else None,
        x_proj=uniform((ED, R + 2 * N), ED ** -0.5),
        dt_proj_w=uniform((R, ED), R ** -0.5),
        dt_proj_b=dt + jnp.log(-jnp.expm1(-dt)),  # softplus⁻¹(Δ)
        A_log=jnp.broadcast_to(jnp.log(jnp.arange(1, N + 1, dtype=work)), (ED, N)),
        D=jnp.ones((ED,), work),
        out_proj=uniform((ED, D), ED ** -0.5),
        in_proj_b=uniform((2 * ED,), D ** -0.5) if bias else None,
        out_proj_b=uniform((D,), ED ** -0.5) if bias else None)
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

  def check(params):
    checks.check_params(params, MambaParams, owner)
    for name, shape in (("in_proj", (D, 2 * ED)), ("conv_w", (W, ED)),
                        ("x_proj", (ED, R + 2 * N)), ("dt_proj_w", (R, ED)),
                        ("dt_proj_b", (ED,)), ("A_log", (ED, N)), ("D", (ED,)),
                        ("out_proj", (ED, D))):
      checks.check_array_shape(getattr(params, name), shape, f"params.{name}", owner)
    checks.check_optional_array(params.conv_b, (ED,), "params.conv_b", owner,
                                present=conv_bias, what="convolution bias (conv_bias=False)")
    for name, shape in (("in_proj_b", (2 * ED,)), ("out_proj_b", (D,))):
      checks.check_optional_array(getattr(params, name), shape, f"params.{name}", owner,
                                  present=bias, what="projection biases (bias=False)")

  def project(params, xs):
    """``[x̃, z] = x W_in + b_in`` for any leading axes."""
    return common.add(checks.matmul(xs, params.in_proj), params.in_proj_b)

  # The equation. convolve: [x̃, z] and x̃'s windows -> [u, z, Δ, B, C].
  def convolve(params, zx, windows):
    conv = common.add(jnp.sum(common.mul(windows, params.conv_w), axis=-2), params.conv_b)
    u = jax.nn.silu(conv)
    dt, B, C = jnp.split(checks.matmul(u, params.x_proj), [R, R + N], axis=-1)
    delta = jax.nn.softplus(common.add(checks.matmul(dt, params.dt_proj_w), params.dt_proj_b))
    return jnp.concatenate([u, zx[..., ED:], delta, B, C], axis=-1)

  def parts(zc):
    """``(u, z, Δ, B, C)`` from `convolve`'s output."""
    return jnp.split(zc, [ED, 2 * ED, 3 * ED, 3 * ED + N], axis=-1)

  # The engine's state is h transposed, (N, ED): the contraction with C_t
  # then adds N rows of ED contiguous entries.
  def coefficients(params, zc):
    u, _, delta, B, _ = parts(zc)
    A = -jnp.exp(params.A_log.T.astype(delta.dtype))
    a = jnp.exp(common.mul(delta[..., None, :], A))
    b = B[..., :, None] * (delta * u)[..., None, :]
    return a, b

  def outputs(params, hs, zc):
    u, z, _, _, C = parts(zc)
    y = jnp.sum(hs * C[..., :, None], axis=-2) + common.mul(u, params.D)
    return common.add(checks.matmul(y * jax.nn.silu(z), params.out_proj), params.out_proj_b)

  window = window_lib.Window(inputs=lambda zx: zx[..., :ED], convolve=convolve,
                             split=lambda carry: (carry.conv, carry.ssm), join=MambaState)
  return linear_family(
      init_params=init_params, coefficients=coefficients, hidden_size=None,
      outputs=outputs, project=project, check=check,
      input_size=lambda params: params.in_proj.shape[0],
      init_carry=common.zeros_carry((W - 1, ED), (ED, N), make=MambaState),
      to_state=_transpose, from_state=_transpose, window=window, output_size=D,
      config=dict(kind="mamba", d_model=D, d_state=N, d_conv=W, expand=E, dt_rank=R,
                  conv_bias=conv_bias, bias=bias))
