"""The time loop behind `jaxrnn.rnn`: masking, chunked remat, fused backward.

Three things happen here, each for speed or memory:

* Hoisting. On the plain path, ``zx = xs @ W_x + b`` is one
  ``(T, D) x (D, G*H)`` product before the scan; a step does only
  ``h_{t-1} @ W_h`` and elementwise work.
* Fused backward (``fused``). Without ``reset``: `fused_batch.fused_scan`,
  which under ``vmap`` runs the whole batch feature-major and has a custom
  VJP (first-order reverse mode; see that module). With ``reset``: the
  custom JVP below (`_fused`), which also serves forward mode. Its rule runs
  the forward scan saving the gate activations (as cuDNN does), then a
  tangent scan that is linear in the tangents. Everything that does not
  depend on the recurrence is hoisted out of that loop as one product for
  all steps: the input projection's tangent ``dxs W_x + xs dW_x`` and the
  recurrent weight's ``h_{t-1} dW_h``. JAX's transpose of the tangent scan
  is the backward pass: a scan that carries only the recurrent data
  gradient ``dh_{t-1} = dz_t W_h^T`` (plus the cell's own carry terms) and
  emits ``dz_t`` for every step; the weight gradients are then single large
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
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import fused_batch as fused_batch
from jaxrnn._src.engine.fused_batch import select as _select, zero_unless as _zero_unless
from jaxrnn._src.base import Cell

tree_map = jax.tree_util.tree_map


# Steps per scan iteration when ``unroll=None``, as (forward, backward).
# CPU, measured on 2 cores for LSTM/GRU/Elman at (B, T, D, H) in
# {(32, 100, 128, 256), (8, 1000, 64, 128), (1, 500, 32, 64)}: unrolling the
# forward scan by 4 cut the LSTM forward from 39 to 30 ms at the first shape
# and never lost; unrolling the backward scan never helped and cost up to
# 30% (README.md, Performance). GPU (H100, benchmarks/tune.py): the plain
# path (fused_vjp=False) trained 2.2-5.5x faster at B = 1 with unroll 4
# than with 1 and 1.5-1.7x at (32, 100, 128, 256); larger values were not
# measured. Other backends are unmeasured: no unroll.
DEFAULT_UNROLL = {"cpu": (4, 1), "gpu": (4, 4)}
_OTHER_BACKENDS = (1, 1)


# The same for the batched fused path (`fused_batch`), per cell kind. CPU,
# measured at (32, 100, 128, 256), unroll 1 against 4: LSTM forward 17.8 vs
# 19.1 ms and training 74 vs 76 ms, and a 2-layer bidirectional LSTM
# training step compiles in 1.14 s instead of 1.63 s; the GRU trains 9%
# faster with 4 (65 vs 71 ms), the Elman layer's forward 7% (8.3 vs 8.9 ms).
# At (8, 1000, 64, 128) the LSTM and Elman layers differed by under 3%.
# GPU (H100, benchmarks/tune.py over the benchmark grid, one setting changed
# at a time from (1, 1)): each step is a few kernel launches, and unrolling
# amortises the loop's own cost. Forward unroll 4 took forwards to 0.41-0.82x
# the time of unroll 1 and training to 0.63-0.88x; backward unroll 4 took
# training to 0.76-0.95x (the Elman layer's to 0.34-0.87x). Unrolling further
# (16 forward, 8 backward; separate benchmark runs) took up to 21% less time
# (GRU forward at (8, 1000, 64, 128): 3.5 against 4.5 ms; LSTM training at
# (32, 100, 128, 256): 1.73 against 1.75 ms) but compiled the 2-layer
# bidirectional LSTM training step of benchmarks/compile_time.py in 13.2 s
# instead of 5.1 s (Flax: 1.9-3.6 s); ``unroll=`` trades one for the other.
DEFAULT_UNROLL_BATCHED = {
    "cpu": {"lstm": (1, 1), "gru": (4, 1), "elman": (4, 1)},
    "gpu": {"lstm": (4, 4), "gru": (4, 4), "elman": (4, 4)},
}


def default_unroll(num_steps: int, batched_kind: Optional[str] = None
                   ) -> tuple[int, int]:
  """``(forward, backward)`` steps per scan iteration for this backend.

  ``batched_kind``: the cell kind when the batched fused path runs.
  """
  backend = jax.default_backend()
  if batched_kind is not None:
    fwd, bwd = DEFAULT_UNROLL_BATCHED.get(backend, {}).get(
        batched_kind, DEFAULT_UNROLL.get(backend, _OTHER_BACKENDS))
  else:
    fwd, bwd = DEFAULT_UNROLL.get(backend, _OTHER_BACKENDS)
  return max(1, min(fwd, num_steps)), max(1, min(bwd, num_steps))


# ---------------------------------------------------------------------------
# Per-step side inputs.


class Steps(NamedTuple):
  """Per-step side inputs of a scan, each with time on axis 0 (or None).

  ``valid``: ``(T,)`` bool, False on padding. ``reset``: ``(T,)`` bool, True
  where the carry restarts from ``initial`` before the step (already masked
  by ``valid`` and, for a reversed scan, shifted to the last step of each
  segment). ``zone``: zoneout masks, a pytree like the carry with a leading
  time axis (True: keep the previous value), or None.
  """

  valid: Optional[jax.Array] = None
  reset: Optional[jax.Array] = None
  zone: Any = None


def segment_resets(reset, valid, num_steps, reverse):
  """The per-step restart flags a scan in direction ``reverse`` needs.

  ``reset[t]`` marks the first step of a segment. A forward scan restarts
  at those steps. A reversed scan walks each segment from its last step, so
  it restarts at ``t`` when a segment starts at ``t + 1``. Flags on padding
  (``valid`` False) never take effect.
  """
  if reset is None:
    return None
  if reverse:
    reset = jnp.concatenate([reset[1:], jnp.zeros((1,), bool)])
    if valid is not None:
      reset = reset & jnp.concatenate([valid[1:], jnp.zeros((1,), bool)])
  if valid is not None:
    reset = reset & valid
  return reset


# ---------------------------------------------------------------------------
# Plain path: scan the step, autodiff does the rest.


def _scan_steps(step, carry, inputs, steps, reverse, unroll, initial=None,
                zoneout=None):
  """Scans ``step(carry, x_t) -> (carry, y)`` with masking, resets, zoneout.

  ``zoneout(zone_t, carry_tm1, carry_t) -> (carry_t, y_t)`` mixes the new
  carry with the previous one; ``initial`` is the carry a reset restarts
  from.
  """
  if steps.valid is None and steps.reset is None and zoneout is None:
    return jax.lax.scan(step, carry, inputs, reverse=reverse, unroll=unroll)

  def body(c, inp):
    (valid_t, reset_t, zone_t), x_t = inp
    if reset_t is not None:
      c = _select(reset_t, initial, c)
    new_c, y = step(c, x_t)
    if zoneout is not None:
      new_c, y = zoneout(zone_t, c, new_c)
    if valid_t is not None:
      new_c, y = _select(valid_t, new_c, c), _zero_unless(valid_t, y)
    return new_c, y

  return jax.lax.scan(body, carry, (tuple(steps), inputs), reverse=reverse,
                      unroll=unroll)


# ---------------------------------------------------------------------------
# Fused path.


def _project(x, W_x, b_in):
  """``x @ W_x + b_in`` for ``x`` of shape ``(..., D)``."""
  zx = jnp.matmul(x, W_x)
  if b_in is None:
    return zx
  return zx + jnp.reshape(b_in, (1,) * (zx.ndim - 1) + b_in.shape)


def _times(h, mask):
  """``h * mask`` with the per-sequence mask broadcast over leading axes."""
  if mask is None:
    return h
  return h * jnp.reshape(mask, (1,) * (h.ndim - mask.ndim) + mask.shape)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _fused(hooks, reverse, unroll, W_x, b_in, W_h, extra, carry, xs, valid,
           reset, initial, h_mask):
  """Primal of the fused path (no residuals kept): the plain masked scan."""

  def step(c, x_t):
    zh_t = jnp.matmul(_times(hooks.hidden(c), h_mask), W_h)
    return hooks.pointwise(extra, c, _project(x_t, W_x, b_in), zh_t)

  carry, ys = _scan_steps(step, carry, xs, Steps(valid, reset), reverse,
                          unroll[0], initial)
  return ys, carry


@_fused.defjvp
def _fused_jvp(hooks, reverse, unroll, primals, tangents):
  unroll, unroll_bwd = unroll
  W_x, b_in, W_h, extra, carry, xs, valid, reset, initial, h_mask = primals
  dW_x, db_in, dW_h, dextra, dcarry, dxs, _, _, dinitial, _ = tangents

  def step(c, inp):
    valid_t, reset_t, x_t = inp
    if reset_t is not None:
      c = _select(reset_t, initial, c)
    zh_t = jnp.matmul(_times(hooks.hidden(c), h_mask), W_h)
    new_c, y, res = hooks.forward(extra, c, _project(x_t, W_x, b_in), zh_t)
    if valid_t is not None:
      new_c, y = _select(valid_t, new_c, c), _zero_unless(valid_t, y)
    # Residuals: h_{t-1} and the cell's gate activations.
    return new_c, (y, hooks.hidden(c), res)

  final, (ys, hiddens, res) = jax.lax.scan(
      step, carry, (valid, reset, xs), reverse=reverse, unroll=unroll)

  # Everything that does not depend on the recurrence is one product for all
  # steps, outside the loop: the input projection's tangent, and the
  # recurrent weight's tangent h_{t-1} dW_h. Transposed, these are
  # dW_x = sum_t x_t^T dz_t, dxs = dz W_x^T and dW_h = sum_t h_{t-1}^T dz_t.
  dzx = jnp.matmul(dxs, W_x) + _project(xs, dW_x, db_in)
  dzh_w = jnp.matmul(_times(hiddens, h_mask), dW_h)

  def tangent_step(dc, inp):
    valid_t, reset_t, h_tm1, res_t, dzx_t, dzh_w_t = inp
    if reset_t is not None:
      dc = _select(reset_t, dinitial, dc)
    dzh_t = jnp.matmul(_times(hooks.hidden(dc), h_mask), W_h) + dzh_w_t
    new_dc, dy = hooks.tangent(extra, h_tm1, res_t, dc, dzx_t, dzh_t, dextra)
    if valid_t is not None:
      new_dc, dy = _select(valid_t, new_dc, dc), _zero_unless(valid_t, dy)
    return new_dc, dy

  dfinal, dys = jax.lax.scan(
      tangent_step, dcarry, (valid, reset, hiddens, res, dzx, dzh_w),
      reverse=reverse, unroll=unroll_bwd)
  return (ys, final), (dys, dfinal)


# ---------------------------------------------------------------------------
# Entry point.


class Plan(NamedTuple):
  """How `unroll` runs a cell (static, built by `jaxrnn.rnn`)."""

  reverse: bool
  unroll: Any  # None, an int, or (forward, backward)
  remat: Any  # None, a bool or a chunk length
  use_fused: bool
  parallel: bool = False  # evaluate with an associative scan


def _run(cell: Cell, params, carry, xs, steps: Steps, plan: Plan, unroll,
         initial, h_mask, zoneout):
  """One uninterrupted scan over ``xs`` (no chunking).

  ``unroll``: ``(forward, backward)``, or None for the default of the path
  taken (`default_unroll`).
  """
  reverse = plan.reverse

  def unroll_for(batched_kind=None):
    if unroll is not None:
      return unroll
    return default_unroll(xs.shape[0], batched_kind)

  if cell.parallel is not None and zoneout is None:
    # Linear recurrences: gates for all steps at once, then a scan whose
    # step is one multiply-add (sequential) or an associative scan.
    return cell.parallel.run(params, carry, xs, steps, reverse, initial,
                             parallel=plan.parallel, unroll=unroll_for()[0])
  if cell.project_inputs is None:
    step = partial(cell.cell_apply, params)
    carry, ys = _scan_steps(step, carry, xs, steps, reverse, unroll_for()[0],
                            initial, zoneout)
    return ys, carry
  if (plan.use_fused and zoneout is None
      and _fusable((params, xs, carry, initial, h_mask))):
    # The step projects its own input: no (T, G*H) array is materialised
    # in the forward pass (its tangent is still one product; see _fused_jvp),
    # except by the batched path at B = 1 (fused_batch.HOIST_MAX_BATCH).
    W_x, b_in, W_h, extra = cell.fused.split(params)
    if steps.reset is None:
      # Batched feature-major scans under vmap (see fused_batch.py).
      return fused_batch.fused_scan(
          cell.fused, reverse, unroll_for(dict(cell.config).get("kind")), W_x,
          b_in, W_h, extra, carry, xs, steps.valid, h_mask)
    return _fused(cell.fused, reverse, unroll_for(), W_x, b_in, W_h, extra,
                  carry, xs, steps.valid, steps.reset, initial, h_mask)
  zx = cell.project_inputs(params, xs)
  if h_mask is None:
    step = partial(cell.recurrence, params)
  else:
    step = partial(cell.recurrence, params, recurrent_mask=h_mask)
  carry, ys = _scan_steps(step, carry, zx, steps, reverse, unroll_for()[0],
                          initial, zoneout)
  return ys, carry


def _fusable(tree) -> bool:
  # The fused step runs the product in the carry's dtype: keep low-precision
  # params (which need a float32 accumulation policy) on the plain path.
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(tree)}
  return len(dtypes) == 1


def chunk_length(num_steps: int, remat) -> int:
  if remat is True:
    return max(1, math.isqrt(num_steps))
  return min(int(remat), num_steps)


def unroll(cell: Cell, params, carry, xs, steps: Steps, plan: Plan, *,
           initial=None, h_mask=None, zoneout=None):
  """Runs ``cell`` over ``xs: (T, ...)``; returns ``(ys: (T, O), carry)``.

  ``initial`` is the carry a segment reset restarts from; ``h_mask`` the
  variational dropout mask on the recurrent input (or None); ``zoneout``
  the carry mixer (see `_scan_steps`).
  """
  num_steps = xs.shape[0]
  remat = plan.remat
  step_unroll = plan.unroll  # None: `_run` picks the default of its path
  if isinstance(step_unroll, int):
    step_unroll = (step_unroll, step_unroll)
  if not remat or num_steps == 0:
    return _run(cell, params, carry, xs, steps, plan, step_unroll, initial,
                h_mask, zoneout)

  chunk = chunk_length(num_steps, remat)
  num_chunks = -(-num_steps // chunk)
  pad = num_chunks * chunk - num_steps
  if pad:
    # Padding steps are masked out, so they leave the carry untouched.
    if steps.valid is None:
      steps = steps._replace(valid=jnp.ones((num_steps,), bool))
    pad_with = lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
    xs = pad_with(xs)
    steps = tree_map(pad_with, steps)
  to_chunks = lambda a: a.reshape((num_chunks, chunk) + a.shape[1:])
  xs_c, steps_c = to_chunks(xs), tree_map(to_chunks, steps)

  @jax.checkpoint
  def run_chunk(carry, inp):
    xs_k, steps_k = inp
    ys_k, carry = _run(cell, params, carry, xs_k, steps_k, plan, step_unroll,
                       initial, h_mask, zoneout)
    return carry, ys_k

  carry, ys = jax.lax.scan(run_chunk, carry, (xs_c, steps_c), reverse=plan.reverse)
  ys = tree_map(lambda y: y.reshape((num_chunks * chunk,) + y.shape[2:])[:num_steps], ys)
  return ys, carry
