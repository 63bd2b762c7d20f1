"""Cells whose recurrence is linear in the state: min_gru, min_lstm, lru.

``min_gru``, ``min_lstm`` (Feng et al. 2024) and ``lru`` (Orvieto et al.
2023) compute every gate from the input alone, so their state follows

.. math::
  h_t = a_t ⊙ h_{t-1} + b_t

Each cell's equation is its ``coefficients(params, zx) -> (a, b)``: the step
(``cell_apply``) and both methods of the linear engine
(`jaxrnn._src.engine.linear`: a multiply-add scan, or
``jax.lax.associative_scan`` in O(log T) depth) are derived from it.
min_lstm's gate normalisation ``f/(f+i)`` is computed from log-sigmoids, as
Feng et al.'s log-space version does.
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.engine import hooks

Array = jax.Array


def linear_family(*, init_params, coefficients, hidden_size, outputs, project, check,
                  input_size, config, check_inputs=None, init_carry=None,
                  to_state=lambda h: h, from_state=lambda h: h, restart=None,
                  window=None, output_size=None) -> Cell:
  """The one constructor of the cells ``h_t = a_t ⊙ h_{t-1} + b_t``: `linear_cell`
  and the built-in min_gru, min_lstm, lru, rg_lru and mamba.

  ``project(params, xs) -> zx`` for any leading axes; ``coefficients(params,
  zx) -> (a, b)``, ``outputs(params, hs, zx) -> ys`` and ``restart`` (see
  `hooks.Linear`) on every step at once; ``window``, a short causal
  convolution before the coefficients (`hooks.Linear`); ``to_state``/``from_state``
  convert a carry that is not the state itself. The carry is zeros of
  ``(hidden_size,)`` unless ``init_carry`` is given; the output size is the
  hidden size unless ``output_size`` is given (None: set by params).
  """
  return common.build(
      init_params=init_params,
      init_carry=init_carry or common.zeros_carry(hidden_size), check=check,
      input_size=input_size, check_inputs=check_inputs, project=project,
      linear=hooks.Linear(coefficients=coefficients, to_state=to_state,
                          from_state=from_state, outputs=outputs, restart=restart,
                          window=window, name=config["kind"]),
      hidden_size=hidden_size, output_size=output_size,
      config=config)


def _gated_linear(*, kind, hidden_size, num_blocks, coefficients, bias,
                  input_init, bias_init, params_type) -> Cell:
  """A cell ``h_t = a_t ⊙ h_{t-1} + b_t`` with ``zx_t = x_t W_x + b``."""
  H = checks.check_positive_int(hidden_size, "hidden_size")
  bias = checks.check_bool(bias, "bias")
  owner = f"{kind}(hidden_size={H})"
  width = num_blocks * H

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    k_w, k_b = jax.random.split(key)
    W_x = inits.draw(input_init, k_w, (input_size, width), dtype)
    b = inits.draw(bias_init, k_b, (width,), dtype) if bias else None
    return params_type(W_x, b)

  def check(params):
    checks.check_params(params, params_type, owner)
    checks.check_input_matrix(params.W_x, width, "params.W_x", owner)
    checks.check_optional_array(params.b, (width,), "params.b", owner,
                                present=bias, what="bias (bias=False)")

  return linear_family(
      init_params=init_params, coefficients=coefficients, hidden_size=H,
      outputs=lambda params, hs, zx: hs, project=common.project_b, check=check,
      input_size=lambda params: params.W_x.shape[0], output_size=H,
      config=dict(kind=kind, hidden_size=H, bias=bias))


class MinGRUParams(NamedTuple):
  """Parameters of `min_gru`; blocks in the order (z, h̃)."""

  W_x: Array  # (input_size, 2H)
  b: Optional[Array]  # (2H,), None when bias=False


class MinLSTMParams(NamedTuple):
  """Parameters of `min_lstm`; blocks in the order (f, i, h̃)."""

  W_x: Array  # (input_size, 3H)
  b: Optional[Array]  # (3H,), None when bias=False


def min_gru(
    hidden_size: int,
    *,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The minimal GRU: gates from the input alone, so the state is linear.

  .. math::
    z_t = σ(x_t W_x^z + b^z), \quad h̃_t = x_t W_x^h + b^h, \qquad
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t, \qquad y_t = h_t

  ``jaxrnn.rnn(min_gru(H), method="parallel")`` evaluates it with an
  associative scan (see the module notes); ``1 - z_t`` is computed as
  ``σ(-x_t W_x^z - b^z)``, exact where ``z_t`` rounds to 1.

  Args:
    hidden_size: H, the size of the state.
    bias: whether the cell has the bias ``b: (2H,)``.
    input_init, bias_init: initialisers ``init(key, shape, dtype)`` for
      ``W_x`` and ``b``.

  Returns:
    A `Cell` with params `MinGRUParams` and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.min_gru(4), method="parallel")
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> xs = jax.random.normal(jax.random.key(1), (9, 3))
    >>> ys, h = jax.jit(layer.apply)(params, xs, length=7)
    >>> sequential = jaxrnn.rnn(jaxrnn.min_gru(4), method="sequential")
    >>> seq, _ = jax.jit(sequential.apply)(params, xs, length=7)
    >>> ys.shape, bool(jnp.allclose(ys, seq, atol=1e-6))
    ((9, 4), True)

  References:
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, Were RNNs All We Needed?,
    2024.
  """
  def coefficients(params, zx):
    del params
    k_z, h_tilde = jnp.split(zx, 2, axis=-1)
    return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * h_tilde

  return _gated_linear(
      kind="min_gru", hidden_size=hidden_size, num_blocks=2,
      coefficients=coefficients, bias=bias, input_init=input_init,
      bias_init=bias_init, params_type=MinGRUParams)


