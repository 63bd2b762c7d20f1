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

import inspect
import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.engine import scan as scan_lib
from jaxrnn._src.base import Cell, Layer

Array = jax.Array
tree_map = jax.tree_util.tree_map


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


class LearnedCarryParams(NamedTuple):
  """Params of an `rnn` layer with ``learned_carry=True``."""

  cell: Any  # the cell's params
  initial_carry: Any  # one example's carry, trained with the rest


_METHODS = ("auto", "sequential", "parallel")


def _hidden(carry: Any) -> Any:
  """The hidden state inside a carry: ``carry.h`` or the carry itself."""
  return carry.h if hasattr(carry, "h") else carry


def _accepts_recurrent_mask(cell: Cell) -> bool:
  if cell.recurrence is None:
    return False
  try:
    return "recurrent_mask" in inspect.signature(cell.recurrence).parameters
  except (TypeError, ValueError):
    return False


def _check_zoneout(zoneout: Any, reference_carry: Any) -> Any:
  """A rate per carry leaf (a float, or a pytree structured like the carry)."""
  if isinstance(zoneout, numbers.Real) and not isinstance(zoneout, bool):
    rate = checks.check_rate(zoneout, "zoneout")
    return tree_map(lambda _: rate, reference_carry)
  try:
    rates = jax.tree_util.tree_map(lambda r, _: r, zoneout, reference_carry)
  except ValueError:
    raise TypeError(
        "zoneout: expected a rate in [0, 1) or rates structured like the "
        f"cell's carry {jax.tree_util.tree_structure(reference_carry)}, got "
        f"{zoneout!r}") from None
  return tree_map(lambda r: checks.check_rate(r, "zoneout"), rates)


def _check_key(key: Any) -> Any:
  if key is None:
    return None
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if np.shape(key) != ():
      raise ValueError(
          f"key: expected ONE PRNG key (shape ()), got shape {np.shape(key)}; "
          "for a minibatch pass jax.random.split(key, B) through jax.vmap")
    return key
  if dtype is not None and dtype == jnp.uint32 and np.shape(key) == (2,):
    return key
  raise TypeError(
      "key: expected a PRNG key from jax.random.key (or a raw uint32 key of "
      f"shape (2,)), got {checks.describe(key)}")


