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
forward and the tangent scans. The forward scan may write its outputs in
place (`EngineSettings.in_place`); when nothing is differentiated it may
also read its inputs in place, and narrow batches run a form of their own
(`EngineSettings.narrow_max_batch`): those CPU layouts are in `inference`.
"""

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import inference
from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine import steps as steps_lib
from jaxrnn._src.engine.hooks import Hooks


class Static(NamedTuple):
  """The static configuration of one fused scan (see `EngineSettings`)."""

  hooks: Hooks
  reverse: bool
  unroll: tuple[int, int]
  hoist: bool
  in_place: bool
  narrow_max_batch: int
  zoneout: Optional[steps_lib.Zoneout]
  carries: bool


def _times(h, mask):
  """``h * mask``, the per-sequence mask broadcast over h's leading axes."""
  if mask is None:
    return h
  return h * jnp.reshape(mask, (1,) * (h.ndim - mask.ndim) + mask.shape)


def _forward(static, keep, params, carry, xs, initial, h_mask, steps):
  """The masked forward scan; with ``keep``, also ``h_{t-1}`` and residuals.

  ``static.hoist``: the input projection of every step as one product
  before the loop, or per step. ``static.in_place``: outputs written by
  index into a carried buffer (`inference.scan`), and, when nothing is kept for
  a tangent scan, inputs read by index, so that under vmap they keep their
  batch-major layout; otherwise the scan takes and stacks them time-major,
  and vmap transposes them around the loop. (Inputs read by index would,
  differentiated, transpose into one scatter per block.)
  """
  hooks, product = static.hooks, static.hooks.product
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

  body = steps_lib.masked(step, initial, static.zoneout, static.carries)
  if in_place:
    carry, (ys, saved) = inference.scan(body, carry, (tuple(steps), inputs),
                                        reverse=static.reverse, unroll=unroll,
                                        read_in_place=not keep)
  else:
    carry, (ys, saved) = jax.lax.scan(body, carry, (tuple(steps), inputs),
                                      reverse=static.reverse, unroll=unroll)
  return ys, carry, saved


class Config(NamedTuple):
  """What `jaxrnn.rnn` fixes of a fused scan; `Static` adds the settings."""

  hooks: Hooks
  reverse: bool
  unroll: Optional[tuple[int, int]]  # None: the settings'
  zoneout: Optional[steps_lib.Zoneout]
  carries: bool  # outputs (ys, every step's carry)

  def static(self, settings: settings_lib.EngineSettings, num_steps) -> Static:
    unroll = settings_lib.fit_unroll(self.unroll, settings, num_steps)
    return Static(self.hooks, self.reverse, unroll, settings.hoist_inputs, settings.in_place,
                  settings.narrow_max_batch, self.zoneout, self.carries)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def scan(config: Config, params, carry, xs, initial, h_mask, steps):
  """``(ys, carry)`` of the masked scan; see the module notes.

  Nothing differentiated, the loop takes the settings of the platform it
  is lowered for (`settings.by_platform`); the JVP rule, those of JAX's
  default backend.
  """

  def forward(settings, *args):
    return inference.by_batch_size(lambda form, *args: _forward(form, False, *args)[:2],
                                   config.static(settings, xs.shape[0]), *args)

  return settings_lib.by_platform(forward, params, carry, xs, initial, h_mask, steps)


@scan.defjvp
def _scan_jvp(config, primals, tangents):
  params, carry, xs, initial, h_mask, steps = primals
  static = config.static(settings_lib.current(), xs.shape[0])
  dparams, dcarry, dxs, dinitial, _, _ = tangents
  hooks, product = static.hooks, static.hooks.product
  # Outputs written in place or stacked as ``static.in_place`` says: under
  # vmap JAX takes the outputs' batch axis from the primal, so the two must
  # agree (the primal's narrow form, stacked, comes back batch-major from
  # its batching rule, like the in-place form: `inference.by_batch_size`).
  # Inputs and the saved activations are scanned time-major, as the tangent
  # scan reads them.
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

  body = steps_lib.masked(tangent_step, dinitial, static.zoneout, static.carries)
  dfinal, (dys, _) = jax.lax.scan(
      body, dcarry, (tuple(steps), (hiddens, res, dzx, dzh_w)),
      reverse=static.reverse, unroll=static.unroll[1])
  ys, final, dys, dfinal = settings_lib.laid_out_as_by_platform(ys, final, dys, dfinal)
  return (ys, final), (dys, dfinal)


def run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout):
  """The ``fused`` path of `engine.PATHS` (``cell`` unused: the hooks hold
  its step)."""
  config = Config(hooks, plan.reverse, plan.unroll, zoneout, plan.carries)
  return scan(config, params, carry, xs, initial, h_mask, steps)