def min_lstm(
    hidden_size: int,
    *,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    bias_init: inits.Initializer = inits.default_bias_init,
) -> Cell:
  r"""The minimal LSTM: normalised forget and input gates from the input.

  .. math::
    f_t = σ(x_t W_x^f + b^f), \quad i_t = σ(x_t W_x^i + b^i), \quad
    h̃_t = x_t W_x^h + b^h \\
    f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t},
    \qquad h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t, \qquad y_t = h_t

  The normalisation is computed in log space,
  ``f'_t = exp(log σ(·) - logaddexp(log f_t, log i_t))``, which stays finite
  when both gates underflow.

  Args:
    hidden_size: H, the size of the state.
    bias: whether the cell has the bias ``b: (3H,)``.
    input_init, bias_init: initialisers ``init(key, shape, dtype)`` for
      ``W_x`` and ``b``.

  Returns:
    A `Cell` with params `MinLSTMParams` and carry ``h: (H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.min_lstm(4)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_x.shape
    (3, 12)
    >>> h, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> h.shape
    (4,)

  References:
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, Were RNNs All We Needed?,
    2024.
  """
  def coefficients(params, zx):
    del params
    k_f, k_i, h_tilde = jnp.split(zx, 3, axis=-1)
    log_f, log_i = jax.nn.log_sigmoid(k_f), jax.nn.log_sigmoid(k_i)
    log_norm = jnp.logaddexp(log_f, log_i)
    return jnp.exp(log_f - log_norm), jnp.exp(log_i - log_norm) * h_tilde

  return _gated_linear(
      kind="min_lstm", hidden_size=hidden_size, num_blocks=3,
      coefficients=coefficients, bias=bias, input_init=input_init,
      bias_init=bias_init, params_type=MinLSTMParams)


# ---------------------------------------------------------------------------
# LRU.


class LRUParams(NamedTuple):
  """Parameters of `lru` (N = hidden_size, D = input_size = output size)."""

  nu_log: Array  # (N,): |λ| = exp(-exp(nu_log))
  theta_log: Array  # (N,): arg λ = exp(theta_log)
  gamma_log: Array  # (N,): input normalisation exp(gamma_log)
  B_re: Array  # (D, N)
  B_im: Array  # (D, N)
  C_re: Array  # (N, D)
  C_im: Array  # (N, D)
  D: Array  # (D,) skip connection


class LRUState(NamedTuple):
  """The complex state of `lru`, as real and imaginary parts."""

  re: Array  # (N,)
  im: Array  # (N,)


