"""Task losses and readouts of a sequence: labelling, classification, language models.

Everything here is jittable JAX and masks padded steps through
`jaxrnn.sequence_loss`: whatever a padded step holds (logits, labels, even
NaN) reaches neither a value nor a gradient. Losses are per sequence;
reduce over the batch yourself (``jnp.mean`` over examples, or a token-level
mean as ``reduction="sum"`` summed and divided by the number of valid steps).
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src.training.losses import sequence_loss

Array = jax.Array

_POOLING = ("mean", "max")


def _loss_dtype(dtype: Any) -> np.dtype:
  """Losses are computed in float32 at least (16-bit logits are upcast)."""
  return jnp.promote_types(dtype, jnp.float32)


def _check_logits_labels(logits: Any, labels: Any, min_rank: int, want: str) -> None:
  shape = np.shape(logits)
  if len(shape) < min_rank:
    raise ValueError(f"logits: expected shape {want}, got shape {tuple(shape)}")
  checks.check_floating(logits, "logits")
  dtype = jnp.result_type(labels)
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
    raise TypeError(f"labels: expected integer class indices, got dtype {dtype}")
  if np.shape(labels) != shape[:-1]:
    raise ValueError(
        f"labels: expected shape {shape[:-1]} (logits.shape[:-1]), got "
        f"{tuple(np.shape(labels))}")


def _cross_entropy(logits: Array, labels: Array) -> Array:
  """``-log_softmax(logits)[labels]`` over the last axis; NaN for labels out of range."""
  logits = jnp.asarray(logits)
  log_probs = jax.nn.log_softmax(logits.astype(_loss_dtype(logits.dtype)), axis=-1)
  picked = jnp.take_along_axis(
      log_probs, jnp.asarray(labels)[..., None], axis=-1, mode="fill",
      fill_value=jnp.nan, wrap_negative_indices=False)
  return -picked[..., 0]


def _valid_steps(length: Any, batch_shape: tuple, num_steps: int) -> tuple[Array, Array]:
  """``(length, valid)``: ``length`` checked and clipped, ``valid: (..., T)`` bool."""
  dtype = jnp.result_type(length)
  if isinstance(length, bool) or not jnp.issubdtype(dtype, jnp.integer) or (
      jnp.issubdtype(dtype, jnp.bool_)):
    raise TypeError(f"length: expected integers, got dtype {dtype}")
  if np.shape(length) != batch_shape:
    raise ValueError(
        f"length: expected shape {batch_shape} (one length per sequence), got "
        f"{tuple(np.shape(length))}")
  length = jnp.clip(jnp.asarray(length), 0, num_steps)
  steps = jnp.arange(num_steps).reshape((1,) * len(batch_shape) + (num_steps,))
  return length, steps < length[..., None]


def per_step_cross_entropy(logits: Array, labels: Array) -> Array:
  r"""Softmax cross-entropy at every step, with integer labels.

  .. math::
    L_t = -\log \operatorname{softmax}(z_t)_{y_t}
        = \operatorname{logsumexp}(z_t) - z_{t, y_t}

  computed with ``jax.nn.log_softmax`` (stable for any logit magnitude).
  16-bit logits are upcast to float32. A label outside ``[0, C)`` gives NaN
  at its step; padded steps are masked by `labelling_loss`.

  Args:
    logits: ``(..., T, C)`` unnormalised scores over ``C`` classes.
    labels: ``(..., T)`` integer class indices.

  Returns:
    ``(..., T)`` per-step losses (float32, or float64 for float64 logits).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    >>> losses = jaxrnn.per_step_cross_entropy(logits, jnp.array([0, 2]))  # (T,)
    >>> [round(float(l), 4) for l in losses]   # -log 0.5, -log 0.8
    [0.6931, 0.2231]
  """
  _check_logits_labels(logits, labels, 2, "(..., T, C)")
  return _cross_entropy(logits, labels)


def labelling_loss(logits: Array, labels: Array, length: Optional[Array] = None,
                   *, reduction: str = "mean") -> Array:
  r"""Sequence labelling loss: per-step cross-entropy over the valid steps.

  .. math::
    L = \frac{1}{\text{length}} \sum_{t < \text{length}}
        -\log \operatorname{softmax}(z_t)_{y_t}  \qquad (\text{reduction="mean"})

  Padded steps (``t >= length``) are replaced before the softmax, so junk
  there, NaN or labels out of range included, reaches neither the loss nor
  its gradient (the gradient with respect to padded logits is exactly 0).

  Args:
    logits: ``(..., T, C)`` scores.
    labels: ``(..., T)`` integer class indices (anything at padded steps).
    length: ``None`` (every step is valid) or integers of shape ``(...)``
      (a scalar for one sequence); clipped to ``[0, T]``.
    reduction: as `jaxrnn.sequence_loss`: ``"mean"`` (per valid step),
      ``"sum"`` or ``"last"``.

  Returns:
    ``(...)`` losses, one per sequence (0 where ``length == 0``).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> logits = jnp.zeros((2, 4, 3)).at[:, :, 1].set(2.0)   # (B, T, C)
    >>> labels = jnp.array([[1, 1, 1, -7], [1, 1, 0, 0]])    # -7 is padding
    >>> losses = jaxrnn.labelling_loss(logits, labels, jnp.array([3, 2]))  # (B,)
    >>> [round(float(l), 4) for l in losses]   # -log softmax([0, 2, 0])[1]
    [0.2395, 0.2395]
  """
  _check_logits_labels(logits, labels, 2, "(..., T, C)")
  if length is None:
    return sequence_loss(_cross_entropy(logits, labels), None, reduction=reduction)
  shape = np.shape(logits)
  length, valid = _valid_steps(length, shape[:-2], shape[-2])
  logits = jnp.where(valid[..., None], logits, jnp.zeros((), jnp.result_type(logits)))
  labels = jnp.where(valid, labels, jnp.zeros((), jnp.result_type(labels)))
  return sequence_loss(_cross_entropy(logits, labels), length, reduction=reduction)


def classification_loss(logits: Array, labels: Array) -> Array:
  r"""Softmax cross-entropy for one label per example (sequence classification).

  .. math::
    L = -\log \operatorname{softmax}(z)_y

  Use it on a sequence summary: `last_step` or `pooled` outputs through a
  readout. 16-bit logits are upcast to float32; a label outside ``[0, C)``
  gives NaN.

  Args:
    logits: ``(..., C)`` scores.
    labels: ``(...)`` integer class indices.

  Returns:
    ``(...)`` losses.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> logits = jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8]]))
    >>> losses = jaxrnn.classification_loss(logits, jnp.array([0, 1]))   # (B,)
    >>> [round(float(l), 4) for l in losses]   # -log 0.5, -log 0.8
    [0.6931, 0.2231]
  """
  _check_logits_labels(logits, labels, 1, "(..., C)")
  return _cross_entropy(logits, labels)


def language_model_loss(logits: Array, tokens: Array, length: Optional[Array] = None,
                        *, reduction: str = "mean") -> Array:
  r"""Next-token loss: the logits at step ``t`` predict ``tokens[t + 1]``.

  .. math::
    L = \frac{1}{\text{length} - 1} \sum_{t < \text{length} - 1}
        -\log \operatorname{softmax}(z_t)_{\text{tokens}_{t+1}}
        \qquad (\text{reduction="mean"})

  A sequence of ``length`` tokens has ``length - 1`` valid pairs; the logits
  at its last valid step predict nothing and are ignored, as is everything
  in the padding.

  Args:
    logits: ``(..., T, V)`` scores over a vocabulary of ``V`` tokens, the
      model's output when fed ``tokens``.
    tokens: ``(..., T)`` integer token ids.
    length: ``None`` (all ``T`` tokens valid) or integers of shape ``(...)``.
    reduction: ``"mean"`` (per valid pair), ``"sum"`` or ``"last"`` (the pair
      ``(length - 2, length - 1)``), as `jaxrnn.sequence_loss`.

  Returns:
    ``(...)`` losses, one per sequence (0 where ``length <= 1``).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> tokens = jnp.array([0, 1, 2, 0])
    >>> logits = 5.0 * jnp.eye(3)[jnp.array([1, 2, 0, 1])]   # predicts 1, 2, 0, 1
    >>> jaxrnn.language_model_loss(logits, tokens, 3) < 0.02   # pairs (0,1), (1,2)
    Array(True, dtype=bool)
  """
  _check_logits_labels(logits, tokens, 2, "(..., T, V)")
  shape = np.shape(logits)
  if length is None:
    pairs = None
  else:
    pairs, _ = _valid_steps(length, shape[:-2], shape[-2])
    pairs = jnp.maximum(pairs - 1, 0)
  # Pair t is (logits[t], tokens[t + 1]), for t < T - 1.
  return labelling_loss(logits[..., :-1, :], jnp.asarray(tokens)[..., 1:], pairs,
                        reduction=reduction)


def _check_one_sequence(ys: Any, owner: str) -> None:
  shape = np.shape(ys)
  if len(shape) != 2:
    hint = ""
    if len(shape) == 3:
      hint = (f"; {owner} works on ONE sequence: for a minibatch use "
              f"jax.vmap({owner}) over ys and length")
    raise ValueError(
        f"ys: {owner} expects shape (T, O), got shape {tuple(shape)} "
        f"(rank {len(shape)}){hint}")
  checks.check_floating(ys, "ys")


def last_step(ys: Array, length: Optional[Array] = None) -> Array:
  """The output at the last valid step of ONE sequence.

  ``ys[length - 1]``, or ``ys[-1]`` without ``length``; zeros when
  ``length == 0`` (or ``T == 0``). Padded steps are never read, so NaN there
  reaches neither the value nor the gradient. ``jax.vmap`` it for a batch.

  Args:
    ys: ``(T, O)`` outputs of one sequence (e.g. a layer's ``ys``).
    length: ``None`` or an integer scalar; a Python int outside ``[0, T]``
      raises, a traced one is clipped.

  Returns:
    ``(O,)`` the output at step ``length - 1``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> ys = jnp.arange(8.0).reshape(4, 2)                   # (T, O)
    >>> jaxrnn.last_step(ys, 3)
    Array([4., 5.], dtype=float32)
    >>> jax.vmap(jaxrnn.last_step)(jnp.stack([ys, ys]), jnp.array([1, 0]))
    Array([[0., 1.],
           [0., 0.]], dtype=float32)
  """
  _check_one_sequence(ys, "last_step")
  ys = jnp.asarray(ys)
  num_steps = ys.shape[0]
  if length is None:
    return ys[-1] if num_steps else jnp.zeros(ys.shape[1:], ys.dtype)
  length = checks.check_length(length, num_steps)
  if num_steps == 0:
    return jnp.zeros(ys.shape[1:], ys.dtype)
  y = jax.lax.dynamic_index_in_dim(ys, jnp.maximum(length - 1, 0), keepdims=False)
  return jnp.where(length > 0, y, jnp.zeros((), ys.dtype))


def pooled(ys: Array, length: Optional[Array] = None, *, mode: str = "mean") -> Array:
  r"""Pools the valid steps of ONE sequence: mean or max over time.

  .. math::
    \text{mean: } \frac{1}{\text{length}} \sum_{t < \text{length}} y_t, \qquad
    \text{max: } \max_{t < \text{length}} y_t \text{ (per feature)}

  Padded steps are excluded before reducing: a max never picks a padded
  value, however large, and NaN in the padding reaches neither the value
  nor the gradient. Zeros when ``length == 0``. ``jax.vmap`` it for a batch.

  Args:
    ys: ``(T, O)`` outputs of one sequence.
    length: ``None`` or an integer scalar, as in `last_step`.
    mode: ``"mean"`` or ``"max"``.

  Returns:
    ``(O,)`` pooled features.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> ys = jnp.array([[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]])  # step 2 is padding
    >>> jaxrnn.pooled(ys, 2), jaxrnn.pooled(ys, 2, mode="max")
    (Array([ 2., -3.], dtype=float32), Array([ 3., -2.], dtype=float32))
  """
  if mode not in _POOLING:
    raise ValueError(f"mode: expected one of {_POOLING}, got {mode!r}")
  _check_one_sequence(ys, "pooled")
  ys = jnp.asarray(ys)
  num_steps = ys.shape[0]
  checked = checks.check_length(length, num_steps)
  if num_steps == 0:
    return jnp.zeros(ys.shape[1:], ys.dtype)
  count = jnp.asarray(num_steps, jnp.int32) if checked is None else checked
  valid = (jnp.arange(num_steps) < count).reshape(num_steps, 1)
  if mode == "mean":
    acc = checks.accumulation_dtype(ys.dtype)
    total = jnp.sum(jnp.where(valid, ys, jnp.zeros((), ys.dtype)), axis=0, dtype=acc)
    return (total / jnp.maximum(count, 1).astype(acc)).astype(ys.dtype)
  peak = jnp.max(jnp.where(valid, ys, jnp.full((), -jnp.inf, ys.dtype)), axis=0)
  return jnp.where(count > 0, peak, jnp.zeros((), ys.dtype))
