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

import functools
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import engine
from jaxrnn._src.base import Cell, Layer
from jaxrnn._src.engine import hooks as hooks_lib
from jaxrnn._src.engine import settings as settings_lib
from jaxrnn._src.engine.steps import Steps, Zoneout, segment_resets
from jaxrnn._src.layers import common

tree_map, tree_leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves

METHODS = ("auto", "sequential", "parallel", "reference")


class LearnedCarryParams(NamedTuple):
  """Params of an `rnn` layer with ``learned_carry=True``."""

  cell: Any  # the cell's params
  initial_carry: Any  # one example's carry, trained with the rest


def _zoneout(cell: Cell, zoneout: Any, method: str) -> Optional[Zoneout]:
  """The layer's zoneout (None when every rate is 0), for a cell whose
  output is the hidden part of its carry (`hooks.hidden_of`)."""
  # Shapes only: building a layer must not start a backend.
  carry_shape = jax.eval_shape(cell.init_carry)
  rates = common.check_rates(zoneout, carry_shape)
  if not any(r > 0 for r in tree_leaves(rates)):
    return None
  hidden = hooks_lib.hidden_of(cell, carry_shape)
  if not (isinstance(hidden, jax.ShapeDtypeStruct) and hidden.shape == (cell.output_size,)):
    raise ValueError(
        "zoneout: expected a cell whose output is its hidden state (a built-in cell with "
        "vector inputs but lru, or a user cell whose carry is its output), got output_size="
        f"{cell.output_size} and a hidden state of shape {tree_map(lambda s: s.shape, hidden)}")
  if method == "parallel":
    raise ValueError(
        "zoneout: the parallel method evaluates a linear recurrence without "
        "per-step carry mixing; use method='sequential' with zoneout")
  return Zoneout(rates, functools.partial(hooks_lib.hidden_of, cell))


def _split_learned_carry(cell: Cell, params: Any) -> tuple[Any, Any]:
  """`LearnedCarryParams` checked and split into the cell's params and the
  initial carry."""
  checks.check_params(params, LearnedCarryParams, "rnn(..., learned_carry=True)")
  checks.check_carry(params.initial_carry, cell.init_carry(), "params.initial_carry")
  return params.cell, params.initial_carry


def _check_params_and_xs(cell: Cell, hooks, params: Any, xs: Any) -> None:
  """Checks params and ``xs``: one sequence of the size the params record,
  then, for a built-in cell, every step as the cell reads it."""
  checks.check_sequence(xs, hooks_lib.input_size_of(cell, params), "rnn.apply", cell.input_ndim)
  if hooks is not None:
    # Every step of xs checked here, once: a path that projects inside
    # the loop sees one step at a time.
    hooks.check_inputs(params, xs, None)


def _start_carries(cell: Cell, params: Any, xs: Any, carry: Any, initial: Any,
                   restarts: bool) -> tuple[Any, Any]:
  """The carry the scan starts from (``carry``, else ``initial``, else the
  cell's zeros, in the accumulation dtype), and the one a segment reset
  restarts from (``initial``, else zeros when ``restarts``, else None)."""
  acc = checks.accumulation_dtype(xs.dtype, *[leaf.dtype for leaf in tree_leaves(params)])
  if carry is not None:
    checks.check_carry(carry, cell.init_carry(), "rnn.apply")
  else:
    carry = (cell.init_carry(dtype=acc) if initial is None
             else tree_map(lambda c: c.astype(acc), initial))
  if initial is None:
    return carry, tree_map(jnp.zeros_like, carry) if restarts else None
  return carry, tree_map(lambda c, ref: c.astype(ref.dtype), initial, carry)


def _regulariser_masks(cell: Cell, key: Any, carry: Any, num_steps: int,
                       recurrent_dropout: float, zoneout: Optional[Zoneout]) -> tuple[Any, Any]:
  """``(h_mask, zone)``: the recurrent dropout mask of the sequence, scaled
  by ``1 / (1 - p)``, and zoneout's per-step keep masks, structured like the
  carry; each None when off or without a key."""
  if key is None:
    return None, None
  k_drop, k_zone = jax.random.split(key)
  h_mask = zone = None
  if recurrent_dropout:
    h = hooks_lib.hidden_of(cell, carry)
    keep = jax.random.bernoulli(k_drop, 1 - recurrent_dropout, h.shape)
    h_mask = keep.astype(h.dtype) / jnp.asarray(1 - recurrent_dropout, h.dtype)
  if zoneout is not None:
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    keys = jax.tree_util.tree_unflatten(treedef, list(jax.random.split(k_zone, len(leaves))))
    zone = tree_map(lambda k, r, c: jax.random.bernoulli(k, r, (num_steps,) + c.shape),
                    keys, zoneout.rates, carry)
  return h_mask, zone


