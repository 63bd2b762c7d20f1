"""The reference path: the specification of `jaxrnn.rnn`, as a masked scan.

In the manner of ``jax.lax.scan``'s own docstring, the meaning of a layer
over one sequence is, roughly::

  def rnn_apply(cell, params, xs, carry, valid, reset, initial):
    ys = []
    for t in order:                    # reversed for reverse=True
      if reset[t]: carry = initial     # first step of a packed segment
      new, y = cell.cell_apply(params, carry, xs[t])
      if valid[t]: carry = new         # padding leaves the carry alone
      ys.append(y if valid[t] else 0)  # and outputs exactly zero
    return stack(ys), carry

with zoneout mixing ``carry`` and ``new`` and variational dropout masking
the recurrent input. Every other path computes the same numbers; autodiff
of this scan gives every derivative.
"""

from functools import partial

import jax

from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine import steps as steps_lib


def run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout):
  """The ``reference`` path of `engine.PATHS`: ``(ys, carry)``.

  Built-in cells scan ``step`` over the inputs projected before the loop
  (``cell_apply`` is ``step ∘ project``); user cells scan ``cell_apply``.
  Without masks this is a plain ``lax.scan`` (`steps.masked` builds no
  masking code for absent masks).
  """
  restart = None
  if hooks is None:
    cell_step, inputs = partial(cell.cell_apply, params), xs
  else:
    cell_step = lambda c, zx_t: hooks.step(params, c, zx_t, h_mask)
    inputs = hooks.project(params, xs)
    if hooks.linear is not None and hooks.linear.restart is not None:
      restart = lambda c, zx_t: hooks.linear.step(params, c, zx_t, restart=True) + (None,)

  def step(c, x_t):
    new_c, y = cell_step(c, x_t)
    return new_c, y, None

  unroll, _ = settings_lib.fit_unroll(plan.unroll, settings_lib.current(), xs.shape[0])
  body = steps_lib.masked(step, initial, zoneout, plan.carries, restart)
  carry, (ys, _) = jax.lax.scan(body, carry, (tuple(steps), inputs),
                                reverse=plan.reverse, unroll=unroll)
  return ys, carry
