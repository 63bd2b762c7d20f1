"""The time loops behind `jaxrnn.rnn`: one entry point, `run`.

Paths, chosen by configuration only (`run`'s ``method`` and the cell):

* ``reference`` (`reference.py`): the masked ``lax.scan`` of the cell's step;
  the specification, and the path of user cells.
* ``fused`` (`fused.py`): built-in cells with a recurrent product (elman,
  lstm, gru with ``reset_after=True``, conv_lstm): a custom JVP whose
  transpose is the fused backward pass.
* ``linear`` (`linear.py`): min_gru, min_lstm and lru, by a multiply-add scan
  or ``lax.associative_scan``.

Each supports lengths, reverse over the valid prefix, resets and chunked
remat; the first two also recurrent dropout and zoneout (the linear cells
run zoneout on the reference path). Every JAX transformation composes with
each of them.
"""

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import fused as fused_lib
from jaxrnn._src.engine import linear as linear_lib
from jaxrnn._src.engine import reference
from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine.hooks import Hooks
from jaxrnn._src.engine.steps import Steps, Zoneout

tree_map = jax.tree_util.tree_map

class Plan(NamedTuple):
  """How `run` executes a layer (static; built by `jaxrnn.rnn`).

  ``path``: ``"reference"``, ``"fused"``, ``"linear"`` or ``"parallel"``
  (the linear path by associative scan); ``unroll``: None (the backend's default) or
  ``(forward, backward)``; ``remat``: None/False, True or a chunk length.
  """

  path: str
  reverse: bool
  unroll: Optional[tuple[int, int]]
  remat: Any


def _run(cell, hooks: Optional[Hooks], plan: Plan, params, carry, xs,
         steps: Steps, initial, h_mask, zoneout: Optional[Zoneout]):
  settings = settings_lib.current()
  num_steps = xs.shape[0]
  unroll = settings.unroll if plan.unroll is None else plan.unroll
  unroll = tuple(max(1, min(u, num_steps)) for u in unroll)
  if plan.path in ("linear", "parallel"):
    assert hooks is not None and hooks.linear is not None
    return linear_lib.run(hooks, params, carry, xs, steps, reverse=plan.reverse,
                          initial=initial, parallel=plan.path == "parallel",
                          unroll=unroll[0])
  if plan.path == "fused":
    assert hooks is not None and hooks.product is not None
    static = fused_lib.Static(hooks, plan.reverse, unroll, settings.hoist_inputs,
                              settings.in_place, settings.narrow_max_batch, zoneout)
    return fused_lib.scan(static, params, carry, xs, initial, h_mask, steps)
  return reference.run(cell, hooks, params, carry, xs, steps, reverse=plan.reverse,
                       unroll=unroll[0], initial=initial, h_mask=h_mask,
                       zoneout=zoneout)


def run(cell, hooks: Optional[Hooks], plan: Plan, params, carry, xs,
        steps: Steps, *, initial=None, h_mask=None,
        zoneout: Optional[Zoneout] = None):
  """Runs ``cell`` over ``xs: (T, ...)``; returns ``(ys: (T, O), carry)``.

  ``initial`` is the carry a segment reset restarts from; ``h_mask`` the
  variational dropout mask on the recurrent input (or None); ``zoneout``
  the carry mixer (or None).

  With ``plan.remat`` the sequence is cut into chunks; only the carry at
  each chunk boundary is kept, and a chunk's activations are recomputed
  during the backward pass (``jax.checkpoint``), so activation memory grows
  with ``T / chunk + chunk`` instead of ``T``. The input projection is done
  per chunk, so no ``(T, G*H)`` array exists.
  """
  num_steps = xs.shape[0]
  if not plan.remat or num_steps == 0:
    return _run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout)

  chunk = (max(1, math.isqrt(num_steps)) if plan.remat is True
           else min(int(plan.remat), num_steps))
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
    ys_k, carry = _run(cell, hooks, plan, params, carry, xs_k, steps_k, initial,
                       h_mask, zoneout)
    return carry, ys_k

  carry, ys = jax.lax.scan(run_chunk, carry, (xs_c, steps_c), reverse=plan.reverse)
  ys = tree_map(lambda y: y.reshape((num_chunks * chunk,) + y.shape[2:])[:num_steps], ys)
  return ys, carry
