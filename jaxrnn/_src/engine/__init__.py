"""The time loops behind the layers. Two entry points:

* `run`, the loops of `jaxrnn.rnn` over one sequence, one per path of
  `PATHS`, chosen by configuration only (`rnn`'s ``method`` and the cell):

  - ``reference`` (`reference.py`): the masked ``lax.scan`` of the cell's
    step; the specification, and the path of user cells.
  - ``fused`` (`fused.py`): built-in cells with a recurrent product (elman,
    lstm, gru with ``reset_after=True``, conv_lstm): a custom JVP around
    the forward scan, whose tangent scan JAX transposes into the fused
    backward pass. The forward loop's CPU layouts are in `inference.py`:
    outputs written by index and, when nothing is differentiated, inputs
    read by index, or the narrow form for narrow batches.
  - ``linear``, ``parallel`` and ``parallel_forward`` (`linear.py`): the
    linear family (min_gru, min_lstm, lru, rg_lru, mamba, linear_cell), by a
    multiply-add scan, by ``lax.associative_scan``, or by the associative
    scan differentiated as the multiply-add scan.
  - ``chunkwise`` (`chunkwise.py`): mlstm, a chunk of steps at a time
    with matrix products (its ``method="parallel"``).

  Each supports lengths, reverse over the valid prefix, resets and chunked
  remat; the first two also recurrent dropout and zoneout (the linear
  cells run zoneout on the reference path).
* `wavefront.scan2d`, the loops of `jaxrnn.rnn2d` over one image: a scan
  over anti-diagonals (the wavefront) or a double scan over rows and
  columns (its reference), with a valid region and reversal per axis.

Masking: the reference and fused loops (the fused forward and tangent
scans) wrap their steps in `steps.masked`; the linear path turns padding
and resets into its coefficients; the 2-D loops zero the inputs and
outputs outside the valid region and take the final carry at its last
position. `remat.py` holds the chunked
rematerialisation of both entry points, `settings.py` the per-backend
defaults. Every JAX transformation composes with every loop.
"""

from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import chunkwise as chunkwise_lib
from jaxrnn._src.engine import fused as fused_lib
from jaxrnn._src.engine import linear as linear_lib
from jaxrnn._src.engine import reference
from jaxrnn._src.engine import remat as remat_lib
from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine.hooks import Hooks
from jaxrnn._src.engine.steps import Steps, Zoneout


class Plan(NamedTuple):
  """How `run` executes a layer (static; built by `jaxrnn.rnn`).

  ``path``: a key of `PATHS`; ``unroll``: None (the backend's default) or
  ``(forward, backward)``; ``remat``: None/False, True or a chunk length
  (`remat.chunk_length`); ``carries``: the outputs are ``(ys, carries)``,
  with the carry after every step (zero on padding).
  """

  path: str
  reverse: bool
  unroll: Optional[tuple[int, int]]
  remat: Any
  carries: bool = False


# The paths of `run`, one signature: ``fn(cell, hooks, plan, params, carry,
# xs, steps, initial, h_mask, zoneout) -> (ys, carry)``; each resolves
# ``plan.unroll`` for ``xs``' steps with `settings.fit_unroll`.
PATHS = {"reference": reference.run, "fused": fused_lib.run, "linear": linear_lib.run,
         "parallel": partial(linear_lib.run, parallel=True),
         "parallel_forward": partial(linear_lib.run, parallel="forward"),
         "chunkwise": chunkwise_lib.run}


def run(cell, hooks: Optional[Hooks], plan: Plan, params, carry, xs, steps: Steps, *,
        initial=None, h_mask=None, zoneout: Optional[Zoneout] = None):
  """Runs ``cell`` over ``xs: (T, ...)``; returns ``(ys: (T, O), carry)``.

  ``initial`` is the carry a segment reset restarts from; ``h_mask`` the
  variational dropout mask on the recurrent input (or None); ``zoneout``
  the carry mixer (or None).

  With ``plan.remat`` the sequence is cut into checkpointed chunks
  (`remat.scan_chunks`), the last one padded with masked steps. The input
  projection is done per chunk, so no ``(T, G*H)`` array exists.
  """

  def run_path(carry, inputs):
    xs, steps = inputs
    return PATHS[plan.path](cell, hooks, plan, params, carry, xs, steps, initial, h_mask,
                            zoneout)[::-1]  # (carry, ys), as a scan body returns them

  def pad(inputs, num_pad):
    # Padding steps are masked out, so they leave the carry untouched.
    xs, steps = inputs
    if steps.valid is None:
      steps = steps._replace(valid=jnp.ones((xs.shape[0],), bool))
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.zeros((num_pad,) + a.shape[1:], a.dtype)]), (xs, steps))

  chunk = remat_lib.chunk_length(plan.remat, xs.shape[0])
  carry, ys = remat_lib.scan_chunks(run_path, carry, (xs, steps), chunk, reverse=plan.reverse,
                                    pad=pad)
  return ys, carry
