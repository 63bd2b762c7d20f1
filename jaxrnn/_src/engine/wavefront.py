"""The loops behind `jaxrnn.rnn2d`: a wavefront over anti-diagonals, and a
double scan kept as the readable reference.

Position ``(i, j)`` depends on ``(i-1, j)`` and ``(i, j-1)`` only, so every
position on one anti-diagonal ``i + j = s`` depends only on the previous
anti-diagonal. The wavefront runs ``R + C - 1`` steps of ``jax.lax.scan``,
each calling the cell (``jax.vmap`` of ``cell_apply``) on a whole
anti-diagonal at once; the double scan runs ``R * C`` steps, one position
each. Both call the same ``cell_apply`` and give the same numbers.

The wavefront indexes diagonal ``s`` by row: slot ``i`` holds position
``(i, s - i)`` (PixelRNN's skewed image, ``(L, R + C - 1)`` with ``L =
min(R, C)``; a tall image is transposed first, swapping the roles of the
two neighbours). Slot ``i`` then finds its left neighbour ``(i, s-1-i)`` in
slot ``i`` of the previous diagonal and its upper neighbour ``(i-1, s-i)``
in slot ``i - 1``: the state is one carry per row, shifted by one slot for
the upper neighbours. Slots that fall off the image hold the border carry,
so the next diagonal reads the border where it should. Each diagonal's
inputs are gathered from the image, and the outputs gathered back, by index
tables computed once when tracing (measured 5-15% faster in the forward pass
than skewing by pads and reshapes, docs/two_d.md).

`scan2d` is the engine's entry point for `jaxrnn.rnn2d`, beside `engine.run`
for `jaxrnn.rnn`. It masks on its own: the inputs outside the valid region
are zeroed before the loop and the outputs after it, and the final carry is
taken at the last valid position. ``remat`` chunks as `jaxrnn.rnn`'s does
(`remat.py`); the wavefront's defaults are fields of `EngineSettings`.
"""

from functools import partial
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.engine import remat as remat_lib
from jaxrnn._src.engine import settings as settings_lib

tree_map = jax.tree_util.tree_map

METHODS = ("wavefront", "reference")

Step = Callable[[tuple[Any, Any], jax.Array], tuple[Any, jax.Array]]


def reverse_region(a: jax.Array, extent: Union[int, jax.Array], reverse: bool,
                   axis: int) -> jax.Array:
  """Reverses the valid prefix ``[0, extent)`` of ``a`` along ``axis``.

  Entry ``k < extent`` moves to ``extent - 1 - k``; the rest stay. An
  involution: the same call brings results back.
  """
  if not reverse:
    return a
  if isinstance(extent, int) and extent == a.shape[axis]:
    return jnp.flip(a, axis)
  k = jnp.arange(a.shape[axis])
  return jnp.take(a, jnp.where(k < extent, extent - 1 - k, k), axis=axis)


