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
import numpy as np

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


class LayerNormParams(NamedTuple):
  """Gain and offset of one layer normalisation (Ba et al. 2016)."""

  scale: Array  # (N,), initialised to ones
  offset: Array  # (N,), initialised to zeros


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


class GRUParams(NamedTuple):
  """Parameters of `gru`; gates fused in the order (r, z, n)."""

  W_x: Array  # (input_size, 3H)
  W_h: Array  # (H, 3H)
  b_x: Optional[Array]  # (3H,), None when bias=False
  b_h: Optional[Array]  # (3H,), None when bias=False
  ln_x: Optional[LayerNormParams] = None  # (3H,) each, only with layer_norm
  ln_h: Optional[LayerNormParams] = None  # (3H,) each, only with layer_norm


class FusedHooks(NamedTuple):
  """How a built-in cell's step splits around its recurrent product (internal).

  A step is ``zx = x @ W_x + b_in`` and ``zh = hidden(carry) @ W_h``
  followed by elementwise work ``forward(extra, carry, zx, zh) -> (carry, y,
  residuals)``, where ``W_x, b_in, W_h, extra = split(params)``: ``b_in``
  is every bias that adds to ``zx`` (None without biases) and ``extra``
  holds the small parameters used in the elementwise part (a pytree,
  possibly None). The residuals are what cuDNN keeps: the gate activations.

  ``tangent(extra, h_tm1, residuals, dcarry, dzx, dzh, dextra) -> (dcarry,
  dy)`` is the step's JVP (``h_tm1 = hidden(carry)`` before the step),
  written to be linear in the tangents ``dcarry, dzx, dzh, dextra`` with
  every product taking a tangent first, so that no subexpression depends on
  primal values alone: JAX's transpose of it is the backward step and needs
  nothing recomputed.

  Every array a hook sees has the feature axis first: ``(G*H,)`` for one
  example, or ``(G*H, B)`` for a batch held feature-major by the batched
  fused path (`jaxrnn._src.engine.fused_batch`); gate blocks are split along axis
  0, and ``extra`` leaves then carry a trailing axis of 1.
  """

  split: Callable[[Any], tuple[Array, Optional[Array], Array, Any]]
  hidden: Callable[[Any], Array]
  forward: Callable[..., tuple[Any, Array, Any]]
  tangent: Callable[..., tuple[Any, Array]]
  # Whether the batched path may project every step's input before the loop
  # at small batch (`fused_batch.HOIST_MAX_BATCH`). Measured per cell: at
  # B = 1 it made the LSTM and Elman forward 1.4x faster and the GRU one 2x
  # slower.
  hoist_inputs: bool = True

  def pointwise(self, extra, carry, zx_t, zh_t):
    carry, y, _ = self.forward(extra, carry, zx_t, zh_t)
    return carry, y


def _gate_scale(hidden_size, like, sigmoid_value):
  """``sigmoid_value`` on the i, f, o blocks of ``like``, 1 on g.

  Shaped ``(4H,) + (1,) * (like.ndim - 1)`` to broadcast along the feature
  axis 0.
  """
  scale = np.repeat(np.array([sigmoid_value, sigmoid_value, 1.0, sigmoid_value]),
                    hidden_size)
  return jnp.asarray(scale.reshape((-1,) + (1,) * (like.ndim - 1)), like.dtype)


def _dsigmoid(dz, s):
  """``dz * s * (1 - s)``, tangent first."""
  ds = dz * s
  return ds - ds * s


def _dtanh(dz, t):
  """``dz * (1 - t**2)``, tangent first."""
  return dz - (dz * t) * t


ActivationArg = Union[str, Callable[[Array], Array]]
# Each named activation with the ways JAX spells it (the first is the one
# used), so that passing one of these functions selects the named activation
# (and with it the fused paths), not an opaque callable.
ACTIVATION_FUNCTIONS = {
    "tanh": (jnp.tanh, jax.lax.tanh, getattr(jax.nn, "tanh", jnp.tanh)),
    "relu": (jax.nn.relu,),
}
_ACTIVATIONS = {name: functions[0]
                for name, functions in ACTIVATION_FUNCTIONS.items()}


def _activation_name(activation: ActivationArg) -> ActivationArg:
  """``"tanh"``/``"relu"`` for JAX's own tanh/relu functions, else as given."""
  for name, functions in ACTIVATION_FUNCTIONS.items():
    if any(activation is f for f in functions):
      return name
  return activation


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


