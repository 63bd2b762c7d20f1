"""Layers: a cell unrolled over a sequence, bidirectional pairs, stacks, readouts.

Every layer works on ONE sequence ``xs: (T, input_size)``; minibatches are
``jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, length=lengths)``
(``jax.vmap`` maps keyword arguments over their leading axis).

Semantics of ``length`` (an integer scalar, traced or not): steps
``t >= length`` are padding. Whatever they hold never changes an output at a
valid step or the final carry; outputs at padded steps are exactly zero; the
final carry is the carry after the last valid step (the initial carry when
``length == 0``). A reversed scan runs over the valid prefix
``xs[length-1], ..., xs[0]`` and returns outputs aligned with the inputs.
A Python-int ``length`` outside ``[0, T]`` raises ``ValueError``; a traced
one is clamped to ``[0, T]``.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src import scan as scan_lib
from jaxrnn._src.base import Cell, Layer

Array = jax.Array


def _input_size_of(params: Any) -> Optional[int]:
  """The input size recorded in a built-in cell's params (``W_x``), if any."""
  W_x = getattr(params, "W_x", None)
  if W_x is not None and np.ndim(W_x) == 2:
    return np.shape(W_x)[0]
  return None


def _mask_steps(ys: Any, length: Optional[Array]) -> Any:
  """Zeros ``ys[t]`` for ``t >= length`` (every leaf has time on axis 0)."""
  if length is None:
    return ys

  def mask(y):
    valid = jnp.arange(y.shape[0]) < length
    return jnp.where(valid.reshape((-1,) + (1,) * (y.ndim - 1)), y, jnp.zeros((), y.dtype))

  return jax.tree_util.tree_map(mask, ys)


def _check_cell(cell: Any, name: str) -> Cell:
  if isinstance(cell, Layer):
    raise TypeError(
        f"{name}: expected a jaxrnn.Cell, got a jaxrnn.Layer; pass the cell "
        "itself (e.g. jaxrnn.lstm(64)), not rnn(cell)"
    )
  if not isinstance(cell, Cell):
    raise TypeError(f"{name}: expected a jaxrnn.Cell, got {type(cell).__name__}")
  return cell


def _check_layer(layer: Any, name: str) -> Layer:
  if isinstance(layer, Cell):
    raise TypeError(
        f"{name}: expected a jaxrnn.Layer, got a jaxrnn.Cell; wrap it as "
        "jaxrnn.rnn(cell)"
    )
  if not isinstance(layer, Layer):
    raise TypeError(f"{name}: expected a jaxrnn.Layer, got {type(layer).__name__}")
  return layer