def scan2d(step: Step, xs: jax.Array, border: Any,
           extent: Optional[tuple[jax.Array, jax.Array]], *,
           reverse: tuple[bool, bool] = (False, False), method: str = "wavefront",
           remat: Union[None, bool, int] = None) -> tuple[jax.Array, Any]:
  """Runs ``step`` over the valid region of one image.

  Args:
    step: ``step((carry_up, carry_left), x) -> (carry, y)`` for one position
      (``cell_apply`` with its params bound).
    xs: ``(R, C, D)``.
    border: one position's carry, seen from outside the image (and outside
      the valid region, which the scan never enters from outside).
    extent: ``(h, w)``, int32 scalars in ``[0, R]`` and ``[0, C]``: the valid
      top-left region; None for the whole image.
    reverse: ``(rows, cols)``: scan each axis from the far end of the valid
      region.
    method: ``"wavefront"`` or ``"reference"``.
    remat: None (for the wavefront the backend's
      `EngineSettings.wavefront_remat`; for the reference nothing), False,
      True (chunks of about ``sqrt(steps)``, `remat.chunk_length`) or a
      chunk length in steps (diagonals, or rows for the reference).

  Returns:
    ``(ys, final)``: ``ys: (R, C, O)``, zero outside the valid region, and
    the carry at the last valid position in scan order (``border`` if the
    region is empty).
  """
  R, C = xs.shape[:2]
  h, w = (R, C) if extent is None else extent
  valid = None
  if extent is not None:
    valid = ((jnp.arange(R) < h)[:, None] & (jnp.arange(C) < w)[None, :])[:, :, None]
    # Zero whatever lies outside the region (NaN included) before it meets a
    # product, so that no gradient can pick it up. Positions outside are
    # below or right of the region in scan order: they never feed back.
    xs = jnp.where(valid, xs, jnp.zeros((), xs.dtype))
  xs = reverse_region(reverse_region(xs, h, reverse[0], 0), w, reverse[1], 1)
  loop = _wavefront if method == "wavefront" else _double_scan
  ys, final = loop(step, xs, border, h, w, remat)
  ys = reverse_region(reverse_region(ys, h, reverse[0], 0), w, reverse[1], 1)
  if valid is not None:
    ys = jnp.where(valid, ys, jnp.zeros((), ys.dtype))
  return ys, final


def _select(flag: jax.Array, new: Any, old: Any) -> Any:
  return tree_map(lambda n, o: jnp.where(flag, n, o), new, old)


# ---------------------------------------------------------------------------
# Reference: rows, then columns.


def _double_scan(step, xs, border, h, w, remat):
  """R * C steps: an outer scan over rows carrying the row above, an inner
  scan over its columns carrying the left neighbour."""
  R, C = xs.shape[:2]
  above0 = tree_map(lambda b: jnp.broadcast_to(b, (C,) + b.shape), border)

  def row_step(state, row_inputs):
    above, final = state
    x_row, last_row = row_inputs

    def column_step(column_state, inputs):
      left, final = column_state
      up, x, j = inputs
      carry, y = step((up, left), x)
      final = _select(last_row & (j == w - 1), carry, final)
      return (carry, final), (carry, y)

    (_, final), (row, ys) = jax.lax.scan(
        column_step, (border, final), (above, x_row, jnp.arange(C)))
    return (row, final), ys

  last_rows = jnp.arange(R) == h - 1
  (_, final), ys = remat_lib.scan_chunks(
      partial(jax.lax.scan, row_step), (above0, border), (xs, last_rows),
      remat_lib.chunk_length(remat, R), step=row_step)
  return ys, final


# ---------------------------------------------------------------------------
# Wavefront.


