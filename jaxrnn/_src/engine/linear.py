"""The engine for recurrences linear in the state: ``h_t = a_t ⊙ h_{t-1} + b_t``.

The gates of all steps come from the input alone, so ``(a_t, b_t)`` are
computed for every step before the recurrence runs. Pairs compose
associatively, ``(a_1, b_1) ∘ (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)``, so the
sequence can be evaluated with ``jax.lax.associative_scan`` in O(log T)
depth (``parallel``) as well as by a ``jax.lax.scan`` whose step is one
multiply-add. The scan multiplies and adds but never divides, so it is
stable in linear space.

Padding, segment resets and reversed scans map onto the same pairs: a padded
step is the identity ``(1, 0)``, a reset step ``(0, a_t h_init + b_t)``, and
the initial carry folds into the first step in scan order. Plain JAX
throughout, so every transformation composes.
"""

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine import steps as steps_lib


def _combine(left, right):
  (a_l, b_l), (a_r, b_r) = left, right
  return a_l * a_r, a_r * b_l + b_r


def run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout, *, parallel=False):
  """The ``linear`` path of `engine.PATHS` (``parallel``: the ``parallel``
  one): ``(ys, carry)``. ``cell``, ``h_mask`` and ``zoneout`` are unused:
  `jaxrnn.rnn` runs neither dropout nor zoneout on this path.
  """
  linear, reverse = hooks.linear, plan.reverse
  zx = hooks.project(params, xs)
  a, b = linear.coefficients(params, zx)
  num_steps = a.shape[0]
  if num_steps == 0:
    ys = linear.outputs(params, b, zx)
    return ((ys, linear.from_state(b)) if plan.carries else ys), carry
  column = lambda m: m.reshape((num_steps,) + (1,) * (a.ndim - 1))
  if steps.valid is not None:
    valid = column(steps.valid)
    a = jnp.where(valid, a, jnp.ones((), a.dtype))
    b = jnp.where(valid, b, jnp.zeros((), b.dtype))
  if steps.reset is not None:
    reset = column(steps.reset)
    h_init = linear.to_state(initial).astype(b.dtype)
    b = jnp.where(reset, a * h_init[None] + b, b)
    a = jnp.where(reset, jnp.zeros((), a.dtype), a)
  h0 = linear.to_state(carry).astype(b.dtype)
  if parallel:
    first = num_steps - 1 if reverse else 0
    b = b.at[first].add(a[first] * h0)
    _, hs = jax.lax.associative_scan(_combine, (a, b), reverse=reverse)
  else:

    def step(h, coefficients_t):
      a_t, b_t = coefficients_t
      h = a_t * h + b_t
      return h, h

    unroll, _ = settings_lib.fit_unroll(plan.unroll, settings_lib.current(), num_steps)
    _, hs = jax.lax.scan(step, h0, (a, b), reverse=reverse, unroll=unroll)
  ys = linear.outputs(params, hs, zx)
  if plan.carries:
    ys = (ys, linear.from_state(hs))
  if steps.valid is not None:
    ys = steps_lib.zero_unless(steps.valid, ys)
  final = hs[0] if reverse else hs[-1]
  return ys, linear.from_state(final)
