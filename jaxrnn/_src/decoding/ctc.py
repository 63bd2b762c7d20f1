"""Connectionist temporal classification: the loss, best-path decoding and a
jittable prefix beam search, each on ONE example (``jax.vmap`` for a batch).

The model emits ``(T, V)`` logits over ``V`` classes, one of which is the
``blank``. An alignment (one class per frame) collapses to a labelling by
merging repeated classes, then removing blanks: ``a a _ a b -> a a b``.
"""

import numbers
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn._src import checks

Array = jax.Array

# Where `tokens` holds no label: never a class index, so never ambiguous.
PAD = -1


def _check_logits(logits: Any, owner: str) -> Tuple[Array, int, int]:
  """``logits`` as an array, with its ``(T, V)``; raises unless rank 2 floating."""
  shape = np.shape(logits)
  if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
    hint = (f"; {owner} works on ONE example: for a minibatch use jax.vmap({owner})"
            if len(shape) == 3 else "")
    raise ValueError(f"logits: {owner} expects shape (T, V) with T, V >= 1, got shape "
                     f"{tuple(shape)} (rank {len(shape)}){hint}")
  checks.check_floating(logits, "logits")
  return jnp.asarray(logits), shape[0], shape[1]


def _check_blank(blank: Any, num_classes: int) -> int:
  what = f"an int in [0, V) = [0, {num_classes})"
  if isinstance(blank, bool) or not isinstance(blank, numbers.Integral):
    raise TypeError(f"blank: expected {what}, got {type(blank).__name__} {blank!r}")
  if not 0 <= int(blank) < num_classes:
    raise ValueError(f"blank: expected {what}, got {blank}")
  return int(blank)


def _check_length(length: Any, bound: int, name: str = "length", symbol: str = "T"
                  ) -> Array:
  checked = checks.check_length(length, bound, name, symbol)
  if checked is None:
    raise TypeError(f"{name}: expected an integer scalar, got None")
  return checked


def _valid_frames(logits: Array, length: Array) -> Tuple[Array, Array]:
  """``logits`` with padded frames zeroed (so NaN there reaches neither value
  nor gradient), 16-bit floats widened, and the ``(T,)`` mask of valid frames."""
  valid = jnp.arange(logits.shape[0]) < length
  logits = logits.astype(checks.accumulation_dtype(logits.dtype))
  return jnp.where(valid[:, None], logits, jnp.zeros((), logits.dtype)), valid