def _path(hooks, method: str, num_steps: int, zoneout: bool) -> str:
  """The engine path for ``method`` (see `engine.Plan`)."""
  # Neither linear loop mixes carries per step: zoneout takes the reference.
  if method == "reference" or hooks is None or (hooks.linear is not None and zoneout):
    return "reference"
  settings = settings_lib.current()

  def crossed(name):  # "auto" past the cell's crossover
    threshold = settings_lib.parallel_min_steps(settings, name)
    if method != "auto" or threshold is None:
      return False
    # A symbolic T (jax.export) is at least 1, and otherwise unknown.
    return num_steps >= threshold if isinstance(num_steps, int) else threshold == 1

  if hooks.chunkwise is not None:
    return "chunkwise" if method == "parallel" or crossed(hooks.chunkwise.name) else "reference"
  if hooks.linear is None:
    return "fused" if hooks.product is not None else "reference"
  if method == "parallel":
    return "parallel"
  if crossed(hooks.linear.name):
    return "parallel" if settings.parallel_derivatives else "parallel_forward"
  return "linear"


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    method: str = "auto",
    unroll: Optional[int] = None,
    remat: Union[None, bool, int] = None,
    recurrent_dropout: float = 0.0,
    zoneout: Any = 0.0,
    learned_carry: bool = False,
    return_carries: bool = False,
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
        recurrence is linear in the state (`min_gru`, `min_lstm`, `lru`,
        `rg_lru`, `mamba`, `linear_cell`) and for `mlstm` ``"parallel"``
        when T is at least the cell's crossover measured for the backend
        (`engine_settings`' ``parallel_min_steps``, per cell kind; on the
        CPU `rg_lru` from 256 steps, `mlstm` always). The associative scan
        then runs the forward pass only, differentiated as the sequential
        scan, where ``parallel_derivatives`` is False (the CPU: its
        backward pass measured slower). No crossover has been measured off
        the CPU: there ``"auto"`` is sequential until one is.
      * ``"sequential"``: ``jax.lax.scan`` with the cell's fastest step.
        For the built-in cells with one recurrent product (`elman`,
        `lstm`, `gru` with ``reset_after=True``, `conv_lstm`, `slstm`) this is the
        fused path: a custom JVP whose transpose is a fused backward pass
        (the backward scan carries only the recurrent data gradient; the
        weight gradients are single large products after it). The linear
        cells run a multiply-add scan; other cells the reference scan.
      * ``"parallel"``: ``jax.lax.associative_scan``, O(log T) depth, for
        the linear cells; for `mlstm` its chunkwise-parallel form.
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
    recurrent_dropout: the rate ``p`` in ``[0, 1)`` of variational dropout
      on the recurrent input (the built-in cells with a recurrent product;
      not the linear cells or user cells).
    zoneout: the rate in ``[0, 1)``, or rates structured like the carry
      (e.g. ``jaxrnn.LSTMState(h=0.05, c=0.5)``, the paper's LSTM setting).
      Needs a cell whose output is its hidden state: the built-in cells with
      vector inputs but `lru`, or a user cell whose carry is its output (an
      array of shape ``(output_size,)``). The linear cells run it on the
      reference scan.
    learned_carry: make the initial carry a trained parameter. Params become
      `LearnedCarryParams` ``(cell, initial_carry)``; ``apply`` starts from
      it when ``carry`` is None, and segment resets restart from it.
    return_carries: also return the carry after every step (an LSTM's
      ``c_t`` as well as ``h_t``: stored states for R2D2-style replay,
      restarts from any step, probes). ``apply`` then returns ``((ys,
      carries), carry)``, ``carries`` structured like the carry with a
      leading T axis and zero at padded steps; a reversed layer's
      ``carries[t]`` is the carry after step t in its own order. Every
      method computes them (the fused path included), with every option.
      Such a layer's outputs are a pair, so it is the last of a `stack`
      or used alone.

  Returns:
    A `Layer` whose params are the cell's params (or `LearnedCarryParams`)
    and whose carry is the cell's carry. ``apply(params, xs, *, length=None,
    carry=None, reset=None, key=None) -> (ys, carry)`` maps ``xs: (T,
    input_size)`` to ``ys: (T, output_size)``. ``reset: (T,)`` bool marks
    the first step of each segment when several sequences are packed into
    one row: the carry restarts there (a reversed scan restarts at each
    segment's last step), so each segment's outputs equal those of the
    segment run alone; ``reset[0]`` discards a ``carry`` passed in (a new
    sequence starting at a truncated-BPTT chunk boundary). ``key``: a PRNG
    key for this sequence (for a minibatch, ``jax.random.split(key, B)``
    mapped by ``jax.vmap``).

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.gru(4))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> ys, h = layer.apply(params, jnp.ones((6, 3)), length=4)
    >>> ys.shape, bool(jnp.all(ys[4:] == 0)), bool(jnp.allclose(h, ys[3]))
    ((6, 4), True, True)
    >>> packed = jnp.array([True, False, False, True, False, False])
    >>> ys2, _ = layer.apply(params, jnp.ones((6, 3)), reset=packed)
    >>> bool(jnp.allclose(ys2[3:], ys2[:3]))
    True
  """
  cell = common.check_cell(cell, "cell")
  hooks = hooks_lib.hooks_of(cell)
  reverse = checks.check_bool(reverse, "reverse")
  unroll = None if unroll is None else checks.check_positive_int(unroll, "unroll")
  if remat is not None and not isinstance(remat, bool):
    remat = checks.check_positive_int(remat, "remat")
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
  if method == "parallel" and (hooks is None or (hooks.linear is None
                                                 and hooks.chunkwise is None)):
    raise ValueError(
        "method: 'parallel' needs a cell with a parallel form (the cells linear in "
        "the state: min_gru, min_lstm, lru, rg_lru, mamba, linear_cell; and mlstm); "
        "this cell runs sequentially")
  recurrent_dropout = checks.check_rate(recurrent_dropout, "recurrent_dropout")
  if recurrent_dropout and (hooks is None or hooks.linear is not None
                            or hooks.chunkwise is not None):
    raise ValueError(
        "recurrent_dropout: this cell has no recurrent product to drop "
        "inputs of (user cells, the cells linear in the state, and mlstm)")
  zone_mixer = _zoneout(cell, zoneout, method)
  learned_carry = checks.check_bool(learned_carry, "learned_carry")
  return_carries = checks.check_bool(return_carries, "return_carries")
  unroll_pair = None if unroll is None else (unroll, unroll)

  def init_params(key, input_size, dtype=None):
    params = cell.init_params(key, input_size, dtype)
    if learned_carry:
      params = LearnedCarryParams(params, cell.init_carry(tree_leaves(params)[0].dtype))
    return params

  def apply(params, xs, *, length=None, carry=None, reset=None, key=None):
    params, initial = (_split_learned_carry(cell, params) if learned_carry
                       else (params, None))
    _check_params_and_xs(cell, hooks, params, xs)
    num_steps = xs.shape[0]
    length = checks.check_length(length, num_steps)
    reset = common.check_reset(reset, num_steps)
    key = common.check_key(key)
    carry, initial = _start_carries(cell, params, xs, carry, initial, reset is not None)
    # Zero the padding so that junk there (even NaN) cannot reach a
    # gradient through the input projection.
    xs = common.mask_steps(xs, length)
    valid = None if length is None else jnp.arange(num_steps) < length
    h_mask, zone = _regulariser_masks(cell, key, carry, num_steps, recurrent_dropout,
                                      zone_mixer)
    steps = Steps(valid, segment_resets(reset, valid, reverse), zone)
    plan = engine.Plan(_path(hooks, method, num_steps, zone_mixer is not None), reverse,
                       unroll_pair, remat, return_carries)
    return engine.run(cell, hooks, plan, params, carry, xs, steps,
                      initial=initial, h_mask=h_mask, zoneout=zone_mixer)

  return Layer(
      init_params=init_params, apply=apply, init_carry=cell.init_carry,
      config=(("kind", "rnn"), ("cell", cell), ("reverse", reverse),
              ("method", method), ("unroll", unroll), ("remat", remat),
              ("recurrent_dropout", recurrent_dropout),
              ("zoneout", zoneout), ("learned_carry", learned_carry),
              ("return_carries", return_carries)))