def check_reset(reset: Any, num_steps: int) -> Optional[Array]:
  """Validates a per-step reset mask ``(T,)`` of bools."""
  if reset is None:
    return None
  shape = np.shape(reset)
  if shape != (num_steps,):
    raise ValueError(
        f"reset: expected shape (T,) = ({num_steps},) (one flag per step of "
        f"ONE sequence; vmap it with xs), got shape {tuple(shape)}")
  dtype = jnp.result_type(reset)
  if dtype != jnp.bool_:
    raise TypeError(f"reset: expected a bool array, got dtype {dtype}")
  return jnp.asarray(reset)


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    method: str = "auto",
    unroll: Optional[int] = None,
    remat: Union[None, bool, int] = None,
    fused_vjp: Optional[bool] = None,
    recurrent_dropout: float = 0.0,
    zoneout: Any = 0.0,
    learned_carry: bool = False,
) -> Layer:
  r"""Unrolls ``cell`` over a sequence with ``jax.lax.scan``.

  For the built-in cells the input projection ``xs @ W_x + b`` does not
  depend on the recurrence, so it is never inside the step's dependency
  chain; each scanned step does ``h_{t-1} @ W_h`` and elementwise work.

  Regularisers are off unless ``apply`` gets a ``key``; without one each
  is replaced by its expectation, so evaluation is deterministic:

  * ``recurrent_dropout`` (variational, Gal & Ghahramani 2016): one mask
    per sequence on the recurrent input, ``h_{t-1} -> h_{t-1} ⊙ m / (1-p)``
    wherever it enters a recurrent product (not in a GRU's
    ``z_t ⊙ h_{t-1}``). Without a key it is the identity.
  * ``zoneout`` (Krueger et al. 2017): each unit of the carry keeps its
    previous value with probability ``p``, drawn per step,
    ``c_t = d_t ⊙ c_{t-1} + (1 - d_t) ⊙ c̃_t``, and the output is the
    hidden state after zoneout. Without a key it is the expectation
    ``c_t = p c_{t-1} + (1 - p) c̃_t``, as the paper uses at test time.

  Args:
    cell: a `Cell`.
    reverse: run from the last valid step to the first (outputs stay aligned
      with the inputs; with ``length``, the scan covers only the valid
      prefix).
    method: ``"sequential"`` (``jax.lax.scan``), ``"parallel"``
      (``jax.lax.associative_scan``, O(log T) depth; only for cells whose
      recurrence is linear in the state: `min_gru`, `min_lstm`, `lru`) or
      ``"auto"`` (parallel for those cells when T is at least the
      crossover measured for the backend, else sequential). Both methods
      give the same numbers.
    unroll: steps per loop iteration of the scan; ``None`` picks a value
      measured to suit the backend and the path taken (per cell kind on the
      batched fused path).
    remat: memory-bounded backpropagation for long sequences. ``None`` or
      ``False`` stores every step's activations (O(T) memory); ``True``
      checkpoints chunks of about ``sqrt(T)`` steps (O(sqrt(T)) memory for
      about one extra forward pass); an int sets the chunk length.
    fused_vjp: use the fused backward pass: the backward scan carries only
      the recurrent data gradient and emits the pre-activation gradients of
      every step; the weight gradients are then single large products after
      the scan. ``None`` uses it where the cell supports it (the built-in
      ``elman``, ``lstm`` and ``gru`` without ``proj_size``, peepholes,
      layer normalisation, ``reset_after=False`` or a callable activation)
      and params, inputs and carry share one dtype; ``False`` uses plain
      autodiff of the scan. Both give the same gradients. Under
      ``jax.vmap`` the fused path holds the batch feature-major (``(H, B)``
      carries: the products run as ``(G*H, H) x (H, B)``), whichever of
      ``grad(vmap(...))``, ``vmap(grad(...))`` or ``grad`` of one example is
      taken. It gives first-order reverse-mode derivatives: forward mode
      (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) raises JAX's
      ``TypeError`` about a ``custom_vjp`` function, and a gradient of a
      gradient raises a ``TypeError`` naming ``fused_vjp``. ``False``
      supports forward mode and every order. (With ``reset`` the fused
      path is a custom JVP and supports forward mode too.)
    recurrent_dropout: the rate ``p`` in ``[0, 1)`` of variational dropout
      on the recurrent input (cells with a recurrent product: the built-in
      cells except the parallel ones).
    zoneout: the rate in ``[0, 1)``, or rates structured like the carry
      (e.g. ``jaxrnn.LSTMState(h=0.05, c=0.5)``, the paper's LSTM setting).
      Needs a cell whose output is its hidden state (all built-in cells).
    learned_carry: make the initial carry a trained parameter. Params become
      `LearnedCarryParams` ``(cell, initial_carry)``; ``apply`` starts from
      it when ``carry`` is None, and segment resets restart from it.

  Returns:
    A `Layer` whose params are the cell's params (or `LearnedCarryParams`)
    and whose carry is the cell's carry. ``apply(params, xs, *, length=None,
    carry=None, reset=None, key=None) -> (ys, carry)`` maps ``xs: (T,
    input_size)`` to ``ys: (T, output_size)``. ``reset: (T,)`` bool marks
    the first step of each segment when several sequences are packed into
    one row: the carry restarts there (a reversed scan restarts at each
    segment's last step), so each segment's outputs equal those of the
    segment run alone; ``reset[0]`` discards a ``carry`` passed in (a new
    sequence starting at a truncated-BPTT chunk boundary). ``key``: a PRNG key for this sequence (for a
    minibatch, ``jax.random.split(key, B)`` mapped by ``jax.vmap``).

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.gru(4))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> ys, h = layer.apply(params, jnp.ones((6, 3)), length=4)
    >>> ys.shape, bool(jnp.all(ys[4:] == 0)), bool(jnp.all(h == ys[3]))
    ((6, 4), True, True)
    >>> packed = jnp.array([True, False, False, True, False, False])
    >>> ys2, _ = layer.apply(params, jnp.ones((6, 3)), reset=packed)
    >>> bool(jnp.allclose(ys2[3:], ys2[:3]))
    True
  """
  cell = _check_cell(cell, "cell")
  reverse = checks.check_bool(reverse, "reverse")
  if unroll is not None:
    unroll = checks.check_positive_int(unroll, "unroll")
  if remat is not None and not isinstance(remat, bool):
    remat = checks.check_positive_int(remat, "remat")
  if fused_vjp and cell.fused is None:
    raise ValueError(
        "fused_vjp: this cell has no fused backward pass (user cells and "
        "built-in cells with proj_size, peephole, layer_norm, "
        "reset_after=False or a callable activation use autodiff); pass "
        "fused_vjp=None or False"
    )
  if method not in _METHODS:
    raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
  if method == "parallel" and cell.parallel is None:
    raise ValueError(
        "method: 'parallel' needs a cell whose recurrence is linear in the "
        "state (jaxrnn.min_gru, min_lstm, lru); this cell runs sequentially")
  recurrent_dropout = checks.check_rate(recurrent_dropout, "recurrent_dropout")
  if recurrent_dropout and not _accepts_recurrent_mask(cell):
    raise ValueError(
        "recurrent_dropout: this cell has no recurrent product to drop "
        "inputs of (user cells and the parallel cells min_gru, min_lstm, lru)"
    )
  # Shapes only: building a layer must not start a backend.
  carry_shape = jax.eval_shape(cell.init_carry)
  zone_rates = _check_zoneout(zoneout, carry_shape)
  use_zoneout = any(r > 0 for r in jax.tree_util.tree_leaves(zone_rates))
  if use_zoneout and tuple(getattr(_hidden(carry_shape), "shape", ())) != (cell.output_size,):
    raise ValueError(
        "zoneout: needs a cell whose output is its hidden state (carry.h or "
        "the carry itself), as the built-in cells except lru")
  learned_carry = checks.check_bool(learned_carry, "learned_carry")
  use_fused = cell.fused is not None and fused_vjp is not False

  def init_params(key, input_size, dtype=None):
    params = cell.init_params(key, input_size, dtype)
    if not learned_carry:
      return params
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return LearnedCarryParams(params, cell.init_carry(dtype))

  def zoneout_mix(zone_t, c_tm1, c_t):
    if zone_t is None:  # no key: the expectation
      mixed = tree_map(lambda r, old, new: r * old + (1 - r) * new if r else new,
                       zone_rates, c_tm1, c_t)
    else:
      mixed = tree_map(lambda d, old, new: jnp.where(d, old, new), zone_t, c_tm1, c_t)
    return mixed, _hidden(mixed)

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    initial = None
    if learned_carry:
      checks.check_params(params, LearnedCarryParams, "rnn(..., learned_carry=True)")
      checks.check_carry(params.initial_carry, cell.init_carry(), "params.initial_carry")
      params, initial = params.cell, params.initial_carry
    checks.check_sequence(xs, _input_size_of(params), "rnn.apply", cell.input_ndim)
    num_steps = xs.shape[0]
    length = checks.check_length(length, num_steps)
    reset = check_reset(reset, num_steps)
    key = _check_key(key)
    acc = checks.accumulation_dtype(xs.dtype, *[
        leaf.dtype for leaf in jax.tree_util.tree_leaves(params)])
    if carry is not None:
      checks.check_carry(carry, cell.init_carry(), "rnn.apply")
    elif initial is not None:
      carry = tree_map(lambda c: c.astype(acc), initial)
    else:
      carry = cell.init_carry(dtype=acc)
    if initial is not None:
      initial = tree_map(lambda c, ref: c.astype(ref.dtype), initial, carry)
    elif reset is not None:
      initial = tree_map(jnp.zeros_like, carry)
    if length is not None:
      # Zero the padding so that junk there (even NaN) cannot reach a
      # gradient through the input projection.
      xs = _mask_steps(xs, length)
    valid = None if length is None else jnp.arange(num_steps) < length
    steps = scan_lib.Steps(
        valid, scan_lib.segment_resets(reset, valid, num_steps, reverse))
    h_mask, zone = None, None
    if key is not None:
      k_drop, k_zone = jax.random.split(key)
      if recurrent_dropout:
        h = _hidden(carry)
        keep = jax.random.bernoulli(k_drop, 1 - recurrent_dropout, h.shape)
        h_mask = keep.astype(h.dtype) / jnp.asarray(1 - recurrent_dropout, h.dtype)
      if use_zoneout:
        leaves, treedef = jax.tree_util.tree_flatten(carry)
        rates = jax.tree_util.tree_leaves(zone_rates)
        zone = treedef.unflatten([
            jax.random.bernoulli(k, r, (num_steps,) + leaf.shape)
            for k, r, leaf in zip(jax.random.split(k_zone, len(leaves)), rates, leaves)])
    steps = steps._replace(zone=zone)
    parallel = cell.parallel is not None and (
        method == "parallel" or (method == "auto" and cell.parallel.prefer(num_steps)))
    if parallel and use_zoneout:
      raise ValueError(
          "zoneout: the parallel method evaluates a linear recurrence without "
          "per-step carry mixing; use method='sequential' with zoneout")
    plan = scan_lib.Plan(reverse, unroll, remat, use_fused, parallel)
    return scan_lib.unroll(
        cell, params, carry, xs, steps, plan, initial=initial, h_mask=h_mask,
        zoneout=zoneout_mix if use_zoneout else None)

  return Layer(
      init_params=init_params, apply=apply, init_carry=cell.init_carry,
      config=(("kind", "rnn"), ("cell", cell), ("reverse", reverse),
              ("method", method), ("unroll", unroll), ("remat", remat),
              ("fused_vjp", fused_vjp), ("recurrent_dropout", recurrent_dropout),
              ("zoneout", zoneout), ("learned_carry", learned_carry)))


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
    **rnn_options: options of `rnn` (``method``, ``unroll``, ``remat``,
      ``fused_vjp``, ``recurrent_dropout``, ``zoneout``,
      ``learned_carry``), passed to both directions.

  Returns:
    A `Layer` with params `BidirectionalParams` and carry
    `BidirectionalCarry`. ``apply`` takes the keywords of `rnn`'s apply:
    with ``reset`` each direction restarts at segment boundaries (the
    backward scan at each segment's last step), and ``key`` is split
    between the directions.

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

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    checks.check_params(params, BidirectionalParams, "bidirectional")
    if carry is None:
      carry = BidirectionalCarry(None, None)
    elif not isinstance(carry, BidirectionalCarry):
      raise TypeError(
          "carry: bidirectional expects a BidirectionalCarry(forward, "
          f"backward) or None, got {type(carry).__name__}")
    k_f = k_b = None
    if _check_key(key) is not None:
      k_f, k_b = jax.random.split(key)
    ys_f, c_f = fwd.apply(params.forward, xs, length=length, carry=carry.forward,
                          reset=reset, key=k_f)
    ys_b, c_b = bwd.apply(params.backward, xs, length=length, carry=carry.backward,
                          reset=reset, key=k_b)
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
  config = dict(layer.config)
  cell = config.get("cell")
  if config.get("kind") == "rnn" and cell.output_size is not None:
    return cell.output_size  # also for cells over feature maps (conv_lstm)
  dtype = checks.default_float() if dtype is None else dtype
  xs = jax.ShapeDtypeStruct((1, input_size), dtype)
  ys, _ = jax.eval_shape(lambda p, x: layer.apply(p, x), params, xs)
  return ys.shape[-1]


def stack(*layers: Layer, dropout: float = 0.0) -> Layer:
  """Stacks layers: layer l's outputs are layer l+1's inputs at every step.

  .. math::
    h^{[l]}_t = φ(W^{[l]}_x h^{[l-1]}_t + W^{[l]}_h h^{[l]}_{t-1} + b^{[l]}),
    \\qquad h^{[0]}_t = x_t

  Args:
    *layers: one or more `Layer`s (e.g. `rnn`, `bidirectional`, `readout`).
    dropout: the rate ``p`` in ``[0, 1)`` of dropout on the outputs of
      every layer but the last (PyTorch's ``dropout`` of ``nn.LSTM``):
      inverted dropout, ``y -> y ⊙ m / (1 - p)`` with a fresh mask for
      every step and unit. Only when ``apply`` gets a ``key``; without one
      it is the identity.

  Returns:
    A `Layer` whose params and carry are tuples with one entry per layer.
    ``length``, ``reset`` and ``key`` (split between the layers and the
    dropout masks) apply to every layer; ``reset`` and ``key`` are passed
    on only when given, so user layers without them still stack.

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
  dropout = checks.check_rate(dropout, "dropout")
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

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    check_entries(params, "params")
    if carry is None:
      carry = (None,) * n
    check_entries(carry, "carry")
    keys = [None] * (2 * n)
    if _check_key(key) is not None:
      keys = list(jax.random.split(key, 2 * n))
    carries = []
    for k, (layer, p, c) in enumerate(zip(layers, params, carry)):
      options = {} if reset is None else {"reset": reset}
      if keys[k] is not None:
        options["key"] = keys[k]
      xs, c = layer.apply(p, xs, length=length, carry=c, **options)
      carries.append(c)
      if dropout and k < n - 1 and keys[n + k] is not None:
        keep = jax.random.bernoulli(keys[n + k], 1 - dropout, xs.shape)
        xs = jnp.where(keep, xs / jnp.asarray(1 - dropout, xs.dtype),
                       jnp.zeros((), xs.dtype))
    return xs, tuple(carries)

  return Layer(init_params=init_params, apply=apply, init_carry=init_carry,
               config=(("kind", "stack"), ("layers", layers), ("dropout", dropout)))


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

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    del reset, key  # stateless and deterministic
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