def ctc_loss(logits: Array, length: Array, labels: Array, label_length: Array, *,
             blank: int = 0) -> Array:
  r"""The CTC negative log-likelihood of ``labels`` given ONE example's logits.

  .. math::
    L = -\log \sum_{\pi:\ \mathcal{B}(\pi) = y} \prod_{t < \text{length}}
        \operatorname{softmax}(\text{logits}_t)_{\pi_t}

  over the alignments :math:`\pi` of the first ``length`` frames that collapse
  (:math:`\mathcal{B}`: merge repeats, drop blanks) to
  :math:`y` = ``labels[:label_length]``. Equal to PyTorch's
  ``F.ctc_loss(log_softmax(logits), ..., reduction="none")``; computed by
  ``optax.ctc_loss`` with a batch of one.

  Padded frames (``t >= length``) and padded labels (``n >= label_length``)
  may hold anything, even NaN: they reach neither the loss nor its gradient.
  When no alignment exists (the label needs more frames than ``length``:
  one per label plus one per repeated neighbour pair), PyTorch returns
  ``inf``; here, as in optax (whose ``log_epsilon = -1e5`` stands for
  :math:`\log 0`), the loss is a large finite value, about ``1e5``, with a
  finite gradient. Differentiable in ``logits``; ``jax.jit`` and ``jax.vmap``
  it (over all four arguments for a batch).

  Args:
    logits: ``(T, V)`` unnormalised scores of ``V`` classes (blank included)
      per frame.
    length: integer scalar, the number of valid frames in ``[0, T]``; a
      Python int outside raises, a traced one is clipped.
    labels: ``(L,)`` integers with ``L <= T``; ``labels[:label_length]`` are
      the target classes, each in ``[0, V)`` and not ``blank``.
    label_length: integer scalar in ``[0, L]``, checked like ``length``.
    blank: the blank class, a Python int in ``[0, V)``.

  Returns:
    A scalar: the negative log-likelihood (0 for an empty label on no
    frames).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> logits = jnp.zeros((2, 2))  # uniform over {blank, 1} on 2 frames
    >>> # 3 of the 4 alignments (1 1, _ 1, 1 _) give "1": -log(3/4)
    >>> round(float(jaxrnn.ctc_loss(logits, 2, jnp.array([1]), 1)), 4)
    0.2877

  References:
    Graves et al., `Connectionist temporal classification: labelling
    unsegmented sequence data with recurrent neural networks
    <https://dl.acm.org/doi/10.1145/1143844.1143891>`_, ICML 2006.
  """
  logits, num_steps, num_classes = _check_logits(logits, "ctc_loss")
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels: ctc_loss expects integers of shape (L,), got "
                    f"{checks.describe(labels)}")
  num_labels = labels.shape[0]
  if num_labels > num_steps:
    raise ValueError(f"labels: ctc_loss expects at most T = {num_steps} labels (one per "
                     f"frame at most), got shape {tuple(labels.shape)}")
  blank = _check_blank(blank, num_classes)
  length = _check_length(length, num_steps)
  label_length = _check_length(label_length, num_labels, "label_length", "L")
  logits, valid = _valid_frames(logits, length)
  # optax marks padding with 1.0 (logit_paddings, label_paddings).
  dtype = logits.dtype
  label_paddings = (jnp.arange(num_labels) >= label_length).astype(dtype)
  loss = optax.ctc_loss(logits[None], (~valid).astype(dtype)[None], labels[None],
                        label_paddings[None], blank_id=blank)
  return loss[0]


def ctc_greedy_decode(logits: Array, length: Array, *, blank: int = 0
                      ) -> Tuple[Array, Array]:
  """Best-path decoding of ONE example: the collapsed per-frame argmax.

  Takes ``argmax(logits[t])`` for each valid frame ``t < length``, merges
  repeats, then removes blanks, so frames ``a a _ a`` give ``a a``. Fixed
  shapes, so ``jax.jit`` and ``jax.vmap`` apply; padded frames may hold
  anything. Ties go to the lowest class, as in ``jnp.argmax``.

  Args:
    logits: ``(T, V)`` scores (logits or log-probabilities) per frame.
    length: integer scalar, the number of valid frames in ``[0, T]``; a
      Python int outside raises, a traced one is clipped.
    blank: the blank class, a Python int in ``[0, V)``.

  Returns:
    ``(tokens, num_tokens)``: ``tokens`` ``(T,)`` int32, the decoded labels
    first, then ``-1`` from position ``num_tokens`` on; ``num_tokens`` an int32
    scalar.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> frames = jnp.array([1, 1, 0, 1, 2, 2])   # the argmax of each frame
    >>> tokens, num_tokens = jaxrnn.ctc_greedy_decode(jax.nn.one_hot(frames, 3), 5)
    >>> tokens, num_tokens
    (Array([ 1,  1,  2, -1, -1, -1], dtype=int32), Array(3, dtype=int32))
  """
  logits, num_steps, num_classes = _check_logits(logits, "ctc_greedy_decode")
  blank = _check_blank(blank, num_classes)
  length = _check_length(length, num_steps)
  best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  previous = jnp.concatenate([jnp.full((1,), PAD, jnp.int32), best[:-1]])
  keep = (jnp.arange(num_steps) < length) & (best != blank) & (best != previous)
  # Compaction with fixed shapes: kept frame k goes to slot (number kept before it);
  # dropped frames aim past the end and are discarded.
  slot = jnp.where(keep, jnp.cumsum(keep, dtype=jnp.int32) - 1, num_steps)
  tokens = jnp.full((num_steps,), PAD, jnp.int32).at[slot].set(best, mode="drop")
  return tokens, jnp.sum(keep, dtype=jnp.int32)