# ---------------------------------------------------------------------------
# rnn


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    unroll: Optional[int] = None,
    remat: Union[None, bool, int] = None,
    fused_vjp: Optional[bool] = None,
) -> Layer:
  """Unrolls ``cell`` over a sequence with ``jax.lax.scan``.

  For the built-in cells the input projection ``xs @ W_x + b`` is computed
  for all steps as one matrix product before the scan, so each scanned step
  does only ``h_{t-1} @ W_h`` and elementwise work.

  Args:
    cell: a `Cell`.
    reverse: run from the last valid step to the first (outputs stay aligned
      with the inputs; with ``length``, the scan covers only the valid
      prefix).
    unroll: steps per loop iteration of the scan; ``None`` picks a value
      measured to suit the backend.
    remat: memory-bounded backpropagation for long sequences. ``None`` or
      ``False`` stores every step's activations (O(T) memory); ``True``
      checkpoints chunks of about ``sqrt(T)`` steps (O(sqrt(T)) memory for
      about one extra forward pass); an int sets the chunk length.
    fused_vjp: use the fused backward pass: the backward scan carries only
      the recurrent data gradient and emits the pre-activation gradients of
      every step; the weight gradients are then single large products after
      the scan. ``None`` uses it where the cell supports it (the built-in
      cells, except ``lstm`` with ``proj_size``, ``gru`` with
      ``reset_after=False`` and ``elman`` with a callable activation) and
      params, inputs and carry share one dtype; ``False`` uses plain
      autodiff of the scan. Both give the same gradients, and both support
      forward mode (``jax.jvp``, ``jax.hessian``) and higher orders.

  Returns:
    A `Layer` whose params are the cell's params and whose carry is the
    cell's carry. ``apply(params, xs, *, length=None, carry=None) -> (ys,
    carry)`` maps ``xs: (T, input_size)`` to ``ys: (T, output_size)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.gru(4))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> ys, h = layer.apply(params, jnp.ones((6, 3)), length=4)
    >>> ys.shape, bool(jnp.all(ys[4:] == 0)), bool(jnp.all(h == ys[3]))
    ((6, 4), True, True)
  """
  cell = _check_cell(cell, "cell")
  if unroll is not None:
    unroll = checks.check_positive_int(unroll, "unroll")
  if remat is not None and not isinstance(remat, bool):
    remat = checks.check_positive_int(remat, "remat")
  if fused_vjp and cell.fused is None:
    raise ValueError(
        "fused_vjp: this cell has no fused backward pass (user cells, lstm "
        "with proj_size, gru with reset_after=False and elman with a "
        "callable activation use autodiff); pass fused_vjp=None or False"
    )
  use_fused = cell.fused is not None and fused_vjp is not False

  def apply(params, xs, *, length=None, carry=None):
    checks.check_sequence(xs, _input_size_of(params), "rnn.apply", cell.input_ndim)
    length = checks.check_length(length, xs.shape[0])
    acc = checks.accumulation_dtype(xs.dtype, *[
        leaf.dtype for leaf in jax.tree_util.tree_leaves(params)])
    if carry is None:
      carry = cell.init_carry(dtype=acc)
    else:
      checks.check_carry(carry, cell.init_carry(), "rnn.apply")
    if length is not None:
      # Zero the padding so that junk there (even NaN) cannot reach a
      # gradient through the input projection.
      xs = _mask_steps(xs, length)
    return scan_lib.unroll(
        cell, params, carry, xs, length=length, reverse=reverse,
        unroll=unroll, remat=remat, use_fused=use_fused)

  return Layer(
      init_params=cell.init_params, apply=apply, init_carry=cell.init_carry,
      config=(("kind", "rnn"), ("cell", cell), ("reverse", reverse),
              ("unroll", unroll), ("remat", remat), ("fused_vjp", fused_vjp)))


# ---------------------------------------------------------------------------
# bidirectional


class BidirectionalParams(NamedTuple):
  """Parameters of `bidirectional`: one set per direction."""

  forward: Any
  backward: Any


class BidirectionalCarry(NamedTuple):
  """Carry of `bidirectional`: the final carry of each direction."""

  forward: Any
  backward: Any


_MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


