"""The time loop behind `jaxrnn.rnn`: masking, chunked remat, fused backward.

Three things happen here, each for speed or memory:

* Hoisting. On the plain path, ``zx = xs @ W_x + b`` is one
  ``(T, D) x (D, G*H)`` product before the scan; a step does only
  ``h_{t-1} @ W_h`` and elementwise work.
* Fused backward (``fused``). A custom JVP: its rule runs the forward scan
  saving the gate activations (as cuDNN does), then a tangent scan that is
  linear in the tangents. Everything that does not depend on the recurrence
  is hoisted out of that loop as one product for all steps: the input
  projection's tangent ``dxs W_x + xs dW_x`` and the recurrent weight's
  ``h_{t-1} dW_h``. JAX's transpose of the tangent scan is the backward
  pass: a scan that carries only the recurrent data gradient
  ``dh_{t-1} = dz_t W_h^T`` (plus the cell's own carry terms) and emits
  ``dz_t`` for every step; the weight gradients are then single large
  products after the scan, ``dW_h = sum_t h_{t-1}^T dz_t`` and
  ``dW_x = sum_t x_t^T dz_t``, which under ``vmap`` contract over batch and
  time at once. Being a JVP, it also serves forward mode and higher orders.
  Its forward scan projects each step's input inside the loop: measured on
  CPU, materialising the ``(T, B, G*H)`` projection (and the transposes
  ``vmap`` adds to reach time-major layout) cost more than the per-step
  product, up to 1.5x the whole forward pass at (B, T, D, H) =
  (128, 50, 256, 512).
* Chunked remat (``remat``). The sequence is cut into chunks; only the carry
  at each chunk boundary is kept, and a chunk's activations are recomputed
  during the backward pass (``jax.checkpoint``), so activation memory grows
  with ``T / chunk + chunk`` instead of ``T``. The input projection is done
  per chunk so no ``(T, G*H)`` array exists.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp

from jaxrnn._src.base import Cell

tree_map = jax.tree_util.tree_map


def _select(valid, new, old):
  return tree_map(lambda n, o: jnp.where(valid, n, o), new, old)


def _zero_unless(valid, y):
  return tree_map(lambda v: jnp.where(valid, v, jnp.zeros((), v.dtype)), y)


# Steps per scan iteration when ``unroll=None``, as (forward, backward).
# CPU, measured on 2 cores for LSTM/GRU/Elman at (B, T, D, H) in
# {(32, 100, 128, 256), (8, 1000, 64, 128), (1, 500, 32, 64)}: unrolling the
# forward scan by 4 cut the LSTM forward from 39 to 30 ms at the first shape
# and never lost; unrolling the backward scan never helped and cost up to
# 30% (README.md, Performance). Other backends are unmeasured: no unroll.
DEFAULT_UNROLL = {"cpu": (4, 1)}
_OTHER_BACKENDS = (1, 1)


def default_unroll(num_steps: int) -> tuple[int, int]:
  """``(forward, backward)`` steps per scan iteration for this backend."""
  fwd, bwd = DEFAULT_UNROLL.get(jax.default_backend(), _OTHER_BACKENDS)
  return max(1, min(fwd, num_steps)), max(1, min(bwd, num_steps))


# ---------------------------------------------------------------------------
# Plain path: scan the step, autodiff does the rest.


def _scan_steps(step, carry, inputs, valid, reverse, unroll):
  """Scans ``step(carry, x_t) -> (carry, y)``, masking when ``valid`` is set."""
  if valid is None:
    return jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)

  def body(carry, inp):
    valid_t, x_t = inp
    new_carry, y = step(carry, x_t)
    return _select(valid_t, new_carry, carry), _zero_unless(valid_t, y)

  return jax.lax.scan(body, carry, (valid, inputs), reverse=reverse, unroll=unroll)


# ---------------------------------------------------------------------------
# Fused path.


def _project(x, W_x, b_in):
  """``x @ W_x + b_in`` for ``x`` of shape ``(..., D)``."""
  zx = jnp.matmul(x, W_x)
  if b_in is None:
    return zx
  return zx + jnp.reshape(b_in, (1,) * (zx.ndim - 1) + b_in.shape)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _fused(hooks, reverse, unroll, W_x, b_in, W_h, extra, carry, xs, valid):
  """Primal of the fused path (no residuals kept): the plain masked scan."""

  def step(c, x_t):
    zh_t = jnp.matmul(hooks.hidden(c), W_h)
    return hooks.pointwise(extra, c, _project(x_t, W_x, b_in), zh_t)

  carry, ys = _scan_steps(step, carry, xs, valid, reverse, unroll[0])
  return ys, carry


@_fused.defjvp
def _fused_jvp(hooks, reverse, unroll, primals, tangents):
  unroll, unroll_bwd = unroll
  W_x, b_in, W_h, extra, carry, xs, valid = primals
  dW_x, db_in, dW_h, dextra, dcarry, dxs, _ = tangents

  def step(c, inp):
    valid_t, x_t = inp
    zh_t = jnp.matmul(hooks.hidden(c), W_h)
    new_c, y, res = hooks.forward(extra, c, _project(x_t, W_x, b_in), zh_t)
    if valid_t is not None:
      new_c, y = _select(valid_t, new_c, c), _zero_unless(valid_t, y)
    # Residuals: the carry entering the step and the cell's gate activations.
    return new_c, (y, c, res)

  final, (ys, carries, res) = jax.lax.scan(
      step, carry, (valid, xs), reverse=reverse, unroll=unroll)

  # Everything that does not depend on the recurrence is one product for all
  # steps, outside the loop: the input projection's tangent, and the
  # recurrent weight's tangent h_{t-1} dW_h. Transposed, these are
  # dW_x = sum_t x_t^T dz_t, dxs = dz W_x^T and dW_h = sum_t h_{t-1}^T dz_t.
  dzx = jnp.matmul(dxs, W_x) + _project(xs, dW_x, db_in)
  dzh_w = jnp.matmul(hooks.hidden(carries), dW_h)

  def tangent_step(dc, inp):
    valid_t, c_tm1, res_t, dzx_t, dzh_w_t = inp
    dzh_t = jnp.matmul(hooks.hidden(dc), W_h) + dzh_w_t
    new_dc, dy = hooks.tangent(extra, c_tm1, res_t, dc, dzx_t, dzh_t, dextra)
    if valid_t is not None:
      new_dc, dy = _select(valid_t, new_dc, dc), _zero_unless(valid_t, dy)
    return new_dc, dy

  dfinal, dys = jax.lax.scan(
      tangent_step, dcarry, (valid, carries, res, dzx, dzh_w),
      reverse=reverse, unroll=unroll_bwd)
  return (ys, final), (dys, dfinal)


# ---------------------------------------------------------------------------
# Entry point.


def _run(cell: Cell, params, carry, xs, valid, reverse, unroll, use_fused):
  """One uninterrupted scan over ``xs`` (no chunking)."""
  if cell.project_inputs is None:
    step = partial(cell.cell_apply, params)
    carry, ys = _scan_steps(step, carry, xs, valid, reverse, unroll[0])
    return ys, carry
  if use_fused and _fusable(params, xs, carry):
    # The step projects its own input: no (T, G*H) array is materialised
    # in the forward pass (its tangent is still one product; see _fused_jvp).
    W_x, b_in, W_h, extra = cell.fused.split(params)
    return _fused(cell.fused, reverse, unroll, W_x, b_in, W_h, extra, carry, xs, valid)
  zx = cell.project_inputs(params, xs)
  step = partial(cell.recurrence, params)
  carry, ys = _scan_steps(step, carry, zx, valid, reverse, unroll[0])
  return ys, carry


def _fusable(params, xs, carry) -> bool:
  # The fused step runs the product in the carry's dtype: keep low-precision
  # params (which need a float32 accumulation policy) on the plain path.
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves((params, xs, carry))}
  return len(dtypes) == 1


def chunk_length(num_steps: int, remat) -> int:
  if remat is True:
    return max(1, math.isqrt(num_steps))
  return min(int(remat), num_steps)


def unroll(cell: Cell, params, carry, xs, *, length, reverse, unroll, remat,
           use_fused):
  """Runs ``cell`` over ``xs: (T, D)``; returns ``(ys: (T, O), carry)``."""
  num_steps = xs.shape[0]
  if unroll is None:
    unroll = default_unroll(num_steps if not remat else chunk_length(num_steps, remat))
  elif isinstance(unroll, int):
    unroll = (unroll, unroll)
  valid = None if length is None else jnp.arange(num_steps) < length
  if not remat or num_steps == 0:
    return _run(cell, params, carry, xs, valid, reverse, unroll, use_fused)

  chunk = chunk_length(num_steps, remat)
  num_chunks = -(-num_steps // chunk)
  pad = num_chunks * chunk - num_steps
  if pad:
    # Padding steps are masked out, so they leave the carry untouched.
    if valid is None:
      valid = jnp.ones((num_steps,), bool)
    xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
    valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)])
  xs_c = xs.reshape((num_chunks, chunk) + xs.shape[1:])
  valid_c = None if valid is None else valid.reshape(num_chunks, chunk)

  @jax.checkpoint
  def run_chunk(carry, inp):
    xs_k, valid_k = inp
    ys_k, carry = _run(cell, params, carry, xs_k, valid_k, reverse, unroll, use_fused)
    return carry, ys_k

  carry, ys = jax.lax.scan(run_chunk, carry, (xs_c, valid_c), reverse=reverse)
  ys = tree_map(lambda y: y.reshape((num_chunks * chunk,) + y.shape[2:])[:num_steps], ys)
  return ys, carry
