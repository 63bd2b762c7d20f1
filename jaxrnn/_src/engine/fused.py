"""The fast path for built-in cells: a custom JVP whose tangent is linear.

Primal: the masked scan of the cell's step (the same numbers as the
reference path). Under differentiation the rule below runs

1. a forward scan that keeps, per step, ``h_{t-1}`` and the residuals of the
   cell's pointwise equation (the gate activations, as cuDNN keeps them);
2. outside any loop, the parts of the pre-activation tangents that do not
   go through the recurrence, each as one product for all steps: the input
   projection's ``dxs W_x + xs dW_x`` and the recurrent weights'
   ``h_{t-1} dW_h``;
3. a tangent scan, linear in the tangents, that carries only the carry's
   tangent through ``dh_{t-1} W_h`` and the cell's tangent equation.

This is forward mode (``jax.jvp``, ``jax.jacfwd``). Reverse mode is JAX's
transpose of it: the transposed tangent scan is the fused backward pass,
which carries only the recurrent data gradient and emits ``dz_t`` for every
step, and the weight gradients become the transposes of step 2, single
large products that under ``vmap`` contract batch and time together. The
rule is plain JAX, so it is itself differentiable: Hessians, gradients of
gradients and every other composition work.

Masking (padding, resets, zoneout) is `steps.masked`, applied alike to the
forward and the tangent scans. When nothing is differentiated the forward
scan may read its inputs and write its outputs in place
(`EngineSettings.in_place`), and narrow batches run a form of their own
(`EngineSettings.narrow_max_batch`, `_inference`).
"""

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import steps as steps_lib
from jaxrnn._src.engine.hooks import Hooks

tree_map = jax.tree_util.tree_map


class Static(NamedTuple):
  """The static configuration of one fused scan (see `EngineSettings`)."""

  hooks: Hooks
  reverse: bool
  unroll: tuple[int, int]
  hoist: bool
  in_place: bool
  narrow_max_batch: int
  zoneout: Optional[steps_lib.Zoneout]


def _times(h, mask):
  """``h * mask``, the per-sequence mask broadcast over h's leading axes."""
  if mask is None:
    return h
  return h * jnp.reshape(mask, (1,) * (h.ndim - mask.ndim) + mask.shape)


def _forward(static, keep, params, carry, xs, initial, h_mask, steps):
  """The masked forward scan; with ``keep``, also ``h_{t-1}`` and residuals.

  ``static.hoist``: the input projection of every step as one product
  before the loop, or per step. ``static.in_place``: outputs written by
  index into a carried buffer (`steps.scan`), and, when nothing is kept for
  a tangent scan, inputs read by index, so that under vmap they keep their
  batch-major layout; otherwise the scan takes and stacks them time-major,
  and vmap transposes them around the loop. (Inputs read by index would,
  differentiated, transpose into one scatter per block.)
  """
  hooks = static.hooks
  product = hooks.product
  hoist, in_place, unroll = static.hoist, static.in_place, static.unroll[0]
  inputs = hooks.project(params, xs) if hoist else xs

  def step(c, x_t):
    zx_t = x_t if hoist else hooks.project(params, x_t)
    h_tm1 = product.hidden(c)
    zh_t = product.recur(params, _times(h_tm1, h_mask))
    new_c, y, res = product.pointwise(params, c, zx_t, zh_t)
    if not keep:
      return new_c, y, None
    if product.tangent is None:
      res = (c, zx_t, zh_t)  # the inputs of the pointwise equation
    return new_c, y, (h_tm1, res)

  body = steps_lib.masked(step, initial, static.zoneout)
  if in_place:
    carry, (ys, saved) = steps_lib.scan(body, carry, (tuple(steps), inputs),
                                        reverse=static.reverse, unroll=unroll,
                                        read_in_place=not keep)
  else:
    carry, (ys, saved) = jax.lax.scan(body, carry, (tuple(steps), inputs),
                                      reverse=static.reverse, unroll=unroll)
  return ys, carry, saved