def bidirectional(
    forward: Cell,
    backward: Cell,
    *,
    merge: Union[str, Callable[[Array, Array], Array]] = "concat",
    **rnn_options,
) -> Layer:
  """Runs ``forward`` over the sequence and ``backward`` by a reversed scan.

  The backward cell sees ``xs[length-1], ..., xs[0]`` (connections that go
  backward in time) and its outputs are aligned with the inputs, so
  ``ys[t]`` merges both directions' outputs at step ``t``.

  Args:
    forward: the `Cell` run forward in time.
    backward: the `Cell` run backward in time.
    merge: how outputs of the two directions combine at each step:
      ``"concat"`` (``(T, O_f + O_b)``), ``"sum"``, ``"mean"``, ``"mul"`` or
      a callable ``merge(y_forward, y_backward)`` on ``(T, O)`` arrays.
    **rnn_options: ``unroll``, ``remat`` or ``fused_vjp``, passed to
      `rnn` for both directions.

  Returns:
    A `Layer` with params `BidirectionalParams` and carry
    `BidirectionalCarry`.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.bidirectional(jaxrnn.lstm(3), jaxrnn.lstm(3))
    >>> params = layer.init_params(jax.random.key(0), 2)
    >>> ys, carry = layer.apply(params, jnp.ones((5, 2)), length=3)
    >>> ys.shape, bool(jnp.all(ys[3:] == 0))
    ((5, 6), True)
  """
  forward = _check_cell(forward, "forward")
  backward = _check_cell(backward, "backward")
  if callable(merge):
    merge_fn, custom_merge = merge, True
  elif isinstance(merge, str) and merge in _MERGES:
    merge_fn, custom_merge = _MERGES[merge], False
  else:
    raise ValueError(
        f"merge: expected one of {sorted(_MERGES)} or a callable, got {merge!r}"
    )
  fwd = rnn(forward, **rnn_options)
  bwd = rnn(backward, reverse=True, **rnn_options)

  def init_params(key, input_size, dtype=None):
    k_f, k_b = jax.random.split(key)
    return BidirectionalParams(
        fwd.init_params(k_f, input_size, dtype), bwd.init_params(k_b, input_size, dtype))

  def init_carry(dtype=None):
    return BidirectionalCarry(fwd.init_carry(dtype), bwd.init_carry(dtype))

  def apply(params, xs, *, length=None, carry=None):
    checks.check_params(params, BidirectionalParams, "bidirectional")
    if carry is None:
      carry = BidirectionalCarry(None, None)
    elif not isinstance(carry, BidirectionalCarry):
      raise TypeError(
          "carry: bidirectional expects a BidirectionalCarry(forward, "
          f"backward) or None, got {type(carry).__name__}")
    ys_f, c_f = fwd.apply(params.forward, xs, length=length, carry=carry.forward)
    ys_b, c_b = bwd.apply(params.backward, xs, length=length, carry=carry.backward)
    ys = merge_fn(ys_f, ys_b)
    if custom_merge:
      # A user merge may map (0, 0) to something else: re-zero the padding.
      ys = _mask_steps(ys, checks.check_length(length, xs.shape[0]))
    return ys, BidirectionalCarry(c_f, c_b)

  return Layer(
      init_params=init_params, apply=apply, init_carry=init_carry,
      config=(("kind", "bidirectional"), ("forward", forward),
              ("backward", backward), ("merge", merge),
              ("rnn_options", tuple(sorted(rnn_options.items())))))


# ---------------------------------------------------------------------------
# stack


def _output_size(layer: Layer, params: Any, input_size: int, dtype) -> int:
  dtype = checks.default_float() if dtype is None else dtype
  xs = jax.ShapeDtypeStruct((1, input_size), dtype)
  ys, _ = jax.eval_shape(lambda p, x: layer.apply(p, x), params, xs)
  return ys.shape[-1]


def stack(*layers: Layer) -> Layer:
  """Stacks layers: layer l's outputs are layer l+1's inputs at every step.

  .. math::
    h^{[l]}_t = φ(W^{[l]}_x h^{[l-1]}_t + W^{[l]}_h h^{[l]}_{t-1} + b^{[l]}),
    \\qquad h^{[0]}_t = x_t

  Args:
    *layers: one or more `Layer`s (e.g. `rnn`, `bidirectional`, `readout`).

  Returns:
    A `Layer` whose params and carry are tuples with one entry per layer.
    ``length`` applies to every layer.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(8)), jaxrnn.readout(2))
    >>> params = net.init_params(jax.random.key(0), 3)
    >>> ys, carries = net.apply(params, jnp.ones((7, 3)), length=5)
    >>> ys.shape, len(carries)
    ((7, 2), 2)
  """
  if not layers:
    raise ValueError("layers: stack expects at least one Layer, got none")
  layers = tuple(_check_layer(layer, f"layers[{i}]") for i, layer in enumerate(layers))
  n = len(layers)

  def init_params(key, input_size, dtype=None):
    size = checks.check_positive_int(input_size, "input_size")
    params = []
    for layer, k in zip(layers, jax.random.split(key, n)):
      p = layer.init_params(k, size, dtype)
      params.append(p)
      size = _output_size(layer, p, size, dtype)
    return tuple(params)

  def init_carry(dtype=None):
    return tuple(layer.init_carry(dtype) for layer in layers)

  def check_entries(value, name):
    if not isinstance(value, (tuple, list)) or len(value) != n:
      got = f"{len(value)} entries" if isinstance(value, (tuple, list)) else type(value).__name__
      raise TypeError(
          f"{name}: stack of {n} layers expects a tuple of {n} entries, got {got}"
      )

  def apply(params, xs, *, length=None, carry=None):
    check_entries(params, "params")
    if carry is None:
      carry = (None,) * n
    check_entries(carry, "carry")
    carries = []
    for layer, p, c in zip(layers, params, carry):
      xs, c = layer.apply(p, xs, length=length, carry=c)
      carries.append(c)
    return xs, tuple(carries)

  return Layer(init_params=init_params, apply=apply, init_carry=init_carry,
               config=(("kind", "stack"), ("layers", layers)))


