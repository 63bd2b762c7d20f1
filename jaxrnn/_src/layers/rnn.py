"""`rnn`: a cell unrolled over ONE sequence by the engine.

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

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import engine
from jaxrnn._src.base import Cell, Layer
from jaxrnn._src.engine import hooks as hooks_lib
from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine.steps import Steps, Zoneout, segment_resets
from jaxrnn._src.layers import common

tree_map = jax.tree_util.tree_map

METHODS = ("auto", "sequential", "parallel", "reference")


class LearnedCarryParams(NamedTuple):
  """Params of an `rnn` layer with ``learned_carry=True``."""

  cell: Any  # the cell's params
  initial_carry: Any  # one example's carry, trained with the rest


def _input_size_of(params: Any) -> Optional[int]:
  """The input size recorded in a built-in cell's params, if any."""
  for name in ("W_x", "B_re"):
    W = getattr(params, name, None)
    if W is not None and np.ndim(W) == 2:
      return np.shape(W)[0]
  return None


def _hidden(carry: Any) -> Any:
  """The hidden state inside a carry: ``carry.h`` or the carry itself."""
  return carry.h if hasattr(carry, "h") else carry


def _path(hooks, method: str, num_steps: int) -> str:
  """The engine path for ``method`` (see `engine.Plan`)."""
  if method == "reference" or hooks is None:
    return "reference"
  if hooks.linear is not None:
    if method == "auto":
      threshold = settings_lib.current().parallel_min_steps
      return "parallel" if threshold is not None and num_steps >= threshold else "linear"
    return "parallel" if method == "parallel" else "linear"
  return "fused" if hooks.product is not None else "reference"


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

  The layer's meaning is the reference scan (`jaxrnn._src.engine.reference`
  states it in a few lines of Python); the faster methods compute the same
  numbers. For the built-in cells the input projection ``xs @ W_x + b``
  does not depend on the recurrence, so it is never inside the step's
  dependency chain; each scanned step does ``h_{t-1} @ W_h`` and
  elementwise work.

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
    method: how the time loop runs; every method gives the same numbers and
      supports every option and every JAX transformation:

      * ``"auto"`` (default): ``"sequential"``, or for the cells whose
        recurrence is linear in the state (`min_gru`, `min_lstm`, `lru`)
        ``"parallel"`` when T is at least the crossover measured for the
        backend (`engine_settings`' ``parallel_min_steps``).
      * ``"sequential"``: ``jax.lax.scan`` with the cell's fastest step.
        For the built-in cells with one recurrent product (`elman`,
        `lstm`, `gru` with ``reset_after=True``, `conv_lstm`) this is the
        fused path: a custom JVP whose transpose is a fused backward pass
        (the backward scan carries only the recurrent data gradient; the
        weight gradients are single large products after it). The linear
        cells run a multiply-add scan; other cells the reference scan.
      * ``"parallel"``: ``jax.lax.associative_scan``, O(log T) depth; only
        for the linear cells.
      * ``"reference"``: the masked ``lax.scan`` of ``cell_apply``
        differentiated by JAX; the specification of the layer (the only
        method for user cells).
    unroll: steps per loop iteration of the scans; ``None`` takes the
      backend's default (`engine_settings`). An int applies to the forward
      and the backward scan alike.
    remat: memory-bounded backpropagation for long sequences. ``None`` or
      ``False`` stores every step's activations (O(T) memory); ``True``
      checkpoints chunks of about ``sqrt(T)`` steps (O(sqrt(T)) memory for
      about one extra forward pass); an int sets the chunk length.
    fused_vjp: ``False`` is ``method="reference"``; ``None`` and ``True``
      leave ``method`` as given (``True`` with a cell that has no fused
      path raises).
    recurrent_dropout: the rate ``p`` in ``[0, 1)`` of variational dropout
      on the recurrent input (the built-in cells with a recurrent product;
      not the linear cells or user cells).
    zoneout: the rate in ``[0, 1)``, or rates structured like the carry
      (e.g. ``jaxrnn.LSTMState(h=0.05, c=0.5)``, the paper's LSTM setting).
      Needs a cell whose output is its hidden state (all built-in cells but
      `lru`). The linear cells run it on the reference scan.
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
  cell = common.check_cell(cell, "cell")
  hooks = hooks_lib.hooks_of(cell)
  reverse = checks.check_bool(reverse, "reverse")
  if unroll is not None:
    unroll = checks.check_positive_int(unroll, "unroll")
  if remat is not None and not isinstance(remat, bool):
    remat = checks.check_positive_int(remat, "remat")
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
  if fused_vjp is not None:
    fused_vjp = checks.check_bool(fused_vjp, "fused_vjp")
    if fused_vjp and (hooks is None or hooks.product is None):
      raise ValueError(
          "fused_vjp: this cell has no fused path (user cells, mgu, "
          "gru(reset_after=False) and the linear cells); pass fused_vjp=None "
          "or False")
    if not fused_vjp:
      method = "reference"
  if method == "parallel" and (hooks is None or hooks.linear is None):
    raise ValueError(
        "method: 'parallel' needs a cell whose recurrence is linear in the "
        "state (jaxrnn.min_gru, min_lstm, lru); this cell runs sequentially")
  recurrent_dropout = checks.check_rate(recurrent_dropout, "recurrent_dropout")
  if recurrent_dropout and (hooks is None or hooks.linear is not None):
    raise ValueError(
        "recurrent_dropout: this cell has no recurrent product to drop "
        "inputs of (user cells and the linear cells min_gru, min_lstm, lru)")
  # Shapes only: building a layer must not start a backend.
  carry_shape = jax.eval_shape(cell.init_carry)
  zone_rates = common.check_rates(zoneout, carry_shape)
  use_zoneout = any(r > 0 for r in jax.tree_util.tree_leaves(zone_rates))
  if use_zoneout and tuple(getattr(_hidden(carry_shape), "shape", ())) != (cell.output_size,):
    raise ValueError(
        "zoneout: needs a cell whose output is its hidden state (carry.h or "
        "the carry itself), as the built-in cells except lru")
  if use_zoneout and method == "parallel":
    raise ValueError(
        "zoneout: the parallel method evaluates a linear recurrence without "
        "per-step carry mixing; use method='sequential' with zoneout")
  zone_mixer = Zoneout(zone_rates, _hidden) if use_zoneout else None
  learned_carry = checks.check_bool(learned_carry, "learned_carry")
  unroll_pair = None if unroll is None else (unroll, unroll)

  def init_params(key, input_size, dtype=None):
    params = cell.init_params(key, input_size, dtype)
    if not learned_carry:
      return params
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return LearnedCarryParams(params, cell.init_carry(dtype))

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    initial = None
    if learned_carry:
      checks.check_params(params, LearnedCarryParams, "rnn(..., learned_carry=True)")
      checks.check_carry(params.initial_carry, cell.init_carry(), "params.initial_carry")
      params, initial = params.cell, params.initial_carry
    checks.check_sequence(xs, _input_size_of(params), "rnn.apply", cell.input_ndim)
    if hooks is not None:
      # Every step of xs checked here, once: a path that projects inside
      # the loop sees one step at a time.
      hooks.check(params)
      hooks.check_inputs(params, xs, None)
    num_steps = xs.shape[0]
    length = checks.check_length(length, num_steps)
    reset = common.check_reset(reset, num_steps)
    key = common.check_key(key)
    acc = checks.accumulation_dtype(xs.dtype, *[
        leaf.dtype for leaf in jax.tree_util.tree_leaves(params)])
    if carry is not None:
      checks.check_carry(carry, cell.init_carry(), "rnn.apply")
    else:
      carry = (cell.init_carry(dtype=acc) if initial is None
               else tree_map(lambda c: c.astype(acc), initial))
    if initial is not None:
      initial = tree_map(lambda c, ref: c.astype(ref.dtype), initial, carry)
    elif reset is not None:
      initial = tree_map(jnp.zeros_like, carry)
    if length is not None:
      # Zero the padding so that junk there (even NaN) cannot reach a
      # gradient through the input projection.
      xs = common.mask_steps(xs, length)
    valid = None if length is None else jnp.arange(num_steps) < length
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
    steps = Steps(valid, segment_resets(reset, valid, reverse), zone)
    path = _path(hooks, method, num_steps)
    if zone_mixer is not None and path == "linear":
      path = "reference"  # the multiply-add scan has no carry mixing
    plan = engine.Plan(path, reverse, unroll_pair, remat)
    return engine.run(cell, hooks, plan, params, carry, xs, steps,
                      initial=initial, h_mask=h_mask, zoneout=zone_mixer)

  return Layer(
      init_params=init_params, apply=apply, init_carry=cell.init_carry,
      config=(("kind", "rnn"), ("cell", cell), ("reverse", reverse),
              ("method", method), ("unroll", unroll), ("remat", remat),
              ("recurrent_dropout", recurrent_dropout),
              ("zoneout", zoneout), ("learned_carry", learned_carry)))