def ctc_beam_search(logits: Array, length: Array, *, beam_size: int, blank: int = 0
                    ) -> Tuple[Array, Array, Array]:
  r"""CTC prefix beam search on ONE example, jittable (Hannun et al., 2014).

  Keeps up to ``beam_size`` distinct prefixes (labellings so far), each with
  :math:`p_b` and :math:`p_{nb}`, the probability of the frames so far over
  the alignments that collapse to it and end in a blank or in its last label
  :math:`\ell`. At frame ``t``, with :math:`p_t = \operatorname{softmax}
  (\text{logits}_t)`, each prefix :math:`s`

  * stays: :math:`p_b(s) \mathrel{+}= (p_b + p_{nb})(s)\, p_t(\text{blank})`
    and :math:`p_{nb}(s) \mathrel{+}= p_{nb}(s)\, p_t(\ell)`;
  * extends by each label :math:`c`: :math:`p_{nb}(s c) \mathrel{+}=
    (p_b + p_{nb})(s)\, p_t(c)`, or :math:`p_b(s)\, p_t(c)` when :math:`c = \ell`
    (a repeat needs a blank in between).

  Candidates that are the same prefix are merged (their probabilities
  summed), and the ``beam_size`` most probable, by :math:`p_b + p_{nb}`, are
  kept. Frames ``t >= length`` are skipped (they may hold anything). All in
  log space with fixed shapes, so ``jax.jit`` and ``jax.vmap`` apply;
  ``beam_size`` and ``blank`` are static.

  A score is the summed probability of the alignments that the search kept,
  a lower bound on the labelling's probability; it is exact when the beam
  never dropped a prefix of positive probability (e.g. ``beam_size`` at
  least the number of labellings of ``length`` frames), and the search then
  returns the exact ``beam_size`` most probable labellings.

  Args:
    logits: ``(T, V)`` unnormalised scores of ``V`` classes (blank included)
      per frame.
    length: integer scalar, the number of valid frames in ``[0, T]``; a
      Python int outside raises, a traced one is clipped.
    beam_size: the number of prefixes kept, a positive Python int.
    blank: the blank class, a Python int in ``[0, V)``.

  Returns:
    ``(tokens, num_tokens, scores)``, best first: ``tokens``
    ``(beam_size, T)`` int32, each row's labels first, then ``-1``;
    ``num_tokens`` ``(beam_size,)`` int32; ``scores`` ``(beam_size,)`` the
    log-probabilities, descending, ``-inf`` in slots holding no prefix (then
    ``num_tokens`` is 0 and the row all ``-1``).

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> # Greedy decoding reads "" (blank, blank: 0.25), but "1" has 0.56.
    >>> logits = jnp.log(jnp.array([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]]))
    >>> tokens, num_tokens, scores = jaxrnn.ctc_beam_search(logits, 2, beam_size=2)
    >>> tokens, num_tokens, jnp.exp(scores).round(4)
    (Array([[ 1, -1],
           [-1, -1]], dtype=int32), Array([1, 0], dtype=int32), Array([0.56, 0.25], dtype=float32))

  References:
    Hannun et al., `First-pass large vocabulary continuous speech recognition
    using bi-directional recurrent DNNs <https://arxiv.org/abs/1408.2873>`_,
    2014.
  """
  logits, num_steps, num_classes = _check_logits(logits, "ctc_beam_search")
  beam_size = checks.check_positive_int(beam_size, "beam_size")
  blank = _check_blank(blank, num_classes)
  length = _check_length(length, num_steps)
  logits, valid = _valid_frames(logits, length)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  neg_inf = jnp.full((), -jnp.inf, log_probs.dtype)
  steps = jnp.arange(num_steps)
  classes = jnp.arange(num_classes)

  def step(beams, inputs):
    prefix, prefix_length, log_pb, log_pnb = beams       # (K, T), (K,), (K,), (K,)
    log_p, is_valid = inputs                             # (V,), ()
    log_total = jnp.logaddexp(log_pb, log_pnb)
    alive = log_total > neg_inf
    last = jnp.take_along_axis(prefix, jnp.maximum(prefix_length - 1, 0)[:, None],
                               axis=1)[:, 0]
    stay_pb = log_total + log_p[blank]
    # The empty prefix's `last` is the pad -1: no class repeats it, and its
    # log p_nb = -inf keeps log_p[-1] out of its stay.
    stay_pnb = log_pnb + log_p[last]
    repeat = classes[None, :] == last[:, None]                           # (K, V)
    extend = jnp.where(repeat, log_pb[:, None], log_total[:, None]) + log_p[None, :]
    extend = jnp.where(classes[None, :] == blank, neg_inf, extend)
    # Extending beam j by c gives beam i's prefix iff prefix_i = prefix_j + (c,):
    # then c = last_i. Only live beams i are targets: a dead slot's prefix is
    # junk (it may copy a live one), and mass merged into it would duplicate it.
    same_head = jnp.all((prefix[:, None, :] == prefix[None, :, :])
                        | (steps[None, None, :] >= prefix_length[None, :, None]), axis=-1)
    match = (alive[:, None] & (prefix_length[:, None] == prefix_length[None, :] + 1)
             & same_head)                                                # (i, j)
    # At most one j matches each i (beams are distinct), so a max picks it.
    into_i = jnp.max(jnp.where(match, extend[:, last].T, neg_inf), axis=1)
    stay_pnb = jnp.logaddexp(stay_pnb, into_i)
    merged = jnp.any(match[:, :, None] & (classes[None, None, :] == last[:, None, None]),
                     axis=0)                                             # (j, V)
    extend = jnp.where(merged, neg_inf, extend)

    cand_pb = jnp.concatenate([stay_pb, jnp.full((beam_size * num_classes,), -jnp.inf,
                                                 stay_pb.dtype)])
    cand_pnb = jnp.concatenate([stay_pnb, extend.reshape(-1)])
    _, pick = jax.lax.top_k(jnp.logaddexp(cand_pb, cand_pnb), beam_size)
    is_extension = pick >= beam_size
    source = jnp.where(is_extension, (pick - beam_size) // num_classes, pick)
    label = (pick - beam_size) % num_classes
    source_length = prefix_length[source]
    new_prefix = jnp.where(is_extension[:, None] & (steps[None, :] == source_length[:, None]),
                           label[:, None], prefix[source])
    new = (new_prefix, source_length + is_extension.astype(jnp.int32), cand_pb[pick],
           cand_pnb[pick])
    return jax.tree_util.tree_map(lambda n, o: jnp.where(is_valid, n, o), new, beams), None

  initial = (jnp.full((beam_size, num_steps), PAD, jnp.int32),
             jnp.zeros((beam_size,), jnp.int32),
             jnp.full((beam_size,), -jnp.inf, log_probs.dtype).at[0].set(0.0),  # the empty prefix
             jnp.full((beam_size,), -jnp.inf, log_probs.dtype))
  (prefix, prefix_length, log_pb, log_pnb), _ = jax.lax.scan(step, initial, (log_probs, valid))
  scores = jnp.logaddexp(log_pb, log_pnb)
  alive = scores > neg_inf
  num_tokens = jnp.where(alive, prefix_length, 0)
  tokens = jnp.where(steps[None, :] < num_tokens[:, None], prefix, PAD)
  return tokens, num_tokens, scores