# ---------------------------------------------------------------------------
# readout


class ReadoutParams(NamedTuple):
  """Parameters of `readout`: ``y_t = h_t W_hy + b_y``."""

  W_hy: Array  # (H, output_size): the seeds' W_hy, stored transposed
  b_y: Array  # (output_size,)


def readout(
    output_size: int,
    *,
    kernel_init=jax.nn.initializers.lecun_normal(),
    bias_init=jax.nn.initializers.zeros,
) -> Layer:
  """The per-step output map ``y_t = W_hy h_t + b_y`` (stateless).

  ``W_hy`` is stored as ``(H, output_size)`` so that ``y_t = h_t @ W_hy``,
  the same orientation as the cells' ``W_x``.

  Args:
    output_size: the size of ``y_t``.
    kernel_init, bias_init: initialisers for ``W_hy`` and ``b_y``.

  Returns:
    A `Layer` with params `ReadoutParams` and an empty carry ``()``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> head = jaxrnn.readout(2)
    >>> params = head.init_params(jax.random.key(0), 4)
    >>> ys, _ = head.apply(params, jnp.ones((3, 4)), length=2)
    >>> ys.shape, bool(jnp.all(ys[2] == 0))
    ((3, 2), True)
  """
  output_size = checks.check_positive_int(output_size, "output_size")

  def init_params(key, input_size, dtype=None):
    input_size = checks.check_positive_int(input_size, "input_size")
    dtype = checks.default_float() if dtype is None else jnp.dtype(dtype)
    k_w, k_b = jax.random.split(key)
    return ReadoutParams(
        inits.draw(kernel_init, k_w, (input_size, output_size), dtype),
        inits.draw(bias_init, k_b, (output_size,), dtype))

  def init_carry(dtype=None):
    del dtype
    return ()

  def apply(params, xs, *, length=None, carry=None):
    owner = f"readout(output_size={output_size})"
    checks.check_params(params, ReadoutParams, owner)
    if params.W_hy.ndim != 2 or params.W_hy.shape[1] != output_size:
      raise ValueError(
          f"params.W_hy: {owner} expects shape (input_size, {output_size}), "
          f"got {tuple(params.W_hy.shape)}")
    checks.check_array_shape(params.b_y, (output_size,), "params.b_y", owner)
    checks.check_sequence(xs, params.W_hy.shape[0], "readout.apply")
    length = checks.check_length(length, xs.shape[0])
    if carry is not None and not (isinstance(carry, tuple) and not carry):
      raise TypeError(f"carry: {owner} is stateless and expects () or None")
    # b_y[None] keeps the broadcast explicit (no implicit rank promotion).
    ys = checks.matmul(xs, params.W_hy) + params.b_y[None, :]
    return _mask_steps(ys, length), ()

  return Layer(init_params=init_params, apply=apply, init_carry=init_carry,
               config=(("kind", "readout"), ("output_size", output_size)))