def _masked(h: Array, recurrent_mask: Optional[Array]) -> Array:
  """``h`` as it enters a recurrent product, under variational dropout."""
  return h if recurrent_mask is None else h * recurrent_mask.astype(h.dtype)


def _layer_norm(z: Array, params: Optional[LayerNormParams], eps: float) -> Array:
  """Normalises ``z: (..., N)`` over its last axis, then scales and shifts.

  Statistics are computed in ``z``'s dtype (float32 for 16-bit params, whose
  products accumulate in float32).
  """
  if params is None:
    return z
  mean = jnp.mean(z, axis=-1, keepdims=True)
  centred = z - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  normed = centred * jax.lax.rsqrt(var + jnp.asarray(eps, z.dtype))
  scale = params.scale.astype(z.dtype)
  return _add(normed * jnp.reshape(scale, (1,) * (z.ndim - 1) + scale.shape),
              params.offset.astype(z.dtype))


def _init_layer_norm(size: int, dtype) -> LayerNormParams:
  return LayerNormParams(jnp.ones((size,), dtype), jnp.zeros((size,), dtype))


def _check_layer_norm(value, size, name, owner, enabled):
  if not enabled:
    if value is not None:
      raise ValueError(f"params.{name}: {owner} has no layer_norm, got {_kind(value)}")
    return
  if not isinstance(value, LayerNormParams):
    raise TypeError(
        f"params.{name}: {owner} expects LayerNormParams(scale, offset), got "
        f"{_kind(value)}")
  checks.check_array_shape(value.scale, (size,), f"params.{name}.scale", owner)
  checks.check_array_shape(value.offset, (size,), f"params.{name}.offset", owner)


