"""Machinery shared by the built-in cells: weights, activations, checks, and
`build`, which makes a `Cell` from a cell's one equation.

Weight layout (shared by every cell): the input matrix ``W_x`` and the
recurrent matrix ``W_h`` are stored apart, each with its gates fused along
the last axis, so that ``x @ W_x`` and ``h @ W_h`` are one product each::

  W_x: (input_size, G * H)     W_h: (H, G * H)     b_x, b_h: (G * H,)

``W_x x_t`` does not depend on the recurrence, so `jaxrnn.rnn` can compute
it for all T steps as one matrix product outside the step's dependency
chain; only ``W_h h_{t-1}`` stays inside the loop. The two bias vectors are
the ones PyTorch has, so weights move between the libraries without loss.

Every array a cell's equation sees has its features on the LAST axis.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.engine import hooks as hooks_lib

Array = jax.Array


class LayerNormParams(NamedTuple):
  """Gain and offset of one layer normalisation (Ba et al. 2016)."""

  scale: Array  # (N,), initialised to ones
  offset: Array  # (N,), initialised to zeros


# ---------------------------------------------------------------------------
# Activations.

ActivationArg = Union[str, Callable[[Array], Array]]
# Each named activation with the ways JAX spells it (the first is the one
# used), so that passing one of these functions selects the named activation
# (and with it the hand-written tangent of the fused path).
ACTIVATION_FUNCTIONS = {
    "tanh": (jnp.tanh, jax.lax.tanh, getattr(jax.nn, "tanh", jnp.tanh)),
    "relu": (jax.nn.relu,),
}


def activation_name(activation: ActivationArg) -> ActivationArg:
  """``"tanh"``/``"relu"`` for JAX's own tanh/relu functions, else as given."""
  for name, functions in ACTIVATION_FUNCTIONS.items():
    if any(activation is f for f in functions):
      return name
  return activation


def activation_function(activation: ActivationArg) -> Callable[[Array], Array]:
  if callable(activation):
    return activation
  if isinstance(activation, str) and activation in ACTIVATION_FUNCTIONS:
    return ACTIVATION_FUNCTIONS[activation][0]
  raise ValueError(
      f"activation: expected one of {sorted(ACTIVATION_FUNCTIONS)} or a "
      f"callable, got {activation!r}")


def dsigmoid(dz: Array, s: Array) -> Array:
  """``dz * s * (1 - s)``, tangent first (``s = σ(z)``)."""
  ds = dz * s
  return ds - ds * s


def dtanh(dz: Array, t: Array) -> Array:
  """``dz * (1 - t**2)``, tangent first (``t = tanh(z)``)."""
  return dz - (dz * t) * t


# ---------------------------------------------------------------------------
# Small array helpers (explicit broadcasting: the code runs under
# ``jax_numpy_rank_promotion="raise"``).


def add(a: Array, b: Optional[Array]) -> Array:
  """``a + b`` with ``b`` broadcast over a's leading axes; ``b`` may be None."""
  if b is None:
    return a
  return a + jnp.reshape(b.astype(a.dtype), (1,) * (a.ndim - b.ndim) + b.shape)


def mul(a: Array, b: Array) -> Array:
  """``a * b`` with ``b`` broadcast over a's leading axes."""
  return a * jnp.reshape(b.astype(a.dtype), (1,) * (a.ndim - b.ndim) + b.shape)


def bias_sum(a: Optional[Array], b: Optional[Array]) -> Optional[Array]:
  """``a + b`` where either may be absent (None)."""
  if a is None or b is None:
    return b if a is None else a
  return a + b


def layer_norm(z: Array, params: Optional[LayerNormParams], eps: float) -> Array:
  """Normalises ``z: (..., N)`` over its last axis, then scales and shifts.

  The identity when ``params`` is None. Statistics are computed in ``z``'s
  dtype (float32 for 16-bit params, whose products accumulate in float32).
  """
  if params is None:
    return z
  mean = jnp.mean(z, axis=-1, keepdims=True)
  centred = z - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  normed = centred * jax.lax.rsqrt(var + jnp.asarray(eps, z.dtype))
  return add(mul(normed, params.scale), params.offset)


def init_layer_norm(size: int, dtype) -> LayerNormParams:
  return LayerNormParams(jnp.ones((size,), dtype), jnp.zeros((size,), dtype))


def _kind(value) -> str:
  return "None" if value is None else type(value).__name__


def check_layer_norm(value, size, name, owner, enabled):
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


# ---------------------------------------------------------------------------
# Gated cells' weights.


