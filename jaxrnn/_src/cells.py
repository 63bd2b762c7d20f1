"""Recurrent cells: one time step of ONE example, as pure functions.

Weight layout (shared by every cell): the input matrix ``W_x`` and the
recurrent matrix ``W_h`` are stored apart, each with its gates fused along
the last axis, so that ``x @ W_x`` and ``h @ W_h`` are one product each::

  W_x: (input_size, G * H)     W_h: (H, G * H)     b_x, b_h: (G * H,)

``W_x x_t`` does not depend on the recurrence, so `jaxrnn.rnn` computes it
for all T steps as one large matrix product before the scan; only
``W_h h_{t-1}`` stays inside the loop. (One matrix ``W_m`` over the
concatenation ``[x_t, h_{t-1}]`` computes the same numbers but forces the
whole product inside the loop.) The two bias vectors are the ones PyTorch
has, so weights move between the libraries without loss.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell

Array = jax.Array


# ---------------------------------------------------------------------------
# Parameter and carry types.


class ElmanParams(NamedTuple):
  """Parameters of `elman`: ``h_t = φ(x_t W_x + b_x + h_{t-1} W_h + b_h)``."""

  W_x: Array  # (input_size, H)
  W_h: Array  # (H, H)
  b_x: Optional[Array]  # (H,), None when bias=False
  b_h: Optional[Array]  # (H,), None when bias=False


class LSTMParams(NamedTuple):
  """Parameters of `lstm`; gates fused in the order (i, f, g, o)."""

  W_x: Array  # (input_size, 4H)
  W_h: Array  # (P, 4H), P = proj_size if set, else H
  b_x: Optional[Array]  # (4H,), None when bias=False
  b_h: Optional[Array]  # (4H,), None when bias=False
  W_hr: Optional[Array] = None  # (H, P) output projection, only with proj_size


class LSTMState(NamedTuple):
  """The carry of `lstm`: hidden state and cell state."""

  h: Array  # (P,), P = proj_size if set, else H
  c: Array  # (H,)


class GRUParams(NamedTuple):
  """Parameters of `gru`; gates fused in the order (r, z, n)."""

  W_x: Array  # (input_size, 3H)
  W_h: Array  # (H, 3H)
  b_x: Optional[Array]  # (3H,), None when bias=False
  b_h: Optional[Array]  # (3H,), None when bias=False


class FusedHooks(NamedTuple):
  """How a built-in cell's step splits around its recurrent product (internal).

  A step is ``zx = x @ W_x + b_in`` and ``zh = hidden(carry) @ W_h``
  followed by elementwise work ``forward(extra, carry, zx, zh) -> (carry, y,
  residuals)``, where ``W_x, b_in, W_h, extra = split(params)``: ``b_in``
  is every bias that adds to ``zx`` (None without biases) and ``extra``
  holds the small parameters used in the elementwise part (a pytree,
  possibly None). The residuals are what cuDNN keeps: the gate activations.

  ``tangent(extra, carry, residuals, dcarry, dzx, dzh, dextra) -> (dcarry,
  dy)`` is the step's JVP, written to be linear in the tangents ``dcarry,
  dzx, dzh, dextra`` with every product taking a tangent first, so that no
  subexpression depends on primal values alone: JAX's transpose of it is the
  backward step and needs nothing recomputed.
  """

  split: Callable[[Any], tuple[Array, Optional[Array], Array, Any]]
  hidden: Callable[[Any], Array]
  forward: Callable[..., tuple[Any, Array, Any]]
  tangent: Callable[..., tuple[Any, Array]]

  def pointwise(self, extra, carry, zx_t, zh_t):
    carry, y, _ = self.forward(extra, carry, zx_t, zh_t)
    return carry, y


def _dsigmoid(dz, s):
  """``dz * s * (1 - s)``, tangent first."""
  ds = dz * s
  return ds - ds * s


def _dtanh(dz, t):
  """``dz * (1 - t**2)``, tangent first."""
  return dz - (dz * t) * t


ActivationArg = Union[str, Callable[[Array], Array]]
_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def _activation(activation: ActivationArg) -> Callable[[Array], Array]:
  if callable(activation):
    return activation
  if isinstance(activation, str) and activation in _ACTIVATIONS:
    return _ACTIVATIONS[activation]
  raise ValueError(
      f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, "
      f"got {activation!r}"
  )


# ---------------------------------------------------------------------------
# Shared machinery.


def _add(a: Array, b: Optional[Array]) -> Array:
  """``a + b`` with ``b`` broadcast over a's leading axes explicitly.

  Explicit, so that code runs under ``jax_numpy_rank_promotion="raise"``.
  """
  if b is None:
    return a
  return a + jnp.reshape(b, (1,) * (a.ndim - b.ndim) + b.shape)


def _bias_sum(a: Optional[Array], b: Optional[Array]) -> Optional[Array]:
  """``a + b`` where either may be absent (None)."""
  if a is None or b is None:
    return b if a is None else a
  return a + b


def _init_fused(key, input_size, dtype, *, hidden_size, rows_h, num_gates, bias,
                input_init, recurrent_init, bias_init):
  """Draws ``W_x``, ``W_h`` and the two biases of a gated cell."""
  input_size = checks.check_positive_int(input_size, "input_size")
  dtype = checks.default_float() if dtype is None else jnp.dtype(dtype)
  k_x, k_h, k_bx, k_bh = jax.random.split(key, 4)
  gh = num_gates * hidden_size
  W_x = inits.draw(input_init, k_x, (input_size, gh), dtype)
  W_h = inits.per_gate(recurrent_init, k_h, rows_h, hidden_size, num_gates, dtype)
  if not bias:
    return W_x, W_h, None, None
  return (W_x, W_h, inits.draw(bias_init, k_bx, (gh,), dtype),
          inits.draw(bias_init, k_bh, (gh,), dtype))


def _check_fused_params(params, params_type, owner, hidden_size, rows_h, num_gates):
  checks.check_params(params, params_type, owner)
  gh = num_gates * hidden_size
  if params.W_x.ndim != 2 or params.W_x.shape[1] != gh:
    raise ValueError(
        f"params.W_x: {owner} expects shape (input_size, {gh}), got "
        f"{tuple(params.W_x.shape)}"
    )
  checks.check_array_shape(params.W_h, (rows_h, gh), "params.W_h", owner)
  for name in ("b_x", "b_h"):
    value = getattr(params, name)
    if value is not None:
      checks.check_array_shape(value, (gh,), f"params.{name}", owner)


def _check_input(x, params, owner):
  input_size = params.W_x.shape[0]
  checks.check_array_shape(x, (input_size,), "x", owner)
  checks.check_floating(x, "x")


def _make_cell(*, init_params, init_carry, project, recurrence, check,
               hidden_size, output_size, fused, config) -> Cell:
  """Builds a `Cell` whose ``cell_apply`` is ``recurrence ∘ project``."""

  def project_inputs(params, xs):
    check(params)
    return project(params, xs)

  def cell_apply(params, carry, x):
    check(params)
    _check_input(x, params, "cell_apply")
    checks.check_carry(carry, init_carry(), "cell_apply")
    return recurrence(params, carry, project(params, x))

  if fused is not None:
    split = fused.split

    def checked_split(params):
      check(params)
      return split(params)

    fused = fused._replace(split=checked_split)

  return Cell(
      init_params=init_params,
      init_carry=init_carry,
      cell_apply=cell_apply,
      hidden_size=hidden_size,
      output_size=output_size,
      project_inputs=project_inputs,
      recurrence=recurrence,
      fused=fused,
      config=tuple(config.items()),
  )


def _zeros_carry(size):
  def init_carry(dtype=None):
    dtype = checks.default_float() if dtype is None else dtype
    return jnp.zeros((size,), dtype)
  return init_carry


# ---------------------------------------------------------------------------
# Elman.


def elman(
    hidden_size: int,
    *,
    activation: ActivationArg = "tanh",
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
  phi = _activation(activation)
  owner = f"elman(hidden_size={hidden_size})"

  def init_params(key, input_size, dtype=None):
    return ElmanParams(*_init_fused(
        key, input_size, dtype, hidden_size=hidden_size, rows_h=hidden_size,
        num_gates=1, bias=bias, input_init=input_init,
        recurrent_init=recurrent_init, bias_init=bias_init))

  def check(params):
    _check_fused_params(params, ElmanParams, owner, hidden_size, hidden_size, 1)

  def split(params):
    # Both biases are plain additive terms: they join the input projection.
    return params.W_x, _bias_sum(params.b_x, params.b_h), params.W_h, None

  def project(params, xs):
    W_x, b_in, _, _ = split(params)
    return _add(checks.matmul(xs, W_x), b_in)

  def forward(extra, h_tm1, zx_t, zh_t):
    del extra, h_tm1
    h_t = phi(zx_t + zh_t)
    # relu keeps its mask, so the tangent needs no comparison of primals.
    return h_t, h_t, (h_t > 0 if activation == "relu" else h_t)

  def tangent(extra, h_tm1, res, dh_tm1, dzx_t, dzh_t, dextra):
    del extra, h_tm1, dh_tm1, dextra
    dz = dzx_t + dzh_t
    if activation == "relu":
      dh = jnp.where(res, dz, jnp.zeros((), dz.dtype))
    else:
      dh = _dtanh(dz, res)
    return dh, dh

  def recurrence(params, h_tm1, zx_t):
    h_t, y_t, _ = forward(None, h_tm1, zx_t, checks.matmul(h_tm1, params.W_h))
    return h_t, y_t

  return _make_cell(
      init_params=init_params, init_carry=_zeros_carry(hidden_size),
      project=project, recurrence=recurrence, check=check,
      hidden_size=hidden_size, output_size=hidden_size,
      fused=(FusedHooks(split, lambda h: h, forward, tangent)
             if activation in ("tanh", "relu") else None),
      config=dict(kind="elman", hidden_size=hidden_size, activation=activation,
                  bias=bias))


# ---------------------------------------------------------------------------
# LSTM.


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    proj_size: Optional[int] = None,
    bias: bool = True,
    input_init: inits.Initializer = inits.default_input_init,
    recurrent_init: inits.Initializer = inits.default_recurrent_init,
    bias_init: inits.Initializer = inits.default_bias_init,
    projection_init: inits.Initializer = inits.default_input_init,
) -> Cell:
  r"""The long short-term memory cell (gates fused in the order i, f, g, o).

  .. math::
    z_t &= x_t W_x + b_x + h_{t-1} W_h + b_h = [z^i, z^f, z^g, z^o] \\
    i_t &= σ(z^i), \quad f_t = σ(z^f), \quad g_t = \tanh(z^g),
      \quad o_t = σ(z^o) \\
    c_t &= f_t ⊙ c_{t-1} + i_t ⊙ g_t \\
    h_t &= o_t ⊙ \tanh(c_t) \quad (\text{then } h_t W_{hr}
      \text{ with proj_size}), \qquad y_t = h_t

  Args:
    hidden_size: H, the size of the cell state.
    forget_bias: added to the forget-gate slice of ``b_x`` at
      initialisation (ignored when ``bias=False``).
    proj_size: P; if set, ``h_t`` is projected to size P by ``W_hr: (H, P)``
      (PyTorch's ``proj_size``) and the recurrent matrix is ``(P, 4H)``.
    bias: whether the cell has the biases ``b_x`` and ``b_h``.
    input_init, recurrent_init, bias_init, projection_init: initialisers
      ``init(key, shape, dtype)`` for ``W_x``, each ``(P, H)`` gate block of
      ``W_h``, the biases, and ``W_hr``.

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

  References:
    Hochreiter & Schmidhuber, Long Short-Term Memory, 1997; Gers et al.,
    Learning to Forget, 2000.
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  if proj_size is not None:
    proj_size = checks.check_positive_int(proj_size, "proj_size")
    if proj_size >= hidden_size:
      raise ValueError(
          f"proj_size: expected a size smaller than hidden_size={hidden_size}, "
          f"got {proj_size}"
      )
  out_size = hidden_size if proj_size is None else proj_size
  H = hidden_size
  owner = f"lstm(hidden_size={hidden_size}" + (
      f", proj_size={proj_size})" if proj_size else ")")

  def init_params(key, input_size, dtype=None):
    key, k_r = jax.random.split(key)
    W_x, W_h, b_x, b_h = _init_fused(
        key, input_size, dtype, hidden_size=H, rows_h=out_size, num_gates=4,
        bias=bias, input_init=input_init, recurrent_init=recurrent_init,
        bias_init=bias_init)
    if b_x is not None:
      b_x = b_x.at[H:2 * H].add(jnp.asarray(forget_bias, b_x.dtype))
    W_hr = None
    if proj_size is not None:
      W_hr = inits.draw(projection_init, k_r, (H, proj_size), W_x.dtype)
    return LSTMParams(W_x, W_h, b_x, b_h, W_hr)

  def check(params):
    _check_fused_params(params, LSTMParams, owner, H, out_size, 4)
    if proj_size is None and params.W_hr is not None:
      raise ValueError(f"params.W_hr: {owner} has no projection, got an array")
    if proj_size is not None:
      if params.W_hr is None:
        raise ValueError(f"params.W_hr: {owner} expects shape ({H}, {proj_size}), got None")
      checks.check_array_shape(params.W_hr, (H, proj_size), "params.W_hr", owner)

  def init_carry(dtype=None):
    dtype = checks.default_float() if dtype is None else dtype
    return LSTMState(h=jnp.zeros((out_size,), dtype), c=jnp.zeros((H,), dtype))

  def split(params):
    return params.W_x, _bias_sum(params.b_x, params.b_h), params.W_h, None

  def project(params, xs):
    W_x, b_in, _, _ = split(params)
    return _add(checks.matmul(xs, W_x), b_in)

  def forward(extra, carry, zx_t, zh_t):
    del extra
    z_i, z_f, z_g, z_o = jnp.split(zx_t + zh_t, 4, axis=-1)
    i_t, f_t = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f)
    g_t, o_t = jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    c_t = f_t * carry.c + i_t * g_t
    tanh_c = jnp.tanh(c_t)
    h_t = o_t * tanh_c
    return LSTMState(h_t, c_t), h_t, (i_t, f_t, g_t, o_t, tanh_c)

  def tangent(extra, carry, res, dcarry, dzx_t, dzh_t, dextra):
    del extra, dextra
    i_t, f_t, g_t, o_t, tanh_c = res
    # split (not slices): its transpose is one concatenate, where the
    # transpose of four slices is four pads summed.
    dz_i, dz_f, dz_g, dz_o = jnp.split(dzx_t + dzh_t, 4, axis=-1)
    di, df = _dsigmoid(dz_i, i_t), _dsigmoid(dz_f, f_t)
    dg, do = _dtanh(dz_g, g_t), _dsigmoid(dz_o, o_t)
    dc = df * carry.c + dcarry.c * f_t + di * g_t + dg * i_t
    dh = do * tanh_c + _dtanh(dc, tanh_c) * o_t
    return LSTMState(dh, dc), dh

  def recurrence(params, carry, zx_t):
    new, h_t, _ = forward(None, carry, zx_t, checks.matmul(carry.h, params.W_h))
    if params.W_hr is None:
      return new, h_t
    h_t = checks.matmul(h_t, params.W_hr)
    return LSTMState(h_t, new.c), h_t

  fused = None
  if proj_size is None:
    fused = FusedHooks(split, lambda c: c.h, forward, tangent)
  return _make_cell(
      init_params=init_params, init_carry=init_carry, project=project,
      recurrence=recurrence, check=check, hidden_size=H, output_size=out_size,
      fused=fused,
      config=dict(kind="lstm", hidden_size=H, proj_size=proj_size, bias=bias,
                  forget_bias=forget_bias))