def _kind(value) -> str:
  return "None" if value is None else type(value).__name__


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
      ``jnp.tanh``, ``jax.lax.tanh`` and ``jax.nn.relu`` count as
      ``"tanh"`` and ``"relu"``; only these two have the fused scans of
      `jaxrnn.rnn`, any other callable runs the plain ones.
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
  activation = _activation_name(activation)
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

  def recurrence(params, h_tm1, zx_t, recurrent_mask=None):
    zh_t = checks.matmul(_masked(h_tm1, recurrent_mask), params.W_h)
    h_t, y_t, _ = forward(None, h_tm1, zx_t, zh_t)
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
          f"got {proj_size}"
      )
  peephole = checks.check_bool(peephole, "peephole")
  layer_norm = checks.check_bool(layer_norm, "layer_norm")
  layer_norm_eps = checks.check_positive_float(layer_norm_eps, "layer_norm_eps")
  out_size = hidden_size if proj_size is None else proj_size
  H = hidden_size
  options = "".join(
      [f", proj_size={proj_size}" if proj_size else "",
       ", peephole=True" if peephole else "",
       ", layer_norm=True" if layer_norm else ""])
  owner = f"lstm(hidden_size={hidden_size}{options})"

  def init_params(key, input_size, dtype=None):
    key, k_r = jax.random.split(key)
    W_x, W_h, b_x, b_h = _init_fused(
        key, input_size, dtype, hidden_size=H, rows_h=out_size, num_gates=4,
        bias=bias, input_init=input_init, recurrent_init=recurrent_init,
        bias_init=bias_init)
    dtype = W_x.dtype
    if b_x is not None:
      b_x = b_x.at[H:2 * H].add(jnp.asarray(forget_bias, b_x.dtype))
    W_hr = W_c = ln_x = ln_h = ln_c = None
    if proj_size is not None:
      W_hr = inits.draw(projection_init, k_r, (H, proj_size), dtype)
    if peephole:
      W_c = inits.draw(peephole_init, jax.random.fold_in(k_r, 1), (3, H), dtype)
    if layer_norm:
      ln_x, ln_h = _init_layer_norm(4 * H, dtype), _init_layer_norm(4 * H, dtype)
      ln_c = _init_layer_norm(H, dtype)
    return LSTMParams(W_x, W_h, b_x, b_h, W_hr, W_c, ln_x, ln_h, ln_c)

  def check(params):
    _check_fused_params(params, LSTMParams, owner, H, out_size, 4)
    checks.check_optional_array(params.W_hr, (H, out_size), "params.W_hr", owner,
                                present=proj_size is not None, what="projection")
    checks.check_optional_array(params.W_c, (3, H), "params.W_c", owner,
                                present=peephole, what="peepholes")
    _check_layer_norm(params.ln_x, 4 * H, "ln_x", owner, layer_norm)
    _check_layer_norm(params.ln_h, 4 * H, "ln_h", owner, layer_norm)
    _check_layer_norm(params.ln_c, H, "ln_c", owner, layer_norm)

  def init_carry(dtype=None):
    dtype = checks.default_float() if dtype is None else dtype
    return LSTMState(h=jnp.zeros((out_size,), dtype), c=jnp.zeros((H,), dtype))

  def split(params):
    return params.W_x, _bias_sum(params.b_x, params.b_h), params.W_h, None

  def project(params, xs):
    W_x, b_in, _, _ = split(params)
    zx = _layer_norm(checks.matmul(xs, W_x), params.ln_x, layer_norm_eps)
    return _add(zx, b_in)

  def forward(extra, carry, zx_t, zh_t):
    del extra
    # One tanh over all 4H pre-activations (σ(z) = (1 + tanh(z/2)) / 2):
    # a nonlinearity over one contiguous array vectorises; four over
    # slices of it measured 3-5x slower on CPU.
    z = zx_t + zh_t
    t = jnp.tanh(z * _gate_scale(H, z, 0.5))
    s = 0.5 * t + 0.5
    i_t, f_t, _, o_t = jnp.split(s, 4, axis=0)
    g_t = jnp.split(t, 4, axis=0)[2]
    c_t = f_t * carry.c + i_t * g_t
    tanh_c = jnp.tanh(c_t)
    h_t = o_t * tanh_c
    # Residuals, with every factor the backward step needs folded in:
    # p = (g, c_{t-1}, i, tanh c_t) ⊙ d(i, f, g, o)/dz, so that the tangent
    # is (dc, dh) = (dc_{t-1} f + Σ_{i,f,g} dz ⊙ p, dc ⊙ a + dz_o ⊙ p_o).
    p = (jnp.concatenate([g_t, carry.c, i_t, tanh_c], axis=0)
         * _dtanh(_gate_scale(H, t, 0.25), t))
    a = o_t * _dtanh(jnp.ones((), t.dtype), tanh_c)
    return LSTMState(h_t, c_t), h_t, (p, a, f_t)

  def tangent(extra, h_tm1, res, dcarry, dzx_t, dzh_t, dextra):
    del extra, h_tm1, dextra
    p, a, f_t = res
    q_i, q_f, q_g, q_o = jnp.split((dzx_t + dzh_t) * p, 4, axis=0)
    dc = dcarry.c * f_t + q_i + q_f + q_g
    dh = dc * a + q_o
    return LSTMState(dh, dc), dh

  def recurrence(params, carry, zx_t, recurrent_mask=None):
    zh_t = checks.matmul(_masked(carry.h, recurrent_mask), params.W_h)
    zh_t = _layer_norm(zh_t, params.ln_h, layer_norm_eps)
    if not (peephole or layer_norm):
      new, h_t, _ = forward(None, carry, zx_t, zh_t)
    else:
      z_i, z_f, z_g, z_o = jnp.split(zx_t + zh_t, 4, axis=-1)
      c_tm1 = carry.c
      if peephole:
        w_i, w_f, w_o = params.W_c.astype(z_i.dtype)
        z_i, z_f = z_i + w_i * c_tm1, z_f + w_f * c_tm1
      c_t = jax.nn.sigmoid(z_f) * c_tm1 + jax.nn.sigmoid(z_i) * jnp.tanh(z_g)
      if peephole:
        z_o = z_o + w_o * c_t
      h_t = jax.nn.sigmoid(z_o) * jnp.tanh(_layer_norm(c_t, params.ln_c, layer_norm_eps))
      new = LSTMState(h_t, c_t)
    if params.W_hr is None:
      return new, h_t
    h_t = checks.matmul(h_t, params.W_hr)
    return LSTMState(h_t, new.c), h_t

  fused = None
  if proj_size is None and not peephole and not layer_norm:
    fused = FusedHooks(split, lambda c: c.h, forward, tangent)
  return _make_cell(
      init_params=init_params, init_carry=init_carry, project=project,
      recurrence=recurrence, check=check, hidden_size=H, output_size=out_size,
      fused=fused,
      config=dict(kind="lstm", hidden_size=H, proj_size=proj_size, bias=bias,
                  forget_bias=forget_bias, peephole=peephole,
                  layer_norm=layer_norm, layer_norm_eps=layer_norm_eps))