def lru(
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
) -> Cell:
  r"""The linear recurrent unit: a diagonal complex linear recurrence.

  .. math::
    λ &= \exp(-\exp(ν) + i \exp(θ)), \qquad
    h_t = λ ⊙ h_{t-1} + \exp(γ) ⊙ (x_t B) \\
    y_t &= \mathrm{Re}(h_t C) + D ⊙ x_t

  with complex ``B = B_re + i B_im``, ``C = C_re + i C_im``. The exponential
  parameterisation keeps ``|λ| < 1`` (stable) whatever the parameters, and
  ``γ = log sqrt(1 - |λ|^2)`` at initialisation normalises the state's
  scale. The output has the input's size (D), as in the paper, where the
  LRU sits inside a residual block.

  Args:
    hidden_size: N, the number of complex state units.
    r_min, r_max: ``|λ|`` is initialised uniformly on the ring
      ``r_min <= |λ| <= r_max`` (area-uniform, as the paper).
    max_phase: ``arg λ`` is initialised uniformly in ``[0, max_phase]``.

  Returns:
    A `Cell` with params `LRUParams` and carry `LRUState` ``(re: (N,),
    im: (N,))``; ``output_size`` is the input size, fixed by
    ``init_params``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.lru(8, r_min=0.9, r_max=0.999))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> ys, state = jax.jit(layer.apply)(params, jnp.ones((5, 3)))
    >>> ys.shape, state.re.shape
    ((5, 3), (8,))

  References:
    Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, Resurrecting
    Recurrent Neural Networks for Long Sequences, 2023.
  """
  N = checks.check_positive_int(hidden_size, "hidden_size")
  for name, value in (("r_min", r_min), ("r_max", r_max)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
      raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
  if not r_min < r_max:
    raise ValueError(f"r_max: expected r_min < r_max, got r_min={r_min}, r_max={r_max}")
  max_phase = checks.check_positive_float(max_phase, "max_phase")
  owner = f"lru(hidden_size={N})"

  def init_params(key, input_size, dtype=None):
    D, dtype = checks.init_args(input_size, dtype)
    work = checks.accumulation_dtype(dtype)
    k_u1, k_u2, k_b, k_c, k_d = jax.random.split(key, 5)
    u1 = jax.random.uniform(k_u1, (N,), work)
    u2 = jax.random.uniform(k_u2, (N,), work)
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    theta_log = jnp.log(max_phase * u2)
    modulus = jnp.exp(-jnp.exp(nu_log))
    gamma_log = jnp.log(jnp.sqrt(1 - jnp.square(modulus)))
    k_br, k_bi = jax.random.split(k_b)
    k_cr, k_ci = jax.random.split(k_c)
    normal = lambda k, shape, scale: scale * jax.random.normal(k, shape, work)
    params = LRUParams(
        nu_log, theta_log, gamma_log,
        normal(k_br, (D, N), 1 / math.sqrt(2 * D)),
        normal(k_bi, (D, N), 1 / math.sqrt(2 * D)),
        normal(k_cr, (N, D), 1 / math.sqrt(N)),
        normal(k_ci, (N, D), 1 / math.sqrt(N)),
        normal(k_d, (D,), 1.0))
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

  def check(params):
    checks.check_params(params, LRUParams, owner)
    for name in ("nu_log", "theta_log", "gamma_log"):
      checks.check_array_shape(getattr(params, name), (N,), f"params.{name}", owner)
    checks.check_input_matrix(params.B_re, N, "params.B_re", owner)
    D = params.B_re.shape[0]
    checks.check_array_shape(params.B_im, (D, N), "params.B_im", owner)
    checks.check_array_shape(params.C_re, (N, D), "params.C_re", owner)
    checks.check_array_shape(params.C_im, (N, D), "params.C_im", owner)
    checks.check_array_shape(params.D, (D,), "params.D", owner)

  def modulus_phase(params, dtype):
    """``|λ|`` and ``arg λ`` in the working dtype."""
    nu, theta = params.nu_log.astype(dtype), params.theta_log.astype(dtype)
    return jnp.exp(-jnp.exp(nu)), jnp.exp(theta)

  def project(params, xs):
    """``zx = [Re(γ x B), Im(γ x B), x]``, the input terms of all steps."""
    u_re = checks.matmul(xs, params.B_re)
    u_im = checks.matmul(xs, params.B_im)
    gamma = jnp.exp(params.gamma_log.astype(u_re.dtype))
    return jnp.concatenate([common.mul(u_re, gamma), common.mul(u_im, gamma),
                            xs.astype(u_re.dtype)], axis=-1)

  # The equation: h_t = λ h_{t-1} + u_t in complex arithmetic.
  def coefficients(params, zx):
    r, phase = modulus_phase(params, zx.dtype)
    lam = jax.lax.complex(r * jnp.cos(phase), r * jnp.sin(phase))
    u = jax.lax.complex(zx[..., :N], zx[..., N:2 * N])
    return jnp.broadcast_to(lam, u.shape), u

  def outputs(params, hs, zx):
    x = zx[..., 2 * N:]
    return (checks.matmul(jnp.real(hs), params.C_re)
            - checks.matmul(jnp.imag(hs), params.C_im) + common.mul(x, params.D))

  return linear_family(
      init_params=init_params, coefficients=coefficients, hidden_size=N,
      outputs=outputs, project=project, check=check,
      input_size=lambda params: params.B_re.shape[0],
      init_carry=common.zeros_carry(N, N, make=LRUState),
      to_state=lambda state: jax.lax.complex(state.re, state.im),
      from_state=lambda h: LRUState(jnp.real(h), jnp.imag(h)),
      config=dict(kind="lru", hidden_size=N, r_min=r_min, r_max=r_max,
                  max_phase=max_phase))



def _over_steps(fn):
  """``fn(params, *args)`` for one step's arrays, mapped over any leading
  axes that the arrays share (the engine calls it on every step at once)."""

  def mapped(params, *args):
    lead = jnp.shape(args[-1])[:-1]
    if not lead:
      return fn(params, *args)
    flat = [jnp.reshape(a, (-1,) + jnp.shape(a)[len(lead):]) for a in args]
    out = jax.vmap(lambda *a: fn(params, *a))(*flat)
    return jax.tree_util.tree_map(lambda v: jnp.reshape(v, lead + jnp.shape(v)[1:]), out)

  return mapped


def linear_cell(init_params, coefficients, hidden_size: int, *, output=None) -> Cell:
  r"""A user's own diagonal linear recurrence, run by the linear engine.

  .. math::
    (a_t, b_t) = \mathrm{coefficients}(θ, x_t), \qquad
    h_t = a_t ⊙ h_{t-1} + b_t, \qquad y_t = \mathrm{output}(θ, h_t, x_t)

  The gates come from the input alone, so `jaxrnn.rnn` evaluates the layer
  by a multiply-add ``lax.scan`` (``method="sequential"``, and ``"auto"``)
  or by ``jax.lax.associative_scan`` in O(log T) depth (``"parallel"``),
  with lengths, reverse over the valid prefix and resets, as it runs
  `min_gru`, `min_lstm` and `lru`; ``"reference"`` scans ``cell_apply``.

  Args:
    init_params: ``init_params(key, input_size, dtype=None) -> params``,
      any pytree.
    coefficients: ``coefficients(params, x) -> (a, b)`` for ONE step ``x:
      (input_size,)``, each of shape ``(hidden_size,)``.
    hidden_size: the size H of the state ``h``, which is the carry.
    output: ``output(params, h, x) -> y`` for one step; None: ``y = h``.

  Returns:
    A `Cell` whose carry is ``h: (hidden_size,)`` (zeros to start).

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> def init(key, input_size, dtype=None):
    ...   return {"W_a": jax.random.normal(key, (input_size, 4)),
    ...           "W_b": jnp.eye(input_size, 4)}
    >>> def coefficients(params, x):
    ...   return jax.nn.sigmoid(x @ params["W_a"]), x @ params["W_b"]
    >>> cell = jaxrnn.linear_cell(init, coefficients, 4)
    >>> layer = jaxrnn.rnn(cell, method="parallel")
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> xs = jax.random.normal(jax.random.key(1), (6, 3))
    >>> ys, h = jax.jit(layer.apply)(params, xs, length=5)
    >>> loop, _ = jax.jit(jaxrnn.rnn(cell, method="reference").apply)(params, xs, length=5)
    >>> bool(jnp.allclose(ys, loop, atol=1e-6)), bool(jnp.allclose(h, ys[4]))
    (True, True)
  """
  H = checks.check_positive_int(hidden_size, "hidden_size")
  for name, fn in (("init_params", init_params), ("coefficients", coefficients)):
    if not callable(fn):
      raise TypeError(f"{name}: expected a callable, got {checks.describe(fn)}")
  if output is not None and not callable(output):
    raise TypeError(f"output: expected a callable or None, got {checks.describe(output)}")

  def pair(params, x):
    a, b = coefficients(params, x)
    shapes = (tuple(jnp.shape(a)), tuple(jnp.shape(b)))
    if shapes != ((H,), (H,)):
      raise ValueError(f"coefficients: expected (a, b) of shapes ({H},) and ({H},) "
                       f"(hidden_size={H}), got shapes {shapes}")
    return a, b

  def check_inputs(params, xs, ndim):
    if ndim is not None and jnp.ndim(xs) != ndim:
      raise ValueError(f"x: expected one step of shape (input_size,), got shape "
                       f"{tuple(jnp.shape(xs))}")
    checks.check_floating(xs, "x" if ndim is not None else "xs")

  outputs = ((lambda params, hs, xs: hs) if output is None
             else _over_steps(lambda params, h, x: output(params, h, x)))
  return linear_family(
      init_params=init_params, coefficients=_over_steps(pair), hidden_size=H,
      outputs=outputs, project=lambda params, xs: xs, check=lambda params: None,
      input_size=lambda params: None, check_inputs=check_inputs,
      output_size=H if output is None else None,
      config=dict(kind="linear_cell", hidden_size=H))
