"""Exact weight import from Keras 3 ``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``.

Keras is never imported here: a built Keras layer is read through its
``get_config()`` and ``get_weights()``, and the same conversion runs on a
plain ``(class_name, config, weights)`` description, so saved weights convert
without Keras installed.

Layout. Keras stores one ``kernel (D, G*H)``, one ``recurrent_kernel
(H, G*H)`` and (with ``use_bias``) one ``bias``, the orientation of jaxrnn's
``W_x`` and ``W_h``. Gate orders:

* ``SimpleRNN``: one block. ``b_x = bias``, ``b_h = 0``.
* ``LSTM``: ``(i, f, c, o)``, which is jaxrnn's ``(i, f, g, o)`` (``c`` is
  the candidate ``g``); nothing is permuted. ``b_x = bias``, ``b_h = 0``.
  ``unit_forget_bias`` only initialises ``bias`` and is already in it.
* ``GRU``: ``(z, r, h)``, permuted to jaxrnn's ``(r, z, n)``. With
  ``reset_after=True`` (the default) ``bias`` is ``(2, 3H)`` = (input bias,
  recurrent bias) -> ``(b_x, b_h)``; with ``reset_after=False`` it is
  ``(3H,)`` -> ``b_x``, ``b_h = 0``, and the cell is
  ``jaxrnn.gru(H, reset_after=False)``. Keras's update
  ``h' = z h + (1 - z) hh`` is jaxrnn's.

Sequence conventions. jaxrnn outputs are always aligned with the inputs. A
Keras layer with ``go_backwards=True`` becomes ``jaxrnn.rnn(cell,
reverse=True)``: same numbers, but Keras returns its output sequence in
reverse order (``ys_keras[:, t] == ys[:, T - 1 - t]``). A Keras mask must be
a prefix mask (post-padding): pass ``length = mask.sum(-1)``. At masked
steps jaxrnn outputs zeros (Keras repeats the last output unless
``zero_output_for_mask``).
"""

import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import cells as cells_lib
from jaxrnn._src import layers as layers_lib
from jaxrnn._src.base import Layer

_RNN_CLASSES = ("SimpleRNN", "LSTM", "GRU")
_CELL_CLASSES = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
_MERGES = {"concat": "concat", "sum": "sum", "mul": "mul", "ave": "mean"}
_TRAINING_ONLY = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                  "activity_regularizer", "kernel_constraint", "recurrent_constraint",
                  "bias_constraint")


def _keras_class(obj: Any) -> Optional[str]:
  """The name of the supported Keras class ``obj`` is an instance of."""
  for cls in type(obj).__mro__:
    if cls.__module__.startswith("keras") and cls.__name__ in (
        _RNN_CLASSES + ("Bidirectional", "RNN")):
      return cls.__name__
  return None


def _activation_name(value: Any) -> Any:
  """The name of a built-in Keras activation in a config, else ``value``."""
  if isinstance(value, dict):
    name = value.get("config")
    if str(value.get("module", "")).startswith("keras") and isinstance(name, str):
      return name
    return f"custom {value.get('config', value)!r}"
  return value


def _policy_name(dtype: Any) -> Optional[str]:
  if isinstance(dtype, dict):
    config = dtype.get("config")
    return config.get("name") if isinstance(config, dict) else None
  if isinstance(dtype, str):
    return dtype
  return getattr(dtype, "name", None)


def _as_array(value: Any, name: str) -> jax.Array:
  array = np.asarray(value)
  if array.dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError(
        f"{name}: the Keras weights are float64 but jax_enable_x64 is off, so "
        "JAX would silently truncate them to float32; enable it with "
        "jax.config.update('jax_enable_x64', True)"
    )
  if not np.issubdtype(array.dtype, np.floating) and array.dtype != jnp.bfloat16:
    raise TypeError(f"{name}: expected floating-point weights, got dtype {array.dtype}")
  return jnp.asarray(array)


def _gru_perm(array: jax.Array, hidden: int) -> jax.Array:
  """Keras's (z, r, h) gate blocks along the last axis -> jaxrnn's (r, z, n)."""
  z, r, h = (array[..., k * hidden:(k + 1) * hidden] for k in range(3))
  return jnp.concatenate([r, z, h], axis=-1)


def _num_weights(class_name: str, config: dict) -> int:
  """How many arrays ``get_weights()`` gives: kernel, recurrent_kernel[, bias]."""
  if class_name == "RNN":
    cell = config.get("cell")
    config = cell.get("config", {}) if isinstance(cell, dict) else {}
  return 3 if config.get("use_bias", True) else 2