# ---------------------------------------------------------------------------
# GRU.


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
  layer_norm_eps = checks.check_positive_float(layer_norm_eps, "layer_norm_eps")
  if layer_norm and not reset_after:
    raise ValueError(
        "layer_norm: needs reset_after=True (one recurrent product to "
        "normalise), got reset_after=False")
  H = hidden_size
  owner = f"gru(hidden_size={hidden_size}" + (", layer_norm=True)" if layer_norm else ")")

  def init_params(key, input_size, dtype=None):
    W_x, W_h, b_x, b_h = _init_fused(
        key, input_size, dtype, hidden_size=H, rows_h=H, num_gates=3,
        bias=bias, input_init=input_init, recurrent_init=recurrent_init,
        bias_init=bias_init)
    ln_x = ln_h = None
    if layer_norm:
      ln_x, ln_h = _init_layer_norm(3 * H, W_x.dtype), _init_layer_norm(3 * H, W_x.dtype)
    return GRUParams(W_x, W_h, b_x, b_h, ln_x, ln_h)

  def check(params):
    _check_fused_params(params, GRUParams, owner, H, H, 3)
    _check_layer_norm(params.ln_x, 3 * H, "ln_x", owner, layer_norm)
    _check_layer_norm(params.ln_h, 3 * H, "ln_h", owner, layer_norm)

  def split(params):
    if params.b_h is None:
      return params.W_x, params.b_x, params.W_h, None
    # b_h^r and b_h^z are plain additive terms; b_h^n sits inside r ⊙ (...).
    b_in = _bias_sum(params.b_x, params.b_h.at[2 * H:].set(0))
    return params.W_x, b_in, params.W_h, params.b_h[2 * H:]

  def project(params, xs):
    W_x, b_in, _, _ = split(params)
    return _add(_layer_norm(checks.matmul(xs, W_x), params.ln_x, layer_norm_eps), b_in)

  def forward(b_hn, h_tm1, zx_t, zh_t):
    x_r, x_z, x_n = jnp.split(zx_t, 3, axis=0)
    h_r, h_z, h_n = jnp.split(zh_t, 3, axis=0)
    r_t, z_t = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    hn_t = _add(h_n, b_hn)
    n_t = jnp.tanh(x_n + r_t * hn_t)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t, (r_t, z_t, n_t, hn_t)

  def tangent(b_hn, h_tm1, res, dh_tm1, dzx_t, dzh_t, db_hn):
    r_t, z_t, n_t, hn_t = res
    dx_r, dx_z, dx_n = jnp.split(dzx_t, 3, axis=0)  # split: see lstm
    dh_r, dh_z, dh_n = jnp.split(dzh_t, 3, axis=0)
    dr = _dsigmoid(dx_r + dh_r, r_t)
    dz = _dsigmoid(dx_z + dh_z, z_t)
    dhn = _add(dh_n, None if b_hn is None else db_hn)
    dn = _dtanh(dx_n + dr * hn_t + dhn * r_t, n_t)
    dh = dn - dz * n_t - dn * z_t + dz * h_tm1 + dh_tm1 * z_t
    return dh, dh

  def recurrence_after(params, h_tm1, zx_t, recurrent_mask=None):
    _, _, W_h, b_hn = split(params)
    zh_t = checks.matmul(_masked(h_tm1, recurrent_mask), W_h)
    zh_t = _layer_norm(zh_t, params.ln_h, layer_norm_eps)
    h_t, y_t, _ = forward(b_hn, h_tm1, zx_t, zh_t)
    return h_t, y_t

  def recurrence_before(params, h_tm1, zx_t, recurrent_mask=None):
    _, _, W_h, b_hn = split(params)
    h_in = _masked(h_tm1, recurrent_mask)
    zh_rz = checks.matmul(h_in, W_h[:, :2 * H])
    r_t = jax.nn.sigmoid(zx_t[..., :H] + zh_rz[..., :H])
    z_t = jax.nn.sigmoid(zx_t[..., H:2 * H] + zh_rz[..., H:])
    zh_n = _add(checks.matmul(r_t * h_in, W_h[:, 2 * H:]), b_hn)
    n_t = jnp.tanh(zx_t[..., 2 * H:] + zh_n)
    h_t = (1 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t

  if reset_after:
    recurrence = recurrence_after
    fused = None if layer_norm else FusedHooks(split, lambda h: h, forward, tangent,
                                               hoist_inputs=False)
  else:
    recurrence, fused = recurrence_before, None
  return _make_cell(
      init_params=init_params, init_carry=_zeros_carry(H), project=project,
      recurrence=recurrence, check=check, hidden_size=H, output_size=H,
      fused=fused,
      config=dict(kind="gru", hidden_size=H, reset_after=reset_after, bias=bias,
                  layer_norm=layer_norm, layer_norm_eps=layer_norm_eps))