def init_gated(key, input_size, dtype, initializers, *, hidden_size, rows_h,
               num_gates, bias):
  """Draws ``W_x``, ``W_h`` and the two biases of a gated cell."""
  input_size, dtype = checks.init_args(input_size, dtype)
  input_init, recurrent_init, bias_init = initializers
  k_x, k_h, k_bx, k_bh = jax.random.split(key, 4)
  gh = num_gates * hidden_size
  W_x = inits.draw(input_init, k_x, (input_size, gh), dtype)
  W_h = inits.per_gate(recurrent_init, k_h, rows_h, hidden_size, num_gates, dtype)
  if not bias:
    return W_x, W_h, None, None
  return (W_x, W_h, inits.draw(bias_init, k_bx, (gh,), dtype),
          inits.draw(bias_init, k_bh, (gh,), dtype))


def check_gated(params, params_type, owner, hidden_size, rows_h, num_gates):
  checks.check_params(params, params_type, owner)
  gh = num_gates * hidden_size
  checks.check_input_matrix(params.W_x, gh, "params.W_x", owner)
  checks.check_array_shape(params.W_h, (rows_h, gh), "params.W_h", owner)
  for name in ("b_x", "b_h"):
    value = getattr(params, name)
    if value is not None:
      checks.check_array_shape(value, (gh,), f"params.{name}", owner)


def zeros_carry(*shapes, make=None) -> Callable[..., Any]:
  """``init_carry``: zeros of each shape, as ``make(*zeros)`` (or one array)."""
  def init_carry(dtype=None):
    dtype = checks.default_float() if dtype is None else dtype
    zeros = [jnp.zeros(shape, dtype) for shape in shapes]
    return zeros[0] if make is None else make(*zeros)
  return init_carry


def recur(params, h: Array) -> Array:
  """``h W_h``, the recurrent product of the cells with a matrix ``W_h``."""
  return checks.matmul(h, params.W_h)


def project_b(params, xs: Array) -> Array:
  """``xs W_x + b``, the input projection of the cells with one bias ``b``."""
  return add(checks.matmul(xs, params.W_x), params.b)


def masked_hidden(h: Array, h_mask: Optional[Array]) -> Array:
  """``h`` as it enters a recurrent product, under variational dropout."""
  return h if h_mask is None else h * h_mask.astype(h.dtype)


# ---------------------------------------------------------------------------
# Building a cell from its equation.


def build(*, init_params, init_carry, check, project, config, check_inputs=None,
          input_size=None, hidden_size, output_size, step=None, product=None,
          linear=None, input_ndim=1, chunkwise=None) -> Cell:
  """A `Cell` whose ``cell_apply`` is ``step ∘ project``, with its hooks.

  ``check(params)`` validates params; ``input_size(params)`` reads the input
  size from checked params (default: ``W_x``'s row count);
  ``check_inputs(params, xs, ndim)`` validates inputs whose last ``ndim``
  axes are one step's (default: vectors of that size);
  ``project`` maps inputs to the step's input pre-activations. Exactly one
  of ``step(params, carry, zx_t, h_mask)``, ``product`` (a `hooks.Product`)
  or ``linear`` (a `hooks.Linear`) gives the rest of the equation; the step
  is derived from the latter two, so each equation exists once. The hidden
  part of a carry is ``product.hidden``'s, else the carry itself.
  ``chunkwise`` (a `hooks.Chunkwise`), beside a ``step``, is the parallel
  form of that step.
  """
  input_size = input_size or (lambda params: params.W_x.shape[0])

  def vector_inputs(params, xs, ndim):  # the default check_inputs
    size = input_size(params)
    if ndim is not None:
      checks.check_array_shape(xs, (size,), "x", "cell_apply")
    elif not jnp.shape(xs) or jnp.shape(xs)[-1] != size:
      raise ValueError(
          f"xs: project expects shape (..., {size}) (input_size={size}), got shape "
          f"{tuple(jnp.shape(xs))}")
    checks.check_floating(xs, "x" if ndim is not None else "xs")

  check_inputs = check_inputs or vector_inputs
  if product is not None:

    def step(params, carry, zx_t, h_mask):
      zh_t = product.recur(params, masked_hidden(product.hidden(carry), h_mask))
      new_carry, y, _ = product.pointwise(params, carry, zx_t, zh_t)
      return new_carry, y

  elif linear is not None:

    def step(params, carry, zx_t, h_mask):
      del h_mask  # no recurrent product
      return linear.step(params, carry, zx_t)

  def checked_project(params, xs):
    check(params)
    check_inputs(params, xs, None)
    return project(params, xs)

  def cell_apply(params, carry, x):
    check(params)
    check_inputs(params, x, input_ndim)
    checks.check_carry(carry, init_carry(), "cell_apply")
    return step(params, carry, project(params, x), None)

  hidden = product.hidden if product is not None else lambda carry: carry
  hooks_lib.register(cell_apply, hooks_lib.Hooks(
      check, input_size, hidden, check_inputs, checked_project, step, product, linear,
      chunkwise))
  return Cell(init_params=init_params, init_carry=init_carry,
              cell_apply=cell_apply, hidden_size=hidden_size,
              output_size=output_size, config=tuple(config.items()),
              input_ndim=input_ndim)