def _check_config(class_name: str, config: dict, where: str) -> None:
  """Raises for every option the conversion cannot carry over exactly."""
  for name in ("dropout", "recurrent_dropout"):
    if config.get(name, 0.0):
      raise ValueError(
          f"{where}: {name}={config[name]} is not supported (jaxrnn layers have "
          "no dropout, and training would continue without it); set it to 0 "
          "and apply dropout yourself"
      )
  if config.get("stateful", False):
    raise ValueError(
        f"{where}: stateful=True is not supported: the state kept between "
        "batches lives in the Keras layer, not in its weights; pass it "
        "explicitly as carry= (see carry_from_keras)"
    )
  activation = _activation_name(config.get("activation", "tanh"))
  if class_name == "SimpleRNN":
    if activation not in ("tanh", "relu"):
      raise ValueError(
          f"{where}: activation={activation!r} is not supported; jaxrnn.elman "
          "imports 'tanh' and 'relu'"
      )
  else:
    if activation != "tanh":
      raise ValueError(
          f"{where}: activation={activation!r} is not supported; "
          f"jaxrnn.{class_name.lower()} uses tanh"
      )
    recurrent = _activation_name(config.get("recurrent_activation", "sigmoid"))
    if recurrent != "sigmoid":
      raise ValueError(
          f"{where}: recurrent_activation={recurrent!r} is not supported; "
          f"jaxrnn.{class_name.lower()} uses the logistic sigmoid"
      )
  policy = _policy_name(config.get("dtype"))
  if policy is not None and policy.startswith("mixed_"):
    raise ValueError(
        f"{where}: the mixed-precision dtype policy {policy!r} is not supported "
        "(Keras computes in a lower precision than its weights); convert a "
        "layer with a float32 or float64 policy"
    )
  ignored = [name for name in _TRAINING_ONLY if config.get(name) is not None]
  if ignored:
    warnings.warn(
        f"{where}: {', '.join(ignored)} only act during Keras training and "
        "are not converted; add the equivalent penalty or projection to your "
        "JAX training step",
        stacklevel=4,
    )


def _convert_rnn(class_name: str, config: dict, weights: list, where: str):
  """One Keras recurrent layer -> ``(cell, reverse, params)``."""
  if class_name == "RNN":
    cell_config = config.get("cell")
    cell_class = cell_config.get("class_name") if isinstance(cell_config, dict) else None
    if cell_class not in _CELL_CLASSES:
      raise TypeError(
          f"{where}: keras.layers.RNN is supported with one SimpleRNNCell, "
          f"LSTMCell or GRUCell, got cell {cell_class or type(cell_config).__name__}"
      )
    merged = dict(cell_config["config"])
    merged.update({k: v for k, v in config.items() if k != "cell"})
    return _convert_rnn(_CELL_CLASSES[cell_class], merged, weights, where)
  if class_name not in _RNN_CLASSES:
    raise TypeError(
        f"{where}: expected a Keras SimpleRNN, LSTM, GRU or Bidirectional "
        f"layer, got {class_name}"
    )
  _check_config(class_name, config, where)
  H = int(config["units"])
  use_bias = bool(config.get("use_bias", True))
  reset_after = bool(config.get("reset_after", True))
  G = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[class_name]
  expected = _num_weights(class_name, config)
  weights = list(weights)
  if len(weights) != expected:
    raise ValueError(
        f"{where}: {class_name}(use_bias={use_bias}) has {expected} weight "
        f"arrays (kernel, recurrent_kernel{', bias' if use_bias else ''}), got "
        f"{len(weights)}"
    )
  W_x = _as_array(weights[0], f"{where} kernel")
  W_h = _as_array(weights[1], f"{where} recurrent_kernel")
  if W_x.ndim != 2 or W_x.shape[1] != G * H:
    raise ValueError(f"{where}: kernel: expected shape (input_size, {G * H}), got {W_x.shape}")
  if W_h.shape != (H, G * H):
    raise ValueError(f"{where}: recurrent_kernel: expected shape {(H, G * H)}, got {W_h.shape}")
  b_x = b_h = None
  if use_bias:
    bias = _as_array(weights[2], f"{where} bias")
    two = class_name == "GRU" and reset_after
    want = (2, G * H) if two else (G * H,)
    if bias.shape != want:
      raise ValueError(f"{where}: bias: expected shape {want}, got {bias.shape}")
    if two:
      b_x, b_h = bias[0], bias[1]
    else:
      b_x, b_h = bias, jnp.zeros_like(bias)
  if class_name == "GRU":
    W_x, W_h = _gru_perm(W_x, H), _gru_perm(W_h, H)
    if use_bias:
      b_x, b_h = _gru_perm(b_x, H), _gru_perm(b_h, H)
  if class_name == "SimpleRNN":
    cell = cells_lib.elman(H, activation=_activation_name(config.get("activation", "tanh")),
                           bias=use_bias)
    params = cells_lib.ElmanParams(W_x, W_h, b_x, b_h)
  elif class_name == "LSTM":
    cell = cells_lib.lstm(H, forget_bias=0.0, bias=use_bias)
    params = cells_lib.LSTMParams(W_x, W_h, b_x, b_h)
  else:
    cell = cells_lib.gru(H, reset_after=reset_after, bias=use_bias)
    params = cells_lib.GRUParams(W_x, W_h, b_x, b_h)
  return cell, bool(config.get("go_backwards", False)), params


