"""Per-step side inputs of a scan and the one implementation of masking a step.

The loops of `jaxrnn.rnn` that run the cell one step at a time (the
reference scan, the fused forward scan and its tangent scan) wrap the step
in `masked`: for them padding, segment resets and zoneout are applied here
and nowhere else. Two loops have no such step and mask on their own: the
linear path turns padding and resets into the coefficients of its
recurrence (`linear.py`, no zoneout), and the 2-D loops of `jaxrnn.rnn2d`
zero what lies outside the valid region (`wavefront.py`).
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


def masked(step, initial=None, zoneout: Optional[Zoneout] = None, carries: bool = False,
           restart=None):
  """Wraps ``step(carry, x_t) -> (carry, y, aux)`` as a masked scan body.

  The body takes ``(carry, (steps_t, x_t))`` with ``steps_t`` a `Steps` of
  one step's entries. Before the step a reset restarts the carry from
  ``initial`` (and a segment's first step is ``restart``, where a cell
  gives one, `hooks.Linear.restart`); after it zoneout mixes old and new carries; on padding the
  carry passes through unchanged and ``y`` is zero (``aux`` is left as the
  step made it). With ``carries`` the output is ``(y, carry)``, the carry
  after the step (zero on padding, like ``y``). The same wrapper masks a
  tangent scan, with the tangent of the initial carry as ``initial``: every
  operation here is linear in the carries.
  """

  def body(c, inp):
    (valid_t, reset_t, zone_t), x_t = inp
    if reset_t is not None:
      c = select(reset_t, initial, c)
    new_c, y, aux = step(c, x_t)
    if restart is not None and reset_t is not None:
      new_c, y, aux = select(reset_t, restart(c, x_t), (new_c, y, aux))
    if zoneout is not None:
      new_c, y = zoneout.mix(zone_t, c, new_c)
    if carries:
      y = (y, new_c)
    if valid_t is not None:
      new_c, y = select(valid_t, new_c, c), zero_unless(valid_t, y)
    return new_c, (y, aux)

  return body

