"""The engine for recurrences linear in the state: ``h_t = a_t ⊙ h_{t-1} + b_t``.

The gates of all steps come from the input alone, so ``(a_t, b_t)`` depend
on no state: the associative scan computes them for every step before it
runs, the multiply-add scan inside its loop, one step at a time, so that no
coefficients of all steps are stored (its backward pass recomputes them).
A cell with a causal window (`window.py`, `mamba`) reads its inputs through
it first. Pairs compose
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


def _sequential_steps(pairs, inputs, h0, *, reverse, unroll):
  """Every step's state by a ``lax.scan`` whose step is one multiply-add,
  with each step's ``(a_t, b_t) = pairs(*inputs_t)`` made inside the loop.
  The step is checkpointed: the backward pass recomputes the coefficients
  and keeps only each step's state, where a whole sequence's coefficients
  (and their cotangents) would be several arrays of the states' size
  (`mamba`'s state is a matrix per step)."""

  def step(h, inputs_t):
    a_t, b_t = pairs(*inputs_t)
    h = a_t * h + b_t
    return h, h

  return jax.lax.scan(jax.checkpoint(step, prevent_cse=False), h0, inputs, reverse=reverse,
                      unroll=unroll)[1]


def _associative(a, b, h0, reverse):
  """Every step's state by ``lax.associative_scan``, O(log T) deep."""
  first = a.shape[0] - 1 if reverse else 0
  b = b.at[first].add(a[first] * h0)
  return jax.lax.associative_scan(_combine, (a, b), reverse=reverse)[1]


def _batch_major(*values):
  """``values`` through a ``cond`` of identities, which lays them out batch
  first under ``vmap``: a custom JVP's primal and rule must agree on it,
  as JAX may take the rule's output batch axes from the primal's. (Times
  one: a branch returning its inputs would be forwarded around the cond.)"""
  same = lambda *v: jax.tree_util.tree_map(lambda x: x * jnp.ones((), x.dtype), v)
  out = jax.lax.cond(True, same, same, *values)
  return out[0] if len(values) == 1 else out


def _forward_associative(pairs, reverse, unroll):
  """The states of the coefficients ``pairs(params, h_init, zx, valid,
  reset)`` by `_associative`, differentiated as `_sequential_steps` (a
  custom JVP): the ``parallel_derivatives=False`` form of `EngineSettings`.
  The rule is the whole multiply-add scan's, coefficients included, so that
  its linearisation, like the sequential path's, keeps one state per step
  and recomputes the coefficients in the backward loop."""

  @jax.custom_jvp
  def states(params, h_init, zx, valid, reset, h0):
    a, b = pairs(params, h_init, zx, valid, reset)
    return _batch_major(_associative(a, b, h0, reverse))

  def sequential(params, h_init, zx, valid, reset, h0):
    step = lambda *inputs_t: pairs(params, h_init, *inputs_t)
    return _sequential_steps(step, (zx, valid, reset), h0, reverse=reverse, unroll=unroll)

  @states.defjvp
  def states_jvp(primals, tangents):
    return _batch_major(*jax.jvp(sequential, primals, tangents))

  return states


def run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout, *, parallel=False):
  """The ``linear`` path of `engine.PATHS` (``parallel=True``: the
  ``parallel`` one; ``parallel="forward"``: ``parallel_forward``, the
  associative scan differentiated as the sequential one): ``(ys, carry)``. ``cell``, ``h_mask`` and ``zoneout`` are unused:
  `jaxrnn.rnn` runs neither dropout nor zoneout on this path.
  """
  linear, reverse = hooks.linear, plan.reverse
  zx = hooks.project(params, xs)
  state, opened = carry, None
  if linear.window is not None:  # the coefficients read each step's causal window
    opened = linear.window.run(params, zx, carry, initial, steps, reverse)
    zx, state, initial = opened.zx, opened.state, opened.initial

  def to_carry(h, last):
    """The carry of state ``h``: the last step's (``last``) or every step's."""
    if opened is None:
      return linear.from_state(h)
    return linear.window.join(opened.last if last else opened.buffers, linear.from_state(h))

  h_init = None if steps.reset is None else linear.to_state(initial)

  def pairs(params, h_init, zx, valid, reset):
    """``(a, b)`` of the steps ``zx`` (all of them, or one), with padding
    and resets (from state ``h_init``) mapped onto them."""
    a, b = linear.coefficients(params, zx)
    flags = lambda m: m.reshape(m.shape + (1,) * (a.ndim - m.ndim))
    if valid is not None:
      a = jnp.where(flags(valid), a, jnp.ones((), a.dtype))
      b = jnp.where(flags(valid), b, jnp.zeros((), b.dtype))
    if reset is not None:
      a_r, b_r = (a, b) if linear.restart is None else linear.restart(params, zx)
      h = h_init.astype(b.dtype)
      b = jnp.where(flags(reset), a_r * h.reshape((1,) * (b.ndim - h.ndim) + h.shape) + b_r, b)
      a = jnp.where(flags(reset), jnp.zeros((), a.dtype), a)
    return a, b

  num_steps = zx.shape[0]
  if num_steps == 0:
    _, b = linear.coefficients(params, zx)
    ys = linear.outputs(params, b, zx)
    return ((ys, to_carry(b, False)) if plan.carries else ys), carry
  unroll, _ = settings_lib.fit_unroll(plan.unroll, settings_lib.current(), num_steps)
  # The states' dtype (complex for lru) from one step traced, unused, so
  # compiled away.
  h0 = linear.to_state(state).astype(pairs(params, h_init, zx[0], None, None)[1].dtype)
  if parallel == "forward":
    hs = _forward_associative(pairs, reverse, unroll)(params, h_init, zx, steps.valid,
                                                      steps.reset, h0)
  elif parallel:
    hs = _associative(*pairs(params, h_init, zx, steps.valid, steps.reset), h0, reverse)
  else:
    step = lambda *inputs_t: pairs(params, h_init, *inputs_t)
    hs = _sequential_steps(step, (zx, steps.valid, steps.reset), h0, reverse=reverse,
                           unroll=unroll)
  ys = linear.outputs(params, hs, zx)
  if plan.carries:
    ys = (ys, to_carry(hs, False))
  if steps.valid is not None:
    ys = steps_lib.zero_unless(steps.valid, ys)
  final = hs[0] if reverse else hs[-1]
  return ys, to_carry(final, True)