def _describe(layer_or_weights: Any) -> tuple[str, dict, Any]:
  """``(class_name, config, weights_or_layer)`` for a layer or a raw description."""
  if isinstance(layer_or_weights, (tuple, list)):
    if len(layer_or_weights) == 3:
      class_name, config, weights = layer_or_weights
      return str(class_name), dict(config), weights
    if len(layer_or_weights) == 2 and isinstance(layer_or_weights[0], dict):
      serialized, weights = layer_or_weights
      if "class_name" not in serialized or "config" not in serialized:
        raise ValueError(
            "layer_or_weights: a (config, weights) pair needs the config as "
            "keras.layers.serialize(layer) returns it ({'class_name': ..., "
            "'config': ...})"
        )
      return serialized["class_name"], dict(serialized["config"]), weights
    raise TypeError(
        "layer_or_weights: expected a built Keras layer, (class_name, config, "
        "weights) or (keras.layers.serialize(layer), weights), got a "
        f"{type(layer_or_weights).__name__} of length {len(layer_or_weights)}"
    )
  class_name = _keras_class(layer_or_weights)
  if class_name is None:
    raise TypeError(
        "layer_or_weights: expected a Keras SimpleRNN, LSTM, GRU or "
        f"Bidirectional layer, got {type(layer_or_weights).__name__}"
    )
  if not getattr(layer_or_weights, "built", True):
    raise ValueError(
        f"layer_or_weights: the Keras {class_name} layer is not built, so it "
        "has no weights yet; call it on data or layer.build(input_shape) first"
    )
  return class_name, layer_or_weights.get_config(), layer_or_weights


def _check_live_policy(layer: Any, where: str) -> None:
  policy = getattr(layer, "dtype_policy", None)
  if policy is not None and getattr(policy, "compute_dtype", None) != getattr(
      policy, "variable_dtype", None):
    raise ValueError(
        f"{where}: the dtype policy {policy.name!r} computes in "
        f"{policy.compute_dtype} with {policy.variable_dtype} weights; "
        "mixed precision is not supported"
    )


def _convert_one(class_name, config, source, where):
  """A non-Bidirectional layer, live (source is the layer) or raw."""
  if not isinstance(source, (tuple, list)) and hasattr(source, "get_weights"):
    _check_live_policy(source, where)
    weights = source.get_weights()
  else:
    weights = source
  return _convert_rnn(class_name, config, weights, where)


