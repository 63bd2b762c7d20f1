"""Chunked rematerialisation: the one meaning of ``remat=`` in `jaxrnn.rnn`
and `jaxrnn.rnn2d`.

The steps are cut into chunks of about ``sqrt(T)`` steps (``remat=True``) or
of a given length (an int), each run under ``jax.checkpoint``: only the
carry at each chunk boundary is kept for the backward pass, and a chunk's
steps are recomputed from it, so activation memory grows with ``T / chunk +
chunk`` instead of ``T``.
"""

import math
from typing import Optional, Union

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


def chunk_length(remat: Union[None, bool, int], num_steps: int,
                 default: Optional[int] = None) -> Optional[int]:
  """Steps per checkpointed chunk; None: nothing is checkpointed.

  ``remat``: None (``default``, a backend's setting), False, True (``max(1,
  isqrt(num_steps))``) or a chunk length (at most ``num_steps``).
  """
  remat = default if remat is None else remat
  if not remat or num_steps == 0:
    return None
  return max(1, math.isqrt(num_steps)) if remat is True else min(int(remat), num_steps)


def scan_chunks(run, carry, xs, chunk: Optional[int], *, reverse: bool = False, pad=None,
                step=None):
  """``run(carry, xs) -> (carry, ys)`` over ``xs: (T, ...)``, checkpointed in
  chunks of ``chunk`` steps (`chunk_length`), in scan order (``reverse``).

  The last ``T % chunk`` steps are padded to one more whole chunk by
  ``pad(xs, n)``, which appends ``n`` steps that leave the carry alone, or
  without ``pad`` form one more, shorter chunk; ``ys`` cover the ``T`` steps.
  ``step``: the body, when ``run`` is ``lax.scan`` of one; chunks of one
  step then checkpoint it alone (no loop inside the loop).
  """
  num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
  if chunk is None or num_steps == 0:
    return run(carry, xs)
  chunk = min(chunk, num_steps)
  # Chunks run inside a scan, where common subexpressions cannot cross
  # iterations anyway.
  if chunk == 1 and step is not None:
    return jax.lax.scan(jax.checkpoint(step, prevent_cse=False), carry, xs, reverse=reverse)
  num_chunks, rest = divmod(num_steps, chunk)
  if rest and pad is not None:
    xs, num_chunks, rest = pad(xs, chunk - rest), num_chunks + 1, 0
  run_chunk = jax.checkpoint(run, prevent_cse=False)
  split = num_chunks * chunk
  run_tail = lambda carry: run_chunk(carry, tree_map(lambda a: a[split:], xs))
  if rest and reverse:
    carry, ys_tail = run_tail(carry)
  carry, ys = jax.lax.scan(run_chunk, carry, tree_map(
      lambda a: a[:split].reshape((num_chunks, chunk) + a.shape[1:]), xs), reverse=reverse)
  ys = tree_map(lambda y: y.reshape((split,) + y.shape[2:])[:num_steps], ys)
  if rest and not reverse:
    carry, ys_tail = run_tail(carry)
  if rest:
    ys = tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
  return carry, ys
