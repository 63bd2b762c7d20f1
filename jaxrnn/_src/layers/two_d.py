"""Layers over images: a 2-D cell scanned over the rows and columns of ONE
image, four-direction combinations, and ReNet's separable sweeps.

Every layer here works on ONE image ``xs: (R, C, input_size)`` and returns
``ys: (R, C, output_size)``; minibatches are
``jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, shape=shapes)``.

Semantics of ``shape = (h, w)`` (a pair of integer scalars or an integer
array of shape ``(2,)``, traced or not; `common.check_shape2d`): the valid
region is the top-left ``h x w`` block. Whatever lies outside it (NaN included)
changes no output and no gradient inside it; outputs outside it are exactly
zero. A reversed axis runs from the far edge of the valid region, with
outputs aligned with the inputs (as `jaxrnn.rnn`'s reverse over the valid
prefix). Integers known when tracing (Python ints, concrete arrays) outside
``[0, R]`` or ``[0, C]`` raise ``ValueError``; traced ones are clamped.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src.base import Cell, Layer
from jaxrnn._src.engine import hooks as hooks_lib
from jaxrnn._src.engine import wavefront
from jaxrnn._src.layers import common

Array = jax.Array
tree_map = jax.tree_util.tree_map


# ---------------------------------------------------------------------------
# Checks.


def check_image(xs: Any, input_size: Optional[int], owner: str) -> None:
  """Checks that ``xs`` is one image of shape ``(R, C, input_size)``."""
  shape = tuple(np.shape(xs))
  if len(shape) != 3:
    hint = ""
    if len(shape) == 4:
      hint = ("; apply works on ONE image: for a minibatch use "
              "jax.vmap(layer.apply, in_axes=(None, 0)) (and vmap `shape` too)")
    raise ValueError(
        f"xs: {owner} expects shape (R, C, input_size), got shape {shape} "
        f"(rank {len(shape)}){hint}")
  if input_size is not None and shape[-1] != input_size:
    raise ValueError(
        f"xs: {owner} expects shape (R, C, {input_size}) to match its params' "
        f"input_size={input_size}, got shape {shape}")
  if 0 in shape[:2]:
    raise ValueError(
        f"xs: {owner} expects at least one row and one column, got shape {shape}; "
        "pad the image and mark its valid region with shape=(h, w)")
  checks.check_floating(xs, "xs")


def _reject_1d(length: Any, reset: Any, owner: str) -> None:
  """The 1-D keywords are accepted, as None, so that generic code still works."""
  for name, value in (("length", length), ("reset", reset)):
    if value is not None:
      raise ValueError(
          f"{name}: {owner} works on images and has no `{name}`; give the "
          "valid region as shape=(h, w)")


def _check_reverse(reverse: Any) -> tuple[bool, bool]:
  if not isinstance(reverse, (tuple, list)) or len(reverse) != 2:
    raise TypeError(
        f"reverse: expected a pair of bools (rows, columns), got {reverse!r}")
  return (checks.check_bool(reverse[0], "reverse[0] (rows)"),
          checks.check_bool(reverse[1], "reverse[1] (columns)"))


# ---------------------------------------------------------------------------
# rnn2d


def rnn2d(
    cell: Cell,
    *,
    reverse: tuple[bool, bool] = (False, False),
    method: str = "wavefront",
    remat: Union[None, bool, int] = None,
) -> Layer:
  r"""Scans a 2-D cell over an image, row by row and column by column.

  Position ``(i, j)`` sees the carries of ``(i-1, j)`` (up) and ``(i, j-1)``
  (left); in Python, the reference method is::

    for i in range(R):
      for j in range(C):
        up = carry[i-1, j] if i > 0 else border
        left = carry[i, j-1] if j > 0 else border
        carry[i, j], ys[i, j] = cell.cell_apply(params, (up, left), xs[i, j])

  where ``border`` is ``cell.init_carry()`` or the ``carry`` given to
  ``apply`` (one position's carry, used for both borders).

  Args:
    cell: a 2-D `Cell` (`lstm2d`, `elman2d`, or any ``Cell`` whose
      ``cell_apply(params, (carry_up, carry_left), x)`` follows that
      contract).
    reverse: ``(rows, columns)``: scan that axis from the far edge of the
      valid region (bottom-up, right-to-left); outputs stay aligned with the
      inputs. ``(True, True)`` equals flipping both axes, running, and
      flipping back.
    method: ``"wavefront"`` (default): ``R + C - 1`` steps of
      ``jax.lax.scan``, each computing one anti-diagonal with ``jax.vmap``
      of ``cell_apply``; or ``"reference"``: the double scan above, ``R *
      C`` steps. Both give the same numbers (up to rounding).
    remat: checkpointing for the backward pass. ``False`` keeps every
      step's activations; ``True`` checkpoints chunks of about
      ``sqrt(steps)`` steps (diagonals, or rows for the reference): only
      the carries at chunk boundaries are kept, the rest is recomputed; an
      int sets the chunk length; the same chunks as `rnn`'s. ``None``
      (default): for the wavefront the backend's ``wavefront_remat``
      (`engine_settings`): on the CPU it checkpoints every diagonal
      (``remat=1``: measured faster than storing every gate activation, see
      the benchmark in the documentation), elsewhere nothing; for the
      reference nothing.

  Returns:
    A `Layer` whose params are the cell's params and whose carry is one
    position's carry. ``apply(params, xs, *, shape=None, carry=None,
    key=None) -> (ys, final_carry)`` maps ``xs: (R, C, input_size)`` to
    ``ys: (R, C, output_size)``; ``shape=(h, w)`` bounds the valid region
    (see the module docstring); ``final_carry`` is the carry at the last
    valid position in scan order (``(h-1, w-1)`` for ``reverse=(False,
    False)``; ``(0, 0)`` for ``(True, True)``), or the border carry if the
    region is empty. ``key`` (one PRNG key) is accepted and unused;
    ``length`` and ``reset`` are accepted as None only.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn2d(jaxrnn.lstm2d(4))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> xs = jnp.ones((5, 6, 3))
    >>> ys, carry = jax.jit(layer.apply)(params, xs, shape=(4, 5))
    >>> ys.shape, bool(jnp.all(ys[4:] == 0)), bool(jnp.all(carry.h == ys[3, 4]))
    ((5, 6, 4), True, True)
    >>> ref = jaxrnn.rnn2d(jaxrnn.lstm2d(4), method="reference")
    >>> both = jax.jit(lambda p, x: (ref.apply(p, x)[0], layer.apply(p, x)[0]))(params, xs)
    >>> bool(jnp.allclose(*both, atol=1e-6))
    True
  """
  cell = common.check_cell(
      cell, "cell", "pass the 2-D cell itself (e.g. jaxrnn.lstm2d(32)), not rnn2d(cell)")
  reverse = _check_reverse(reverse)
  if method not in wavefront.METHODS:
    raise ValueError(f"method: expected one of {wavefront.METHODS}, got {method!r}")
  if remat is not None and not isinstance(remat, bool):
    remat = checks.check_positive_int(remat, "remat")
  owner = "rnn2d.apply"

  def init_params(key, input_size, dtype=None):
    return cell.init_params(key, input_size, dtype)

  def apply(params, xs, *, shape=None, carry=None, key=None, length=None, reset=None):
    _reject_1d(length, reset, owner)
    common.check_key(key)
    check_image(xs, hooks_lib.input_size_of(cell, params), owner)
    extent = common.check_shape2d(shape, xs.shape[0], xs.shape[1])
    acc = checks.accumulation_dtype(
        xs.dtype, *[leaf.dtype for leaf in jax.tree_util.tree_leaves(params)])
    if carry is None:
      border = cell.init_carry(acc)
    else:
      checks.check_carry(carry, cell.init_carry(), owner)
      border = tree_map(lambda c: jnp.asarray(c, acc), carry)

    def step(carries, x):
      return cell.cell_apply(params, carries, x)

    return wavefront.scan2d(step, xs, border, extent, reverse=reverse, method=method,
                            remat=remat)

  return Layer(
      init_params=init_params, apply=apply, init_carry=cell.init_carry,
      config=(("kind", "rnn2d"), ("cell", cell), ("reverse", reverse),
              ("method", method), ("remat", remat)))


# ---------------------------------------------------------------------------
# multidirectional


def multidirectional(
    *layers: Layer,
    merge: Union[str, Callable[..., Array]] = "concat",
) -> Layer:
  """Runs 2-D layers over the same image and merges their outputs.

  With the four scan directions (one per corner of the image) every output
  sees the whole valid region: Graves, Fernández & Schmidhuber's
  multi-directional MDLSTM (2007).

  Args:
    *layers: one or more 2-D `Layer`s (e.g. `rnn2d` with different
      ``reverse``); their ``apply`` must take ``shape=``.
    merge: ``"concat"`` (``(R, C, O_1 + ... + O_n)``), ``"sum"``, ``"mean"``,
      ``"mul"`` (the merges of `bidirectional`) or a callable ``merge(y_1,
      ..., y_n)`` on ``(R, C, O)`` arrays.

  Returns:
    A `Layer` whose params and carries are tuples with one entry per layer.
    ``apply(params, xs, *, shape=None, carry=None, key=None)``; ``carry``
    is None or a tuple of the layers' carries (None entries allowed);
    ``key`` is split between the layers. Outputs outside the valid region
    are zero whatever ``merge`` does.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.multidirectional(*[
    ...     jaxrnn.rnn2d(jaxrnn.lstm2d(4), reverse=r)
    ...     for r in ((False, False), (False, True), (True, False), (True, True))])
    >>> params = net.init_params(jax.random.key(0), 3)
    >>> ys, carries = jax.jit(net.apply)(params, jnp.ones((5, 6, 3)), shape=(4, 6))
    >>> ys.shape, len(carries), bool(jnp.all(ys[4] == 0))
    ((5, 6, 16), 4, True)

  References:
    Graves, Fernández & Schmidhuber, Multi-Dimensional Recurrent Neural
    Networks, ICANN 2007 (arXiv:0705.2011).
  """
  if not layers:
    raise ValueError("layers: multidirectional expects at least one Layer, got none")
  layers = tuple(common.check_layer(layer, f"layers[{k}]", "wrap it as jaxrnn.rnn2d(cell)")
                 for k, layer in enumerate(layers))
  merge_fn = common.merge_function(merge)
  n = len(layers)
  owner = f"multidirectional of {n} layers"

  def init_params(key, input_size, dtype=None):
    return tuple(layer.init_params(k, input_size, dtype)
                 for layer, k in zip(layers, jax.random.split(key, n)))

  def init_carry(dtype=None):
    return tuple(layer.init_carry(dtype) for layer in layers)

  def apply(params, xs, *, shape=None, carry=None, key=None, length=None, reset=None):
    _reject_1d(length, reset, "multidirectional.apply")
    carry = (None,) * n if carry is None else carry
    for name, value in (("params", params), ("carry", carry)):
      checks.check_entries(value, n, name, owner)
    keys = [None] * n
    if common.check_key(key) is not None:
      keys = list(jax.random.split(key, n))
    ys, carries = [], []
    for layer, p, c, k in zip(layers, params, carry, keys):
      options = {} if k is None else {"key": k}
      y, c = layer.apply(p, xs, shape=shape, carry=c, **options)
      ys.append(y)
      carries.append(c)
    out = merge_fn(*ys)
    if callable(merge):
      # A user merge may map zeros to something else: re-zero outside.
      out = common.mask_region(out, common.check_shape2d(shape, *xs.shape[:2]))
    return out, tuple(carries)

  return Layer(
      init_params=init_params, apply=apply, init_carry=init_carry,
      config=(("kind", "multidirectional"), ("layers", layers), ("merge", merge)))


# ---------------------------------------------------------------------------
# renet


class ReNetParams(NamedTuple):
  """Parameters of `renet`: those of the row sweep and the column sweep."""

  rows: Any
  columns: Any


class ReNetCarry(NamedTuple):
  """Carries of `renet`.

  Given to ``apply``: one carry of each 1-D layer, used to start every row
  (every column). Returned: the final carries with a leading axis, ``rows:
  (R, ...)`` one per row and ``columns: (C, ...)`` one per column (the
  starting carry for rows and columns outside the valid region).
  """

  rows: Any
  columns: Any


def renet(row_layer: Layer, column_layer: Layer) -> Layer:
  """ReNet's separable sweeps: a 1-D layer along every row, then another
  along every column (Visin et al. 2015).

  ``row_layer`` runs over each row ``xs[i]: (C, input_size)`` (``jax.vmap``
  over rows); ``column_layer`` then runs over each column of those outputs,
  ``(R, O_row)``. With bidirectional layers every output sees the whole
  valid region, at ``R + C`` sequential steps. ``shape=(h, w)`` becomes
  the 1-D layers' ``length``: ``w`` for rows ``i < h`` and 0 below them,
  ``h`` for columns ``j < w`` and 0 beyond them.

  Args:
    row_layer: a 1-D `Layer` (e.g. `jaxrnn.bidirectional`) over ``(C,
      input_size)`` sequences.
    column_layer: a 1-D `Layer` over ``(R, O_row)`` sequences.

  Returns:
    A `Layer` with params `ReNetParams` and carry `ReNetCarry`;
    ``apply(params, xs, *, shape=None, carry=None, key=None) -> (ys,
    carry)`` maps ``xs: (R, C, input_size)`` to ``ys: (R, C, O_column)``.
    ``key`` is split between the sweeps (and then between rows or
    columns).

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.renet(jaxrnn.bidirectional(jaxrnn.gru(4), jaxrnn.gru(4)),
    ...                    jaxrnn.bidirectional(jaxrnn.gru(5), jaxrnn.gru(5)))
    >>> params = net.init_params(jax.random.key(0), 3)
    >>> ys, carry = jax.jit(net.apply)(params, jnp.ones((5, 6, 3)), shape=(5, 4))
    >>> ys.shape, bool(jnp.all(ys[:, 4:] == 0)), carry.rows.forward.shape
    ((5, 6, 10), True, (5, 4))

  References:
    Visin, Kastner, Cho, Matteucci, Courville & Bengio, ReNet: A Recurrent
    Neural Network Based Alternative to Convolutional Networks,
    arXiv:1505.00393, 2015.
  """
  row_layer = common.check_layer(row_layer, "row_layer")
  column_layer = common.check_layer(column_layer, "column_layer")
  owner = "renet.apply"

  def init_params(key, input_size, dtype=None):
    input_size = checks.check_positive_int(input_size, "input_size")
    k_r, k_c = jax.random.split(key)
    rows = row_layer.init_params(k_r, input_size, dtype)
    size = common.output_size(row_layer, rows, input_size, dtype, rank=2)  # rows (C, D)
    return ReNetParams(rows, column_layer.init_params(k_c, size, dtype))

  def init_carry(dtype=None):
    return ReNetCarry(row_layer.init_carry(dtype), column_layer.init_carry(dtype))

  def sweep(layer, params, xs, lengths, carry, key):
    """``layer`` over each ``xs[k]``; per-sequence lengths; a key per sequence."""
    options = {}
    if carry is not None:
      options["carry"] = carry
    if key is None:
      return jax.vmap(lambda x, n: layer.apply(params, x, length=n, **options))(xs, lengths)
    keys = jax.random.split(key, xs.shape[0])
    return jax.vmap(lambda x, n, k: layer.apply(params, x, length=n, key=k, **options))(
        xs, lengths, keys)

  def apply(params, xs, *, shape=None, carry=None, key=None, length=None, reset=None):
    _reject_1d(length, reset, owner)
    checks.check_params(params, ReNetParams, "renet")
    if carry is None:
      carry = ReNetCarry(None, None)
    elif not isinstance(carry, ReNetCarry):
      raise TypeError(
          f"carry: renet expects a ReNetCarry(rows, columns) or None, got "
          f"{type(carry).__name__}")
    check_image(xs, None, owner)
    R, C = xs.shape[:2]
    extent = common.check_shape2d(shape, R, C)
    h, w = (R, C) if extent is None else extent
    k_r = k_c = None
    if common.check_key(key) is not None:
      k_r, k_c = jax.random.split(key)
    # Junk outside the region (NaN included) must not reach a gradient even
    # through a user layer that leaves its padding in place.
    xs = common.mask_region(xs, extent)
    row_lengths = jnp.where(jnp.arange(R) < h, w, 0)
    ys, c_rows = sweep(row_layer, params.rows, xs, row_lengths, carry.rows, k_r)
    column_lengths = jnp.where(jnp.arange(C) < w, h, 0)
    ys, c_columns = sweep(column_layer, params.columns, jnp.swapaxes(ys, 0, 1),
                          column_lengths, carry.columns, k_c)
    return common.mask_region(jnp.swapaxes(ys, 0, 1), extent), ReNetCarry(c_rows, c_columns)

  return Layer(
      init_params=init_params, apply=apply, init_carry=init_carry,
      config=(("kind", "renet"), ("row_layer", row_layer),
              ("column_layer", column_layer)))
