"""The CPU layouts of the fused forward loop (`EngineSettings.in_place`,
``narrow_max_batch``): outputs written by index, inputs read by index when
nothing is differentiated, and the narrow form of narrow batches.

The layer is written per example, so under ``vmap`` a ``lax.scan`` stacks
its outputs time-major, ``(T, B, ...)``, and ``vmap`` transposes them to the
caller's ``(B, T, ...)`` after the loop (and its inputs before it). `scan`
keeps them batch-major instead; `by_batch_size` picks, with a batching rule,
the form that suits the batch. Both compute the numbers of the plain scan.
"""

from functools import partial

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map


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
  # (A symbolic T, from jax.export, has no known divisor but 1.)
  block = (max(k for k in range(1, unroll + 1) if num_steps % k == 0)
           if isinstance(num_steps, int) else 1)

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


def by_batch_size(run, static, *args):
  """``run(static, *args)`` (the inference loop: ``(ys, carry)``), its form
  chosen by batch size.

  The layer is written per example, so only a batching rule sees the batch
  size (``jax.custom_batching.custom_vmap``). Up to
  ``static.narrow_max_batch`` examples, and unbatched calls, run the narrow
  form of the loop: the input projection hoisted (unless the cell's
  ``narrow_hoist`` is False), inputs and outputs stacked time-major (under
  a narrow vmap the transposes around the loop are cheap, and at one
  example free) and one step per iteration; wider batches run
  ``static``'s form. The rule sits on the primal alone: JAX
  cannot transpose it, and every derivative of `fused.scan` goes through
  its JVP rule. Its outputs come back batch-major, and under vmap the JVP
  rule's must too (JAX takes their batch axis from the primal's): so only
  with ``static.in_place``.
  """
  if not (static.in_place and static.narrow_max_batch):
    return run(static, *args)
  narrow = static._replace(hoist=static.hooks.product.narrow_hoist, in_place=False,
                           unroll=(1, static.unroll[1]))
  leaves, tree = jax.tree_util.tree_flatten(args)

  def run_leaves(form, *leaves):
    return run(form, *jax.tree_util.tree_unflatten(tree, leaves))

  @jax.custom_batching.custom_vmap
  def forward(*leaves):
    return run_leaves(narrow, *leaves)

  @forward.def_vmap
  def _rule(axis_size, in_batched, *leaves):
    # A symbolic batch size (jax.export) may be any size: the wide form.
    form = (narrow if isinstance(axis_size, int) and axis_size <= static.narrow_max_batch
            else static)
    out = jax.vmap(partial(run_leaves, form), in_axes=[0 if b else None for b in in_batched],
                   axis_size=axis_size)(*leaves)
    return out, tree_map(lambda _: True, out)

  return forward(*leaves)
