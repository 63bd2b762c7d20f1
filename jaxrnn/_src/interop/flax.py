"""Exact weight import from Flax linen recurrent cells, ``nn.RNN`` and ``nn.Bidirectional``.

Flax is imported lazily (only to recognise module classes).

Flax keeps one ``Dense`` per gate; they are concatenated into jaxrnn's fused
matrices in jaxrnn's gate order. The equations (flax/linen/recurrent.py)::

  SimpleCell   h' = φ(x W_i + b_i + h W_h [+ h if residual])
  LSTMCell     i, f, g, o = σ(x W_ii + h W_hi + b_hi), ... (bias on the h side)
               c' = f c + i g,  h' = o tanh(c')
  GRUCell      r = σ(x W_ir + b_ir + h W_hr),  z = σ(x W_iz + b_iz + h W_hz)
               n = tanh(x W_in + b_in + r (h W_hn + b_hn)),  h' = (1 - z) n + z h

map to::

  SimpleCell   elman: W_x = i.kernel, W_h = h.kernel (+ I if residual),
               b_x = i.bias, b_h = 0
  LSTMCell,    lstm: W_x = [ii|if|ig|io].kernel, W_h = [hi|hf|hg|ho].kernel,
  Optimized-   b_x = 0, b_h = [hi|hf|hg|ho].bias
  LSTMCell
  GRUCell      gru(reset_after=True): W_x = [ir|iz|in].kernel,
               W_h = [hr|hz|hn].kernel, b_x = [ir|iz|in].bias,
               b_h = [0 | 0 | hn.bias]

The zero biases are real parameters of the jaxrnn cell (they train).

Carries: Flax's LSTM carry is ``(c, h)``, jaxrnn's `LSTMState` is ``(h, c)``;
use `carry_from_flax` and `carry_to_flax`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._src import cells as cells_lib
from jaxrnn._src import layers as layers_lib
from jaxrnn._src.base import Cell, Layer

_CELLS = ("SimpleCell", "LSTMCell", "OptimizedLSTMCell", "GRUCell")


def _flax_class(module: Any) -> str:
  for cls in type(module).__mro__:
    if cls.__module__.startswith("flax") and cls.__name__ in _CELLS + ("RNN", "Bidirectional"):
      return cls.__name__
  raise TypeError(
      "module: from_flax expects a flax.linen SimpleCell, LSTMCell, "
      "OptimizedLSTMCell, GRUCell, RNN or Bidirectional, got "
      f"{type(module).__name__}"
  )


def _is(fn: Any, *names: str) -> bool:
  """Whether ``fn`` is one of the named jax functions (tanh, sigmoid, relu)."""
  candidates = {**cells_lib.ACTIVATION_FUNCTIONS, "sigmoid": (jax.nn.sigmoid,)}
  return any(fn is c for name in names for c in candidates[name])


def _unwrap(params: Any) -> Any:
  """Accepts ``{'params': ...}`` variables as well as the params themselves."""
  if hasattr(params, "keys") and set(params.keys()) == {"params"}:
    return params["params"]
  return params


def _get(params: Any, *path: str) -> jax.Array:
  node = params
  for key in path:
    try:
      node = node[key]
    except (KeyError, TypeError):
      raise ValueError(
          f"params: expected an entry {'/'.join(path)!r} (Flax's parameter "
          f"names), but {key!r} is missing; got keys "
          f"{sorted(node.keys()) if hasattr(node, 'keys') else type(node).__name__}"
      ) from None
  return jnp.asarray(node)


def _check_dtype(module: Any, params_leaves: list, where: str) -> None:
  dtype = getattr(module, "dtype", None)
  if dtype is None:
    return
  for leaf in params_leaves:
    if jnp.dtype(dtype) != leaf.dtype:
      raise ValueError(
          f"{where}: dtype={jnp.dtype(dtype).name} makes Flax compute in another "
          f"precision than its {leaf.dtype} params; only dtype=None (or the "
          "params' dtype) converts exactly"
      )


def _convert_cell(module: Any, params: Any, where: str) -> tuple[Cell, Any]:
  name = _flax_class(module)
  if name not in _CELLS:
    raise TypeError(f"{where}: expected a Flax cell, got {name}")
  params = _unwrap(params)
  H = int(module.features)
  if name == "SimpleCell":
    W_x, b_x = _get(params, "i", "kernel"), _get(params, "i", "bias")
    W_h = _get(params, "h", "kernel")
    _check_dtype(module, [W_x, W_h, b_x], where)
    if getattr(module, "residual", False):
      # h W_h + h == h (W_h + I): the residual connection folds into W_h.
      W_h = W_h + jnp.eye(H, dtype=W_h.dtype)
    # elman itself recognises JAX's tanh and relu.
    cell = cells_lib.elman(H, activation=module.activation_fn)
    return cell, cells_lib.ElmanParams(W_x, W_h, b_x, jnp.zeros_like(b_x))
  gate_fn, activation_fn = module.gate_fn, module.activation_fn
  if not _is(gate_fn, "sigmoid"):
    raise ValueError(
        f"{where}: gate_fn={getattr(gate_fn, '__name__', gate_fn)!r} is not "
        "supported; jaxrnn's gates use the logistic sigmoid"
    )
  if not _is(activation_fn, "tanh"):
    raise ValueError(
        f"{where}: activation_fn={getattr(activation_fn, '__name__', activation_fn)!r} "
        "is not supported; jaxrnn uses tanh"
    )
  if name in ("LSTMCell", "OptimizedLSTMCell"):
    gates = "ifgo"
    W_x = jnp.concatenate([_get(params, "i" + g, "kernel") for g in gates], axis=-1)
    W_h = jnp.concatenate([_get(params, "h" + g, "kernel") for g in gates], axis=-1)
    b_h = jnp.concatenate([_get(params, "h" + g, "bias") for g in gates], axis=-1)
    _check_dtype(module, [W_x, W_h, b_h], where)
    cell = cells_lib.lstm(H, forget_bias=0.0)
    return cell, cells_lib.LSTMParams(W_x, W_h, jnp.zeros_like(b_h), b_h)
  gates = "rzn"
  W_x = jnp.concatenate([_get(params, "i" + g, "kernel") for g in gates], axis=-1)
  W_h = jnp.concatenate([_get(params, "h" + g, "kernel") for g in gates], axis=-1)
  b_x = jnp.concatenate([_get(params, "i" + g, "bias") for g in gates], axis=-1)
  b_hn = _get(params, "hn", "bias")
  b_h = jnp.concatenate([jnp.zeros((2 * H,), b_hn.dtype), b_hn])
  _check_dtype(module, [W_x, W_h, b_x, b_h], where)
  cell = cells_lib.gru(H, reset_after=True)
  return cell, cells_lib.GRUParams(W_x, W_h, b_x, b_h)


def _concatenate_merge(merge_fn: Any) -> bool:
  from flax.linen import recurrent

  return merge_fn is getattr(recurrent, "_concatenate", None)


def from_flax(module: Any, params: Any, **rnn_options) -> tuple[Any, Any]:
  """Converts a Flax linen recurrent cell (or ``nn.RNN``/``nn.Bidirectional``).

  Args:
    module: a ``flax.linen`` ``SimpleCell``, ``LSTMCell``,
      ``OptimizedLSTMCell`` or ``GRUCell``; or an ``nn.RNN`` wrapping one
      (``reverse=True`` needs ``keep_order=True``, as jaxrnn keeps outputs
      aligned with the inputs); or an ``nn.Bidirectional`` of two such
      ``nn.RNN``.
    params: the module's parameters, as ``module.init`` returns them
      (``{'params': {...}}``) or the inner dict.
    **rnn_options: ``method``, ``unroll`` or ``remat`` for the layer
      (only with ``nn.RNN``/``nn.Bidirectional``).

  Returns:
    ``(cell, params)`` for a cell: ``jaxrnn.elman``, ``jaxrnn.lstm`` or
    ``jaxrnn.gru`` (``reset_after=True``) with their params; ``(layer,
    params)`` for ``nn.RNN`` (``jaxrnn.rnn``) and ``nn.Bidirectional``
    (``jaxrnn.bidirectional``, merge ``"concat"`` for Flax's default, else
    Flax's ``merge_fn`` itself). ``SimpleCell`` keeps its activation
    (tanh and relu by name, any other function as is); ``residual=True`` is
    folded into ``W_h`` as ``W_h + I``.

  Raises:
    TypeError: another module.
    ValueError: ``gate_fn`` other than sigmoid or ``activation_fn`` other
      than tanh (LSTM, GRU); a computation ``dtype`` different from the
      params' dtype; ``nn.RNN(reverse=True, keep_order=False)``; params
      missing an entry.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from jaxrnn.interop import from_flax, carry_from_flax
    >>> fcell = nn.LSTMCell(features=4)
    >>> x = jnp.ones((3,))
    >>> fcarry = fcell.initialize_carry(jax.random.key(0), x.shape)
    >>> variables = fcell.init(jax.random.key(1), fcarry, x)
    >>> cell, params = from_flax(fcell, variables)
    >>> (c, h), y = fcell.apply(variables, fcarry, x)
    >>> carry, y2 = cell.cell_apply(params, carry_from_flax(cell, fcarry), x)
    >>> bool(jnp.allclose(y, y2, atol=1e-6)), bool(jnp.allclose(c, carry.c, atol=1e-6))
    (True, True)
  """
  name = _flax_class(module)
  params = _unwrap(params)
  if name in _CELLS:
    if rnn_options:
      raise TypeError(
          f"rnn_options: {sorted(rnn_options)} apply to layers; a cell has none")
    return _convert_cell(module, params, "module")
  if name == "RNN":
    if module.reverse and not module.keep_order:
      raise ValueError(
          "module: nn.RNN(reverse=True, keep_order=False) returns its outputs "
          "in reverse order; jaxrnn keeps them aligned with the inputs "
          "(keep_order=True)"
      )
    cell, cell_params = _convert_cell(module.cell, _get_tree(params, "cell"), "module.cell")
    return layers_lib.rnn(cell, reverse=bool(module.reverse), **rnn_options), cell_params
  # Bidirectional: Flax runs forward_rnn forward and backward_rnn reversed
  # with keep_order=True, whatever their own reverse/keep_order say.
  parts = []
  for attr in ("forward_rnn", "backward_rnn"):
    sub = getattr(module, attr)
    if _flax_class(sub) != "RNN":
      raise TypeError(f"module.{attr}: expected an nn.RNN, got {type(sub).__name__}")
    sub_params = _get_tree(params, attr)
    parts.append(_convert_cell(sub.cell, _get_tree(sub_params, "cell"), f"module.{attr}.cell"))
  merge = "concat" if _concatenate_merge(module.merge_fn) else module.merge_fn
  (f_cell, f_params), (b_cell, b_params) = parts
  layer = layers_lib.bidirectional(f_cell, b_cell, merge=merge, **rnn_options)
  return layer, layers_lib.BidirectionalParams(f_params, b_params)


def _get_tree(params: Any, key: str) -> Any:
  try:
    return params[key]
  except (KeyError, TypeError):
    raise ValueError(
        f"params: expected an entry {key!r}; got keys "
        f"{sorted(params.keys()) if hasattr(params, 'keys') else type(params).__name__}"
    ) from None


# ---------------------------------------------------------------------------
# Carries.


def _kinds(cell_or_layer: Any) -> tuple[list, bool]:
  if isinstance(cell_or_layer, Cell):
    return [dict(cell_or_layer.config).get("kind")], False
  if isinstance(cell_or_layer, Layer):
    cfg = dict(cell_or_layer.config)
    if cfg.get("kind") == "rnn":
      return [dict(cfg["cell"].config).get("kind")], False
    if cfg.get("kind") == "bidirectional":
      return [dict(cfg["forward"].config).get("kind"),
              dict(cfg["backward"].config).get("kind")], True
  raise TypeError(
      "cell_or_layer: expected a cell or an rnn/bidirectional layer as "
      f"from_flax returns, got {type(cell_or_layer).__name__}"
  )


def carry_from_flax(cell_or_layer: Any, carry: Any) -> Any:
  """Converts a Flax carry into the jaxrnn carry of ``cell_or_layer``.

  Flax's LSTM carry ``(c, h)`` becomes `LSTMState` ``(h, c)``; GRU and
  Simple carries are the hidden state in both; an ``nn.Bidirectional``
  carry ``(forward, backward)`` becomes a `BidirectionalCarry`. Leaves keep
  their shapes (any batch axes, e.g. ``(B, H)`` from
  ``initialize_carry(key, (B, D))``).

  Args:
    cell_or_layer: what `from_flax` returned (a cell or a layer).
    carry: the Flax carry.

  Returns:
    The jaxrnn carry.
  """
  kinds, bidirectional = _kinds(cell_or_layer)
  parts = tuple(carry) if bidirectional else (carry,)
  if len(parts) != len(kinds):
    raise ValueError(f"carry: expected {len(kinds)} parts, got {len(parts)}")
  out = []
  for kind, part in zip(kinds, parts):
    if kind == "lstm":
      c, h = part
      out.append(cells_lib.LSTMState(h=h, c=c))
    else:
      out.append(part)
  return layers_lib.BidirectionalCarry(*out) if bidirectional else out[0]


def carry_to_flax(cell_or_layer: Any, carry: Any) -> Any:
  """Converts a jaxrnn carry into Flax's layout (inverse of `carry_from_flax`).

  Args:
    cell_or_layer: what `from_flax` returned (a cell or a layer).
    carry: the jaxrnn carry (e.g. a final carry from ``layer.apply``).

  Returns:
    ``(c, h)`` for an LSTM, ``h`` for the others, a ``(forward, backward)``
    tuple for a bidirectional layer.
  """
  kinds, bidirectional = _kinds(cell_or_layer)
  parts = tuple(carry) if bidirectional else (carry,)
  out = []
  for kind, part in zip(kinds, parts):
    out.append((part.c, part.h) if kind == "lstm" else part)
  return tuple(out) if bidirectional else out[0]