def from_keras(layer_or_weights: Any, **rnn_options) -> tuple[Layer, Any]:
  """Converts a Keras 3 recurrent layer into a jaxrnn layer and params.

  Supported: ``SimpleRNN`` (``"tanh"``/``"relu"``), ``LSTM``, ``GRU``
  (``reset_after`` either way), ``keras.layers.RNN`` around one of their
  cells, and ``Bidirectional`` of them (merge modes ``"concat"``, ``"sum"``,
  ``"mul"``, ``"ave"``; a custom ``backward_layer`` too). ``use_bias=False``
  gives ``bias=False`` cells; ``go_backwards=True`` gives ``rnn(cell,
  reverse=True)``. ``return_sequences``, ``return_state``, ``unroll``,
  ``zero_output_for_mask``, ``use_cudnn`` and the initialisers (incl.
  ``unit_forget_bias``) do not change the layer.

  Args:
    layer_or_weights: one of

      * a built Keras layer;
      * ``(class_name, config, weights)``: the class name (``"LSTM"``...),
        ``layer.get_config()`` and ``layer.get_weights()`` (NumPy arrays,
        e.g. loaded from a file). No Keras needed. For ``"Bidirectional"``,
        ``weights`` are the forward layer's followed by the backward
        layer's, as ``Bidirectional.get_weights()`` returns them;
      * ``(keras.layers.serialize(layer), weights)``.
    **rnn_options: ``method``, ``unroll`` or ``remat`` for
      `jaxrnn.rnn`/`jaxrnn.bidirectional`.

  Returns:
    ``(layer, params)``: ``jaxrnn.rnn(cell, reverse=go_backwards)`` with the
    cell's params, or ``jaxrnn.bidirectional(forward_cell, backward_cell,
    merge=...)`` with `BidirectionalParams` (``"ave"`` is ``"mean"``).
    ``layer.apply(params, xs, length=n)`` on ``xs: (T, input_size)``
    gives, at steps ``t < n``, what Keras gives for that sequence with mask
    ``t < n`` (in reverse order for ``go_backwards``).

  Raises:
    TypeError: an unsupported layer class.
    ValueError: an option that cannot be converted exactly, named in the
      message: ``dropout``/``recurrent_dropout > 0``, ``stateful=True``,
      another ``activation``/``recurrent_activation``, a mixed-precision
      dtype policy, ``merge_mode=None``, a Bidirectional whose forward layer
      goes backwards; or weights of the wrong shapes.

  Regularizers and constraints act only while Keras trains; they are not
  converted and a ``UserWarning`` says so.

  Example:
    >>> import numpy as np
    >>> from jaxrnn.interop import from_keras
    >>> config = {"units": 2, "reset_after": True}
    >>> rng = np.random.default_rng(0)
    >>> weights = [rng.normal(size=(3, 6)), rng.normal(size=(2, 6)),
    ...            rng.normal(size=(2, 6))]
    >>> weights = [w.astype(np.float32) for w in weights]
    >>> layer, params = from_keras(("GRU", config, weights))
    >>> dict(layer.config)["cell"].config[:3]
    (('kind', 'gru'), ('hidden_size', 2), ('reset_after', True))
    >>> params.W_x.shape, params.b_h.shape
    ((3, 6), (6,))
  """
  class_name, config, source = _describe(layer_or_weights)
  if class_name != "Bidirectional":
    cell, reverse, params = _convert_one(class_name, config, source, "layer")
    return layers_lib.rnn(cell, reverse=reverse, **rnn_options), params

  merge_mode = config.get("merge_mode", "concat")
  if merge_mode not in _MERGES:
    raise ValueError(
        f"Bidirectional: merge_mode={merge_mode!r} is not supported (a jaxrnn "
        "layer has one output); use 'concat', 'sum', 'mul' or 'ave'"
    )
  if config.get("stateful", False):
    raise ValueError("Bidirectional: stateful=True is not supported; pass the "
                     "state as carry= (see carry_from_keras)")
  if isinstance(source, (tuple, list)) or not hasattr(source, "forward_layer"):
    # Raw: nested serialized configs, weights forward then backward.
    fwd_ser = config.get("layer")
    if not isinstance(fwd_ser, dict) or "class_name" not in fwd_ser:
      raise ValueError(
          "Bidirectional: config['layer'] must be the serialized wrapped layer "
          "({'class_name': ..., 'config': ...}), as Bidirectional.get_config() gives"
      )
    bwd_ser = config.get("backward_layer")
    if bwd_ser is None:
      bwd_ser = {"class_name": fwd_ser["class_name"],
                 "config": dict(fwd_ser["config"], go_backwards=not fwd_ser[
                     "config"].get("go_backwards", False))}
    parts = []
    weights = list(source)
    offset = 0
    for ser in (fwd_ser, bwd_ser):
      cfg = dict(ser["config"])
      name = ser["class_name"]
      n = _num_weights(name, cfg)
      parts.append((name, cfg, weights[offset:offset + n]))
      offset += n
    if offset != len(weights):
      raise ValueError(
          f"Bidirectional: expected {offset} weight arrays (forward then "
          f"backward), got {len(weights)}"
      )
  else:
    parts = []
    for sub in (source.forward_layer, source.backward_layer):
      name = _keras_class(sub)
      if name is None or name == "Bidirectional":
        raise TypeError(
            f"Bidirectional: wraps an unsupported layer {type(sub).__name__}")
      parts.append((name, sub.get_config(), sub))
  (fc, fcfg, fsrc), (bc, bcfg, bsrc) = parts
  f_cell, f_reverse, f_params = _convert_one(fc, fcfg, fsrc, "Bidirectional forward layer")
  b_cell, b_reverse, b_params = _convert_one(bc, bcfg, bsrc, "Bidirectional backward layer")
  if f_reverse or not b_reverse:
    raise ValueError(
        "Bidirectional: only a forward layer with go_backwards=False and a "
        "backward layer with go_backwards=True are supported (Keras would "
        "return the forward outputs in reverse order otherwise)"
    )
  layer = layers_lib.bidirectional(f_cell, b_cell, merge=_MERGES[merge_mode], **rnn_options)
  return layer, layers_lib.BidirectionalParams(f_params, b_params)