def segments(L: int, M: int, per_ramp: int, min_width: int) -> list[tuple[int, int, int, int]]:
  """Splits the ``L + M - 1`` diagonals (``L <= M``) into scans of fixed width.

  Diagonal ``s`` holds rows ``lo(s) = max(0, s - M + 1)`` to ``hi(s) =
  min(s, L - 1)``: the first ``L - 1`` diagonals grow by one row each, the
  last ``L - 1`` shrink. Scanning all of them at the full width L computes
  about twice the ``L * M`` positions of a square image; instead, when ``L
  >= min_width``, each ramp is cut into ``per_ramp`` segments, each a scan
  over the rows it needs. A segment's window ``[a, b)`` holds its
  diagonals' rows plus the row above them (``a = lo(s0) - 1``), whose carry
  the first diagonal reads as its upper neighbour; rows of a window off a
  diagonal hold the border carry.

  Returns:
    ``(s0, s1, a, b)`` per segment: diagonals ``[s0, s1)``, rows ``[a, b)``.
  """
  S = L + M - 1
  if L < min_width or per_ramp <= 1:
    return [(0, S, 0, L)]
  step = -(-L // per_ramp)
  cuts = sorted({0, S} | set(range(0, L, step)) | set(range(M, S, step)))
  out = []
  for s0, s1 in zip(cuts[:-1], cuts[1:]):
    a = max(max(0, s0 - M + 1) - 1, 0)
    b = min(s1 - 1, L - 1) + 1
    out.append((s0, s1, a, b))
  return out


def _gather_tables(L: int, M: int, parts):
  """Static index tables of the wavefront over an ``(L, M)`` image.

  For each segment ``(s0, s1, a, b)``: ``index: (s1 - s0, b - a)``, the
  position ``i * M + j`` that row ``i`` of diagonal ``s`` reads (``L * M``,
  a zero row, where ``j = s - i`` is off the image), and ``on``, True on
  the image. And ``out: (L, M)``, where each position's output lies in the
  concatenation of the segments' flattened outputs.
  """
  tables, out, base = [], np.zeros((L, M), np.int32), 0
  for s0, s1, a, b in parts:
    s = np.arange(s0, s1)[:, None]
    i = np.arange(a, b)[None, :]
    j = s - i
    on = (j >= 0) & (j < M)
    tables.append((np.where(on, i * M + j, L * M).astype(np.int32), on))
    flat = base + (s - s0) * (b - a) + (i - a)
    out[np.broadcast_to(i, on.shape)[on], j[on]] = flat[on]
    base += (s1 - s0) * (b - a)
  return tables, out


def _wavefront(step, xs, border, h, w, remat):
  """R + C - 1 steps, one anti-diagonal each (see the module docstring)."""
  transposed = xs.shape[0] > xs.shape[1]
  if transposed:
    # Along a transposed image the position above is the original's left.
    xs, h, w = jnp.swapaxes(xs, 0, 1), w, h
    vstep = jax.vmap(lambda carries, x: step(carries[::-1], x))
  else:
    vstep = jax.vmap(step)
  L, M = xs.shape[:2]
  S = L + M - 1
  settings = settings_lib.current()
  parts = segments(L, M, settings.wavefront_segments, settings.wavefront_min_width)
  tables, out_index = _gather_tables(L, M, parts)
  # One zero row past the image: what off-image rows of a diagonal read.
  flat_xs = jnp.concatenate([xs.reshape((L * M,) + xs.shape[2:]),
                             jnp.zeros((1,) + xs.shape[2:], xs.dtype)])
  # The last valid position, (h-1, w-1), is on diagonal h + w - 2.
  ends = (jnp.arange(S) == h + w - 2) & (h > 0) & (w > 0)
  last_row = jnp.maximum(h - 1, 0)
  chunk = remat_lib.chunk_length(remat, S, settings.wavefront_remat)

  def window_step(a, width):
    """One diagonal over the rows ``[a, a + width)``."""
    last = jnp.clip(last_row - a, 0, width - 1)

    def diagonal_step(state, inputs):
      previous, final = state
      x, on, ends_here = inputs
      up = tree_map(lambda b, p: jnp.concatenate([b[None], p[:-1]], axis=0),
                    border, previous)
      carry, y = vstep((up, previous), x)
      carry = tree_map(
          lambda c, b: jnp.where(on.reshape((width,) + (1,) * (c.ndim - 1)), c, b[None]),
          carry, border)
      final = _select(ends_here, tree_map(lambda c: c[last], carry), final)
      return (carry, final), y

    return diagonal_step

  rows = tree_map(lambda b: jnp.broadcast_to(b, (L,) + b.shape), border)
  final = border
  ys_flat = []
  for (s0, s1, a, b), (index, on) in zip(parts, tables):
    window = tree_map(lambda r: r[a:b], rows)
    body = window_step(a, b - a)
    (window, final), ys = remat_lib.scan_chunks(
        partial(jax.lax.scan, body), (window, final),
        (flat_xs[index], jnp.asarray(on), ends[s0:s1]), chunk, step=body)
    rows = tree_map(lambda r, part: r.at[a:b].set(part), rows, window)
    ys_flat.append(ys.reshape((-1,) + ys.shape[2:]))
  ys = jnp.concatenate(ys_flat, axis=0)[out_index]  # (L, M, O)
  return (jnp.swapaxes(ys, 0, 1) if transposed else ys), final
