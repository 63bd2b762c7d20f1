"""Exact weight interop with PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``.

PyTorch is imported lazily, inside the functions that need it, so that
jaxrnn imports without it.

Layout. A torch module with ``num_layers = L`` becomes
``jaxrnn.stack(layer_0, ..., layer_{L-1})`` where each ``layer_k`` is
``jaxrnn.rnn(cell)`` (unidirectional) or ``jaxrnn.bidirectional(cell, cell)``
(``bidirectional=True``, merge ``"concat"``: torch concatenates the two
directions in the same order). For every layer and direction::

  W_x = weight_ih_l{k}[_reverse].T     W_h = weight_hh_l{k}[_reverse].T
  b_x = bias_ih_l{k}[_reverse]         b_h = bias_hh_l{k}[_reverse]
  W_hr = weight_hr_l{k}[_reverse].T    (LSTM with proj_size > 0)

Gate orders are PyTorch's in both libraries (LSTM: i, f, g, o; GRU: r, z, n,
reset applied after the recurrent product), so nothing is permuted and a
round trip is bit for bit.

Carries. torch's ``h_0``/``h_n`` have shape ``(L * D, B, H_out)`` (``D = 2``
if bidirectional, ``H_out = proj_size or hidden_size``; entry ``k * D + d``
is layer ``k``, direction ``d``) and ``c_0``/``c_n`` ``(L * D, B, H)``.
jaxrnn's carry of the stack is a tuple with one entry per layer: the cell's
carry (``h`` or `LSTMState`) or a `BidirectionalCarry` of two.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import cells as cells_lib
from jaxrnn._src import layers as layers_lib
from jaxrnn._src.base import Layer

_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


class _Spec(NamedTuple):
  """The hyperparameters of a torch recurrent module."""

  mode: str  # one of _MODES
  input_size: int
  hidden_size: int
  num_layers: int
  bias: bool
  bidirectional: bool
  proj_size: int  # 0 when there is no projection

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def out_size(self) -> int:
    return self.proj_size if self.proj_size else self.hidden_size


# ---------------------------------------------------------------------------
# Array conversion (bit-exact in both directions).


def _to_jax(tensor: Any, name: str, transpose: bool = False) -> jax.Array:
  """A torch tensor (or array) as a JAX array of the same dtype."""
  if hasattr(tensor, "detach"):
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
      array = t.contiguous().view(torch.int16).numpy().view(jnp.bfloat16)
    else:
      array = t.numpy()
  else:
    array = np.asarray(tensor)
  if transpose:
    array = array.T
  if array.dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError(
        f"{name}: the torch tensor is float64 but jax_enable_x64 is off, so "
        "JAX would silently truncate it to float32; enable it with "
        "jax.config.update('jax_enable_x64', True) or convert the module "
        "with module.float() first"
    )
  return jnp.asarray(array)


def _to_torch_tensor(array: Any, name: str, transpose: bool = False):
  """A JAX/NumPy array as a torch tensor of the same dtype (a fresh copy)."""
  import torch

  array = np.asarray(array)
  if transpose:
    if array.ndim != 2:
      raise ValueError(f"{name}: expected a matrix, got shape {array.shape}")
    array = array.T
  array = np.ascontiguousarray(array)
  if array.dtype == jnp.bfloat16:
    return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
  return torch.from_numpy(array.copy())


# ---------------------------------------------------------------------------
# torch module -> spec


def _spec_from_module(module: Any) -> _Spec:
  import torch

  if not isinstance(module, torch.nn.RNNBase):
    raise TypeError(
        "module: from_torch expects a torch.nn.RNN, torch.nn.LSTM or "
        f"torch.nn.GRU, got {type(module).__name__}"
    )
  mode = module.mode
  if mode not in _MODES:
    raise ValueError(f"module: unsupported torch recurrent mode {mode!r}")
  if module.dropout:
    raise ValueError(
        f"module.dropout: from_torch does not support dropout={module.dropout} "
        "between layers (jaxrnn.stack has no dropout, and training would "
        "continue without it); rebuild the module with dropout=0.0 and apply "
        "dropout yourself between the layers of the returned stack"
    )
  proj_size = int(getattr(module, "proj_size", 0) or 0)
  return _Spec(
      mode=mode,
      input_size=int(module.input_size),
      hidden_size=int(module.hidden_size),
      num_layers=int(module.num_layers),
      bias=bool(module.bias),
      bidirectional=bool(module.bidirectional),
      proj_size=proj_size,
  )


def _make_cell(spec: _Spec):
  if spec.mode in ("RNN_TANH", "RNN_RELU"):
    activation = "tanh" if spec.mode == "RNN_TANH" else "relu"
    return cells_lib.elman(spec.hidden_size, activation=activation, bias=spec.bias)
  if spec.mode == "LSTM":
    return cells_lib.lstm(
        spec.hidden_size, forget_bias=0.0, proj_size=spec.proj_size or None,
        bias=spec.bias)
  return cells_lib.gru(spec.hidden_size, reset_after=True, bias=spec.bias)


def _make_layer(spec: _Spec, rnn_options: dict) -> Layer:
  cell = _make_cell(spec)
  if spec.bidirectional:
    one = layers_lib.bidirectional(cell, cell, merge="concat", **rnn_options)
  else:
    one = layers_lib.rnn(cell, **rnn_options)
  return layers_lib.stack(*([one] * spec.num_layers))


def _suffix(layer: int, direction: int) -> str:
  return f"_l{layer}" + ("_reverse" if direction else "")


def _params_type(mode: str):
  if mode == "LSTM":
    return cells_lib.LSTMParams
  if mode == "GRU":
    return cells_lib.GRUParams
  return cells_lib.ElmanParams


def from_torch(module: Any, **rnn_options) -> tuple[Layer, Any]:
  """Converts a ``torch.nn.RNN``/``LSTM``/``GRU`` into a jaxrnn layer and params.

  Every option of the modules is supported (``num_layers``,
  ``bidirectional``, ``bias=False``, ``nonlinearity="relu"``, LSTM
  ``proj_size``) except ``dropout > 0``, which raises. ``batch_first`` only
  says how torch lays out a minibatch; a jaxrnn layer works on one sequence
  ``(T, input_size)`` and is ``jax.vmap``-ed over the batch.

  Args:
    module: a ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU``.
    **rnn_options: ``method``, ``unroll`` or ``remat``, passed to every
      `jaxrnn.rnn`/`jaxrnn.bidirectional` layer (how the scan runs; the
      numbers computed do not depend on them).

  Returns:
    ``(layer, params)``: ``layer`` is ``jaxrnn.stack`` of ``num_layers``
    layers, each ``jaxrnn.rnn(cell)`` or ``jaxrnn.bidirectional(cell, cell)``
    (merge ``"concat"``), with ``cell`` ``jaxrnn.elman``/``lstm``/``gru``;
    ``params`` is the matching tuple of `ElmanParams`/`LSTMParams`/
    `GRUParams` (or `BidirectionalParams` of two), JAX arrays of the
    module's dtype. ``layer.apply(params, xs, length=L)`` on ``xs: (T,
    input_size)`` gives, at steps ``t < L``, what the module gives for that
    sequence inside a packed (``pack_padded_sequence``) batch, and zeros at
    padded steps.

  Raises:
    TypeError: ``module`` is not one of the supported modules.
    ValueError: ``dropout > 0``, or a float64 module while
      ``jax_enable_x64`` is off.

  Example:
    >>> import torch, jax, jax.numpy as jnp, numpy as np
    >>> from jaxrnn.interop import from_torch
    >>> m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    >>> layer, params = from_torch(m)
    >>> xs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    >>> ys, carry = layer.apply(params, jnp.asarray(xs))
    >>> ref, _ = m(torch.from_numpy(xs))
    >>> ys.shape, bool(np.allclose(ys, ref.detach().numpy(), atol=1e-6))
    ((5, 8), True)
  """
  spec = _spec_from_module(module)
  per_layer = []
  for k in range(spec.num_layers):
    directions = []
    for d in range(spec.num_directions):
      s = _suffix(k, d)
      get = lambda name: getattr(module, name + s)  # noqa: E731
      W_x = _to_jax(get("weight_ih"), "weight_ih" + s, transpose=True)
      W_h = _to_jax(get("weight_hh"), "weight_hh" + s, transpose=True)
      b_x = b_h = None
      if spec.bias:
        b_x = _to_jax(get("bias_ih"), "bias_ih" + s)
        b_h = _to_jax(get("bias_hh"), "bias_hh" + s)
      if spec.mode == "LSTM":
        W_hr = None
        if spec.proj_size:
          W_hr = _to_jax(get("weight_hr"), "weight_hr" + s, transpose=True)
        directions.append(cells_lib.LSTMParams(W_x, W_h, b_x, b_h, W_hr))
      else:
        directions.append(_params_type(spec.mode)(W_x, W_h, b_x, b_h))
    if spec.bidirectional:
      per_layer.append(layers_lib.BidirectionalParams(*directions))
    else:
      per_layer.append(directions[0])
  return _make_layer(spec, rnn_options), tuple(per_layer)


# ---------------------------------------------------------------------------
# jaxrnn layer -> spec


def _cell_mode(cell: Any, where: str) -> tuple[str, int, int]:
  """``(mode, hidden_size, proj_size)`` of a built-in cell torch can express."""
  cfg = dict(getattr(cell, "config", ()) or ())
  kind = cfg.get("kind")
  for option in ("peephole", "layer_norm"):
    if cfg.get(option):
      raise ValueError(
          f"{where}: torch's recurrent modules have no {option}; "
          f"{kind}(..., {option}=True) has no torch equivalent")
  if kind == "elman":
    activation = cfg["activation"]
    if activation not in ("tanh", "relu"):
      raise ValueError(
          f"{where}: torch.nn.RNN supports the activations 'tanh' and 'relu', "
          f"got {activation!r}"
      )
    return ("RNN_TANH" if activation == "tanh" else "RNN_RELU",
            cfg["hidden_size"], 0)
  if kind == "lstm":
    return "LSTM", cfg["hidden_size"], cfg["proj_size"] or 0
  if kind == "gru":
    if not cfg["reset_after"]:
      raise ValueError(
          f"{where}: torch.nn.GRU applies the reset gate after the recurrent "
          "product; gru(..., reset_after=False) has no torch equivalent"
      )
    return "GRU", cfg["hidden_size"], 0
  raise TypeError(
      f"{where}: expected a jaxrnn.elman, jaxrnn.lstm or jaxrnn.gru cell, got "
      f"{'a custom cell' if kind is None else kind!r}"
  )


def _torch_layers(layer: Any) -> tuple[list, bool]:
  """The per-torch-layer cells of ``layer`` and whether it is a stack.

  Returns ``([cells_0, cells_1, ...], is_stack)`` where ``cells_k`` is a
  tuple of one cell (unidirectional) or two (forward, backward).
  """
  if not isinstance(layer, Layer):
    raise TypeError(f"layer: expected a jaxrnn.Layer, got {type(layer).__name__}")
  cfg = dict(layer.config)
  is_stack = cfg.get("kind") == "stack"
  subs = cfg["layers"] if is_stack else (layer,)
  out = []
  for k, sub in enumerate(subs):
    where = f"layer.layers[{k}]" if is_stack else "layer"
    c = dict(sub.config)
    kind = c.get("kind")
    options = dict(c.get("rnn_options", ())) if kind == "bidirectional" else c
    if options.get("learned_carry"):
      raise ValueError(
          f"{where}: torch modules start from a given or zero state; a "
          "learned initial carry (learned_carry=True) has no torch equivalent")
    zoneout = options.get("zoneout", 0.0)
    if any(r > 0 for r in jax.tree_util.tree_leaves(zoneout)):
      raise ValueError(f"{where}: torch has no zoneout; zoneout={zoneout!r} "
                       "changes the evaluated model and has no torch equivalent")
    if kind == "rnn":
      if c["reverse"]:
        raise ValueError(
            f"{where}: a reversed jaxrnn.rnn (reverse=True) has no torch "
            "equivalent; torch layers are forward or bidirectional"
        )
      out.append((c["cell"],))
    elif kind == "bidirectional":
      if not (isinstance(c["merge"], str) and c["merge"] == "concat"):
        raise ValueError(
            f"{where}: torch concatenates the two directions; "
            f"bidirectional(merge={c['merge']!r}) has no torch equivalent"
        )
      out.append((c["forward"], c["backward"]))
    else:
      raise TypeError(
          f"{where}: expected jaxrnn.rnn or jaxrnn.bidirectional layers (in a "
          f"jaxrnn.stack), got {'a custom layer' if kind is None else kind!r}"
      )
  return out, is_stack


def _spec_from_layer(layer: Layer) -> tuple[_Spec, bool]:
  """The torch hyperparameters of a layer (input_size and bias unknown)."""
  groups, is_stack = _torch_layers(layer)
  first = None
  directions = None
  for k, cells in enumerate(groups):
    if directions is None:
      directions = len(cells)
    elif len(cells) != directions:
      raise ValueError(
          "layer: torch needs every layer to be unidirectional or every layer "
          f"bidirectional; layer 0 has {directions} direction(s), layer {k} "
          f"has {len(cells)}"
      )
    for d, cell in enumerate(cells):
      where = (f"layer.layers[{k}]" if is_stack else "layer") + (
          f" ({'forward' if d == 0 else 'backward'} cell)" if len(cells) == 2 else " cell")
      mode = _cell_mode(cell, where)
      if first is None:
        first = mode
      elif mode != first:
        raise ValueError(
            f"{where}: torch needs the same cell in every layer and direction; "
            f"found (mode, hidden_size, proj_size) = {first} and {mode}"
        )
  mode, hidden, proj = first
  spec = _Spec(mode=mode, input_size=-1, hidden_size=hidden,
               num_layers=len(groups), bias=True,
               bidirectional=directions == 2, proj_size=proj)
  return spec, is_stack


def _layer_param_list(spec: _Spec, params: Any, is_stack: bool) -> list:
  """``params`` as a list (per torch layer) of lists (per direction)."""
  if is_stack:
    if not isinstance(params, (tuple, list)) or len(params) != spec.num_layers:
      raise TypeError(
          f"params: expected a tuple of {spec.num_layers} entries (one per "
          f"layer of the stack), got {type(params).__name__}"
      )
    entries = list(params)
  else:
    entries = [params]
  out = []
  for k, entry in enumerate(entries):
    if spec.bidirectional:
      if not isinstance(entry, layers_lib.BidirectionalParams):
        raise TypeError(
            f"params[{k}]: expected BidirectionalParams, got {type(entry).__name__}")
      out.append([entry.forward, entry.backward])
    else:
      out.append([entry])
  return out


def to_torch(layer: Layer, params: Any, *, batch_first: bool = False):
  """Builds the torch module equivalent to a jaxrnn layer and its params.

  The inverse of `from_torch`: ``to_torch(*from_torch(m))`` has the same
  hyperparameters and a ``state_dict`` equal to ``m``'s bit for bit.

  Args:
    layer: a ``jaxrnn.stack`` of ``jaxrnn.rnn``/``jaxrnn.bidirectional``
      layers (a single ``rnn`` or ``bidirectional`` layer is accepted too, as
      a one-layer module) with the same built-in cell everywhere:
      ``elman`` (``"tanh"``/``"relu"``), ``lstm`` (with or without
      ``proj_size``) or ``gru`` (``reset_after=True``); bidirectional layers
      must merge by ``"concat"``.
    params: the layer's params (their dtype becomes the module's).
    batch_first: the ``batch_first`` flag of the new module (a jaxrnn layer
      does not record a batch layout).

  Returns:
    A ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU`` on the CPU,
    ``dropout=0``.

  Raises:
    TypeError, ValueError: the layer or its params have no torch
      equivalent (the message names the offending part).

  Example:
    >>> import jax, jaxrnn
    >>> from jaxrnn.interop import to_torch
    >>> layer = jaxrnn.stack(jaxrnn.rnn(jaxrnn.gru(4)), jaxrnn.rnn(jaxrnn.gru(4)))
    >>> m = to_torch(layer, layer.init_params(jax.random.key(0), 3))
    >>> m
    GRU(3, 4, num_layers=2)
  """
  import torch

  spec, is_stack = _spec_from_layer(layer)
  per_layer = _layer_param_list(spec, params, is_stack)
  ptype = _params_type(spec.mode)
  P = spec.proj_size
  bias = None
  dtype = None
  input_size = None
  tensors = {}
  for k, directions in enumerate(per_layer):
    for d, p in enumerate(directions):
      s = _suffix(k, d)
      where = f"params[{k}]" if is_stack else "params"
      if spec.bidirectional:
        where += ".forward" if d == 0 else ".backward"
      if not isinstance(p, ptype):
        raise TypeError(f"{where}: expected {ptype.__name__}, got {type(p).__name__}")
      has_bias = p.b_x is not None
      if (p.b_h is not None) != has_bias:
        raise ValueError(
            f"{where}: torch has both biases or neither; got b_x "
            f"{'set' if has_bias else 'None'} and b_h "
            f"{'set' if p.b_h is not None else 'None'}"
        )
      if bias is None:
        bias = has_bias
      elif bias != has_bias:
        raise ValueError(f"{where}: torch needs biases in every layer or in none")
      expected_in = None if k == 0 else spec.num_directions * spec.out_size
      d_in = np.shape(p.W_x)[0]
      if k == 0:
        if input_size is None:
          input_size = d_in
        elif d_in != input_size:
          raise ValueError(f"{where}.W_x: expected {input_size} rows, got {d_in}")
      elif d_in != expected_in:
        raise ValueError(
            f"{where}.W_x: layer {k} of a torch module takes inputs of size "
            f"{expected_in}, got W_x of shape {np.shape(p.W_x)}"
        )
      if spec.mode == "LSTM" and (p.W_hr is None) != (not P):
        raise ValueError(
            f"{where}.W_hr: expected {'an (H, P) array' if P else 'None'} for "
            f"an LSTM with proj_size={P or None}, got "
            f"{'None' if p.W_hr is None else 'an array'}"
        )
      for leaf in (x for x in p if x is not None):
        leaf_dtype = getattr(leaf, "dtype", None)
        if leaf_dtype is None:
          leaf_dtype = np.asarray(leaf).dtype
        if dtype is None:
          dtype = jnp.dtype(leaf_dtype)
        elif jnp.dtype(leaf_dtype) != dtype:
          raise ValueError(
              f"{where}: torch modules have one dtype; found {dtype} and {leaf_dtype}")
      tensors["weight_ih" + s] = _to_torch_tensor(p.W_x, where + ".W_x", transpose=True)
      tensors["weight_hh" + s] = _to_torch_tensor(p.W_h, where + ".W_h", transpose=True)
      if has_bias:
        tensors["bias_ih" + s] = _to_torch_tensor(p.b_x, where + ".b_x")
        tensors["bias_hh" + s] = _to_torch_tensor(p.b_h, where + ".b_h")
      if spec.mode == "LSTM" and P:
        tensors["weight_hr" + s] = _to_torch_tensor(p.W_hr, where + ".W_hr", transpose=True)
  torch_dtype = {
      jnp.dtype(jnp.float32): torch.float32,
      jnp.dtype(jnp.float64): torch.float64,
      jnp.dtype(jnp.float16): torch.float16,
      jnp.dtype(jnp.bfloat16): torch.bfloat16,
  }.get(dtype)
  if torch_dtype is None:
    raise ValueError(f"params: no torch module dtype for {dtype}")
  common = dict(input_size=input_size, hidden_size=spec.hidden_size,
                num_layers=spec.num_layers, bias=bias, batch_first=batch_first,
                dropout=0.0, bidirectional=spec.bidirectional, dtype=torch_dtype)
  if spec.mode == "LSTM":
    module = torch.nn.LSTM(proj_size=P, **common)
  elif spec.mode == "GRU":
    module = torch.nn.GRU(**common)
  else:
    module = torch.nn.RNN(
        nonlinearity="tanh" if spec.mode == "RNN_TANH" else "relu", **common)
  with torch.no_grad():
    for name, value in tensors.items():
      target = getattr(module, name)
      if tuple(target.shape) != tuple(value.shape):
        raise ValueError(
            f"params: {name} of the torch module has shape {tuple(target.shape)}, "
            f"the params give {tuple(value.shape)}"
        )
      target.copy_(value)
  return module


# ---------------------------------------------------------------------------
# Carries.


def carry_from_torch(layer: Layer, h0: Any, c0: Any = None) -> Any:
  """Converts torch's initial states ``(h_0[, c_0])`` into a jaxrnn carry.

  Args:
    layer: a layer made by `from_torch` (or accepted by `to_torch`).
    h0: ``(num_layers * D, B, H_out)`` for a minibatch or
      ``(num_layers * D, H_out)`` for one sequence, where ``D = 2`` for a
      bidirectional module and ``H_out = proj_size or hidden_size``; a torch
      tensor or an array. For an LSTM, torch's ``hx = (h_0, c_0)`` tuple
      may be passed here instead, with ``c0=None``.
    c0: for an LSTM, the cell states ``(num_layers * D, B, H)`` (or
      ``(num_layers * D, H)``); ``None`` otherwise (torch takes them
      together as ``(h_0, c_0)``).

  Returns:
    The carry of ``layer``: a tuple with one entry per layer (the cell's
    carry, or a `BidirectionalCarry`), every leaf with the batch axis first,
    ``(B, H_out)``/``(B, H)``, or without it for unbatched states. Pass it
    as ``jax.vmap(lambda x, n, c: layer.apply(params, x, length=n,
    carry=c))(xs, lengths, carry)``.

  Example:
    >>> import torch
    >>> from jaxrnn.interop import from_torch, carry_from_torch
    >>> layer, params = from_torch(torch.nn.LSTM(3, 4, num_layers=2))
    >>> carry = carry_from_torch(layer, torch.zeros(2, 7, 4), torch.ones(2, 7, 4))
    >>> len(carry), carry[1].h.shape, float(carry[1].c[0, 0])
    (2, (7, 4), 1.0)
  """
  spec, is_stack = _spec_from_layer(layer)
  L, D = spec.num_layers, spec.num_directions
  if isinstance(h0, (tuple, list)):
    if len(h0) != 2 or c0 is not None:
      raise ValueError("h0: a tuple must be torch's (h_0, c_0), with c0=None")
    h0, c0 = h0
  h0 = _to_jax(h0, "h0")
  if h0.ndim not in (2, 3) or h0.shape[0] != L * D or h0.shape[-1] != spec.out_size:
    raise ValueError(
        f"h0: expected shape ({L * D}, B, {spec.out_size}) or "
        f"({L * D}, {spec.out_size}), got {tuple(h0.shape)}"
    )
  if spec.mode == "LSTM":
    if c0 is None:
      raise ValueError("c0: an LSTM needs the cell states c0 together with h0")
    c0 = _to_jax(c0, "c0")
    want = (L * D,) + tuple(h0.shape[1:-1]) + (spec.hidden_size,)
    if tuple(c0.shape) != want:
      raise ValueError(f"c0: expected shape {want}, got {tuple(c0.shape)}")
  elif c0 is not None:
    raise ValueError(f"c0: only an LSTM has cell states; this layer is {spec.mode}")

  def one(i):
    if spec.mode == "LSTM":
      return cells_lib.LSTMState(h=h0[i], c=c0[i])
    return h0[i]

  entries = []
  for k in range(L):
    if spec.bidirectional:
      entries.append(layers_lib.BidirectionalCarry(one(2 * k), one(2 * k + 1)))
    else:
      entries.append(one(k))
  return tuple(entries) if is_stack else entries[0]


def carry_to_torch(layer: Layer, carry: Any) -> Any:
  """Converts a jaxrnn carry into torch's final-state layout.

  Args:
    layer: a layer made by `from_torch` (or accepted by `to_torch`).
    carry: its carry, e.g. the final carry of a vmapped ``layer.apply``
      (leaves with a batch axis first) or of ``layer.apply`` on one sequence.

  Returns:
    ``h_n`` of shape ``(num_layers * D, B, H_out)`` (``(num_layers * D,
    H_out)`` without a batch axis) for RNN and GRU layers, and ``(h_n,
    c_n)`` with ``c_n: (num_layers * D, B, H)`` for LSTM layers, as JAX
    arrays: what the torch module returns as its second output.

  Example:
    >>> import torch, jax, jax.numpy as jnp
    >>> from jaxrnn.interop import from_torch, carry_to_torch
    >>> layer, params = from_torch(torch.nn.GRU(3, 4, bidirectional=True))
    >>> xs, lengths = jnp.ones((2, 5, 3)), jnp.array([5, 2])
    >>> ys, carry = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
    >>> carry_to_torch(layer, carry).shape
    (2, 2, 4)
  """
  spec, is_stack = _spec_from_layer(layer)
  entries = list(carry) if is_stack else [carry]
  if len(entries) != spec.num_layers:
    raise TypeError(
        f"carry: expected {spec.num_layers} entries (one per layer), got {len(entries)}")
  states = []
  for k, entry in enumerate(entries):
    if spec.bidirectional:
      if not isinstance(entry, layers_lib.BidirectionalCarry):
        raise TypeError(
            f"carry[{k}]: expected BidirectionalCarry, got {type(entry).__name__}")
      states.extend([entry.forward, entry.backward])
    else:
      states.append(entry)
  if spec.mode == "LSTM":
    for s in states:
      if not isinstance(s, cells_lib.LSTMState):
        raise TypeError(f"carry: expected LSTMState entries, got {type(s).__name__}")
    h_n = jnp.stack([s.h for s in states])
    c_n = jnp.stack([s.c for s in states])
    return h_n, c_n
  return jnp.stack([jnp.asarray(s) for s in states])