# ---------------------------------------------------------------------------
# Carries.


def _directions(layer: Layer) -> tuple[list, bool]:
  if not isinstance(layer, Layer):
    raise TypeError(f"layer: expected a jaxrnn.Layer, got {type(layer).__name__}")
  cfg = dict(layer.config)
  if cfg.get("kind") == "rnn":
    return [cfg["cell"]], False
  if cfg.get("kind") == "bidirectional":
    return [cfg["forward"], cfg["backward"]], True
  raise TypeError(
      "layer: expected a jaxrnn.rnn or jaxrnn.bidirectional layer (as "
      f"from_keras returns), got {cfg.get('kind', 'a custom layer')!r}"
  )


def _is_lstm(cell) -> bool:
  return dict(cell.config).get("kind") == "lstm"


def carry_from_keras(layer: Layer, states: Any) -> Any:
  """Converts Keras ``initial_state`` arrays into the carry of ``layer``.

  Args:
    layer: a layer returned by `from_keras`.
    states: the list Keras takes as ``initial_state``: ``[h]`` for
      SimpleRNN and GRU, ``[h, c]`` for LSTM, the forward layer's states
      followed by the backward layer's for Bidirectional; each ``(B, H)``
      (or ``(H,)`` for one sequence). A single array is accepted for a
      one-state layer.

  Returns:
    The carry: ``h``, `LSTMState` ``(h, c)`` or `BidirectionalCarry` of
    them, leaves with the batch axis first (for a vmapped ``layer.apply``).

  Example:
    >>> import numpy as np, jaxrnn
    >>> from jaxrnn.interop import carry_from_keras
    >>> layer = jaxrnn.rnn(jaxrnn.lstm(3))
    >>> carry = carry_from_keras(layer, [np.zeros((2, 3)), np.ones((2, 3))])
    >>> carry.c.shape, float(carry.c[0, 0])
    ((2, 3), 1.0)
  """
  cells, bidirectional = _directions(layer)
  if not isinstance(states, (tuple, list)):
    states = [states]
  states = [jnp.asarray(s) for s in states]
  need = sum(2 if _is_lstm(c) else 1 for c in cells)
  if len(states) != need:
    raise ValueError(f"states: expected {need} arrays for this layer, got {len(states)}")
  out, i = [], 0
  for cell in cells:
    if _is_lstm(cell):
      out.append(cells_lib.LSTMState(h=states[i], c=states[i + 1]))
      i += 2
    else:
      out.append(states[i])
      i += 1
  return layers_lib.BidirectionalCarry(*out) if bidirectional else out[0]


def carry_to_keras(layer: Layer, carry: Any) -> list:
  """Converts a jaxrnn carry into Keras's list of states.

  Args:
    layer: a layer returned by `from_keras`.
    carry: its carry (e.g. the final carry of a vmapped ``layer.apply``).

  Returns:
    The states Keras returns after the output with ``return_state=True``:
    ``[h]``, ``[h, c]``, or the forward then backward states.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> from jaxrnn.interop import carry_to_keras
    >>> layer = jaxrnn.rnn(jaxrnn.lstm(3))
    >>> h, c = carry_to_keras(layer, jaxrnn.LSTMState(jnp.zeros(3), jnp.ones(3)))
    >>> float(c[0])
    1.0
  """
  cells, bidirectional = _directions(layer)
  parts = list(carry) if bidirectional else [carry]
  if bidirectional and not isinstance(carry, layers_lib.BidirectionalCarry):
    raise TypeError(f"carry: expected BidirectionalCarry, got {type(carry).__name__}")
  out = []
  for cell, part in zip(cells, parts):
    if _is_lstm(cell):
      out.extend([part.h, part.c])
    else:
      out.append(part)
  return out