# ---------------------------------------------------------------------------
# GRU.


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
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

  Args:
    hidden_size: H, the size of the state.
    reset_after: where the reset gate is applied (see above).
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
    2014.
  """
  hidden_size = checks.check_positive_int(hidden_size, "hidden_size")
  H = hidden_size
  owner = f"gru(hidden_size={hidden_size})"

  def init_params(key, input_size, dtype=None):
    return GRUParams(*_init_fused(
        key, input_size, dtype, hidden_size=H, rows_h=H, num_gates=3,
        bias=bias, input_init=input_init, recurrent_init=recurrent_init,
        bias_init=bias_init))

  def check(params):
    _check_fused_params(params, GRUParams, owner, H, H, 3)

  def split(params):
    if params.b_h is None:
      return params.W_x, params.b_x, params.W_h, None
    # b_h^r and b_h^z are plain additive terms; b_h^n sits inside r ⊙ (...).
    b_in = _bias_sum(params.b_x, params.b_h.at[2 * H:].set(0))
    return params.W_x, b_in, params.W_h, params.b_h[2 * H:]

  def project(params, xs):
    W_x, b_in, _, _ = split(params)
    return _add(checks.matmul(xs, W_x), b_in)

  def forward(b_hn, h_tm1, zx_t, zh_t):
    x_r, x_z, x_n = jnp.split(zx_t, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(zh_t, 3, axis=-1)
    r_t, z_t = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    hn_t = _add(h_n, b_hn)
    n_t = jnp.tanh(x_n + r_t * hn_t)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t, (r_t, z_t, n_t, hn_t)

  def tangent(b_hn, h_tm1, res, dh_tm1, dzx_t, dzh_t, db_hn):
    r_t, z_t, n_t, hn_t = res
    dx_r, dx_z, dx_n = jnp.split(dzx_t, 3, axis=-1)  # split: see lstm
    dh_r, dh_z, dh_n = jnp.split(dzh_t, 3, axis=-1)
    dr = _dsigmoid(dx_r + dh_r, r_t)
    dz = _dsigmoid(dx_z + dh_z, z_t)
    dhn = _add(dh_n, None if b_hn is None else db_hn)
    dn = _dtanh(dx_n + dr * hn_t + dhn * r_t, n_t)
    dh = dn - dz * n_t - dn * z_t + dz * h_tm1 + dh_tm1 * z_t
    return dh, dh

  def recurrence_after(params, h_tm1, zx_t):
    _, _, W_h, b_hn = split(params)
    h_t, y_t, _ = forward(b_hn, h_tm1, zx_t, checks.matmul(h_tm1, W_h))
    return h_t, y_t

  def recurrence_before(params, h_tm1, zx_t):
    _, _, W_h, b_hn = split(params)
    zh_rz = checks.matmul(h_tm1, W_h[:, :2 * H])
    r_t = jax.nn.sigmoid(zx_t[..., :H] + zh_rz[..., :H])
    z_t = jax.nn.sigmoid(zx_t[..., H:2 * H] + zh_rz[..., H:])
    zh_n = _add(checks.matmul(r_t * h_tm1, W_h[:, 2 * H:]), b_hn)
    n_t = jnp.tanh(zx_t[..., 2 * H:] + zh_n)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t

  if reset_after:
    recurrence = recurrence_after
    fused = FusedHooks(split, lambda h: h, forward, tangent)
  else:
    recurrence, fused = recurrence_before, None
  return _make_cell(
      init_params=init_params, init_carry=_zeros_carry(H), project=project,
      recurrence=recurrence, check=check, hidden_size=H, output_size=H,
      fused=fused,
      config=dict(kind="gru", hidden_size=H, reset_after=reset_after, bias=bias))