def _inference(static, *args):
  """``(ys, carry)`` of `_forward` without residuals, by batch size.

  The layer is written per example, so only a batching rule sees the batch
  size (``jax.custom_batching.custom_vmap``). Up to
  ``static.narrow_max_batch`` examples, and unbatched calls, run the narrow
  form of the loop: the input projection hoisted (unless the cell's
  ``narrow_hoist`` is False), inputs and outputs stacked time-major (under
  a narrow vmap the transposes around the loop are cheap, and at one
  example free) and one step per iteration; wider batches run
  ``static``'s form. The rule sits on the primal alone: JAX
  cannot transpose it, and every derivative of `scan` goes through its
  JVP rule. Its outputs come back batch-major, and under vmap the JVP
  rule's must too (JAX takes their batch axis from the primal's): so only
  with ``static.in_place``.
  """
  if not (static.in_place and static.narrow_max_batch):
    return _forward(static, False, *args)[:2]
  narrow = static._replace(hoist=static.hooks.product.narrow_hoist, in_place=False,
                           unroll=(1, static.unroll[1]))
  leaves, tree = jax.tree_util.tree_flatten(args)

  def run(form, *leaves):
    return _forward(form, False, *jax.tree_util.tree_unflatten(tree, leaves))[:2]

  @jax.custom_batching.custom_vmap
  def forward(*leaves):
    return run(narrow, *leaves)

  @forward.def_vmap
  def _rule(axis_size, in_batched, *leaves):
    form = narrow if axis_size <= static.narrow_max_batch else static
    out = jax.vmap(partial(run, form), in_axes=[0 if b else None for b in in_batched],
                   axis_size=axis_size)(*leaves)
    return out, tree_map(lambda _: True, out)

  return forward(*leaves)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def scan(static: Static, params, carry, xs, initial, h_mask, steps):
  """``(ys, carry)`` of the masked scan; see the module notes."""
  return _inference(static, params, carry, xs, initial, h_mask, steps)


@scan.defjvp
def _scan_jvp(static, primals, tangents):
  params, carry, xs, initial, h_mask, steps = primals
  dparams, dcarry, dxs, dinitial, _, _ = tangents
  hooks, product = static.hooks, static.hooks.product
  # Outputs written in place or stacked as ``static.in_place`` says: under
  # vmap JAX takes the outputs' batch axis from the primal, so the two must
  # agree (the primal's narrow form, stacked, comes back batch-major from
  # its batching rule, like the in-place form). Inputs and the saved
  # activations are scanned time-major, as the tangent scan reads them.
  ys, final, (hiddens, res) = _forward(static, True, params, carry, xs, initial,
                                       h_mask, steps)

  # Step 2: one product each, for all steps.
  _, dzx = jax.jvp(hooks.project, (params, xs), (dparams, dxs))
  dzh_w = product.recur(dparams, _times(hiddens, h_mask))
  if product.summed:  # one input per step: the pointwise step reads zx + zh
    dzx, dzh_w = dzx + dzh_w, None

  def tangent_step(dc, inp):
    h_tm1, res_t, dzx_t, dzh_w_t = inp
    dzh_t = product.recur(params, _times(product.hidden(dc), h_mask))
    if dzh_w_t is not None:
      dzh_t = dzh_t + dzh_w_t
    if product.tangent is not None:
      new_dc, dy = product.tangent(params, h_tm1, res_t, dparams, dc, dzx_t, dzh_t)
    else:
      pointwise = lambda p, c, zx, zh: product.pointwise(p, c, zx, zh)[:2]
      _, (new_dc, dy) = jax.jvp(pointwise, (params,) + tuple(res_t),
                                (dparams, dc, dzx_t, dzh_t))
    return new_dc, dy, None

  body = steps_lib.masked(tangent_step, dinitial, static.zoneout)
  dfinal, (dys, _) = jax.lax.scan(
      body, dcarry, (tuple(steps), (hiddens, res, dzx, dzh_w)),
      reverse=static.reverse, unroll=static.unroll[1])
  return (ys, final), (dys, dfinal)
