"""Per-step side inputs of a scan and the one implementation of masking.

Every time loop of the engine (the reference scan, the fused forward scan
and its tangent scan) wraps its step in `masked`: padding, segment resets
and zoneout are applied here and nowhere else.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


class Steps(NamedTuple):
  """Per-step side inputs, each with time on axis 0 (or None).

  ``valid``: ``(T,)`` bool, False on padding. ``reset``: ``(T,)`` bool, True
  where the carry restarts from the initial carry before the step (already
  masked by ``valid`` and, for a reversed scan, moved to the last step of
  each segment; see `segment_resets`). ``zone``: zoneout masks, a pytree
  like the carry with a leading time axis (True: keep the previous value),
  or None.
  """

  valid: Optional[jax.Array] = None
  reset: Optional[jax.Array] = None
  zone: Any = None


class Zoneout(NamedTuple):
  """Static zoneout: ``rates`` structured like the carry, ``hidden`` the
  function reading the output from a carry."""

  rates: Any
  hidden: Callable[[Any], Any]

  def mix(self, zone_t, c_tm1, c_t):
    """``(carry, y)`` after zoneout; linear in ``(c_tm1, c_t)``.

    With masks (``zone_t``) each unit keeps its previous value where the
    mask is True; without (no key) the expectation ``r c_{t-1} + (1 - r)
    c_t``. Being linear, the same function maps tangents.
    """
    if zone_t is None:
      mixed = tree_map(
          lambda r, old, new: r * old + (1 - r) * new if r else new,
          self.rates, c_tm1, c_t)
    else:
      mixed = tree_map(lambda d, old, new: jnp.where(d, old, new), zone_t, c_tm1, c_t)
    return mixed, self.hidden(mixed)


def segment_resets(reset, valid, reverse):
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


def _on_trailing_axes(mask, like):
  """A scalar ``mask`` as is; a batch mask ``(B,)`` shaped to broadcast
  against ``like: (B, ...)``."""
  return jnp.reshape(mask, mask.shape + (1,) * (like.ndim - mask.ndim))


def select(mask, new, old):
  """``where(mask, new, old)`` leafwise for a scalar ``mask``."""
  return tree_map(lambda n, o: jnp.where(_on_trailing_axes(mask, n), n, o), new, old)


def zero_unless(mask, tree):
  """``tree`` with every leaf zeroed where ``mask`` is False."""
  return tree_map(
      lambda v: jnp.where(_on_trailing_axes(mask, v), v, jnp.zeros((), v.dtype)), tree)


def masked(step, initial=None, zoneout: Optional[Zoneout] = None):
  """Wraps ``step(carry, x_t) -> (carry, y, aux)`` as a masked scan body.

  The body takes ``(carry, (steps_t, x_t))`` with ``steps_t`` a `Steps` of
  one step's entries. Before the step a reset restarts the carry from
  ``initial``; after it zoneout mixes old and new carries; on padding the
  carry passes through unchanged and ``y`` is zero (``aux`` is left as the
  step made it). The same wrapper masks a tangent scan, with the tangent of
  the initial carry as ``initial``: every operation here is linear in the
  carries.
  """

  def body(c, inp):
    (valid_t, reset_t, zone_t), x_t = inp
    if reset_t is not None:
      c = select(reset_t, initial, c)
    new_c, y, aux = step(c, x_t)
    if zoneout is not None:
      new_c, y = zoneout.mix(zone_t, c, new_c)
    if valid_t is not None:
      new_c, y = select(valid_t, new_c, c), zero_unless(valid_t, y)
    return new_c, (y, aux)

  return body


def scan(body, carry, xs, *, reverse, unroll, read_in_place=False):
  """``jax.lax.scan(body, carry, xs, unroll=unroll)`` for a body ``(c, x) ->
  (c, (y, aux))`` whose ``ys`` are written into a carried buffer.

  Returns ``(carry, (ys, auxs))``, the same values as the plain scan. Under
  ``vmap`` a plain scan stacks ``ys`` time-major, ``(T, B, ...)``, and vmap
  then moves the batch axis to the front: a transpose of every output after
  the loop. A buffer carried per example is batch-major from the start, so
  nothing is transposed (CPU, 2 cores, an Elman layer at (B, T, D, H) =
  (128, 50, 256, 512): 16 ms against 24 ms for the forward pass). ``auxs``
  are stacked time-major, as the engine's own scans consume them.

  With ``read_in_place`` the inputs are read the same way, by index,
  instead of being scanned over (which under vmap transposes them before
  the loop), and the loop reads and writes blocks of up to ``unroll``
  steps: under vmap every indexed read or write becomes a gather or
  scatter, and one per step costs as much as the step itself at batch size
  1 (an LSTM with H = 64: 0.72 against 0.60 ms for 500 steps). (Blocks
  would stack ``auxs`` batch-major under vmap: the engine reads in place
  only when it keeps none.)
  """
  num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
  if num_steps == 0:  # nothing to write
    return jax.lax.scan(body, carry, xs, reverse=reverse)
  # The outputs' shapes, from one traced step (its values are unused, and
  # the compiler drops them). jax.eval_shape would do, but under nested
  # transformations its tracing sees the tracers that ``body`` closes over
  # with their batch axes.
  y_like = body(carry, tree_map(lambda a: a[0], xs))[1][0]
  ys = tree_map(lambda y: jnp.zeros((num_steps,) + y.shape, y.dtype), y_like)

  def write(ys, y_block, start):
    return tree_map(lambda b, v: jax.lax.dynamic_update_slice_in_dim(b, v, start, 0),
                    ys, y_block)

  if not read_in_place:
    def write_step(c_ys, inp):
      c, ys = c_ys
      t, x = inp
      c, (y, aux) = body(c, x)
      return (c, write(ys, tree_map(lambda v: v[None], y), t)), aux

    (carry, ys), auxs = jax.lax.scan(write_step, (carry, ys), (jnp.arange(num_steps), xs),
                                     reverse=reverse, unroll=unroll)
    return carry, (ys, auxs)

  # Blocks of the most steps, up to ``unroll``, that divide T; the scan over
  # blocks unrolls ``unroll // block`` of them.
  block = max(k for k in range(1, unroll + 1) if num_steps % k == 0)

  def loop(c_ys, i):
    c, ys = c_ys
    x_block = tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * block, block), xs)
    outs = [None] * block
    for j in (range(block - 1, -1, -1) if reverse else range(block)):
      c, outs[j] = body(c, tree_map(lambda a: a[j], x_block))
    y_block, aux_block = tree_map(lambda *o: jnp.stack(o), *outs)
    return (c, write(ys, y_block, i * block)), aux_block

  (carry, ys), auxs = jax.lax.scan(loop, (carry, ys), jnp.arange(num_steps // block),
                                   reverse=reverse, unroll=max(1, unroll // block))
  return carry, (ys, tree_map(lambda a: a.reshape((num_steps,) + a.shape[2:]), auxs))
