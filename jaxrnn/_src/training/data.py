"""Host-side batching of variable-length sequences (NumPy, for input pipelines).

`pad_sequences` turns a list of sequences into the ``(B, T, ...)`` array plus
``lengths: (B,)`` that the layers take; `unpad_sequences` inverts it;
`bucket_by_length` groups examples of similar length into minibatches so that
less of each padded batch is padding.
"""

import numbers
from typing import Any, Optional, Sequence

import numpy as np


def _check_int(value: Any, name: str, *, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
  if value < minimum:
    raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
  return int(value)


def _check_lengths(lengths: Any, name: str = "lengths") -> np.ndarray:
  lengths = np.asarray(lengths)
  if lengths.ndim != 1:
    raise ValueError(f"{name}: expected shape (B,), got shape {lengths.shape}")
  if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
    raise TypeError(f"{name}: expected integers, got dtype {lengths.dtype}")
  if lengths.size and lengths.min() < 0:
    raise ValueError(f"{name}: expected non-negative lengths, got {lengths.min()}")
  return lengths.astype(np.int64)


def _representable(value: np.ndarray, cast: np.ndarray) -> bool:
  """Whether casting ``value`` gave ``cast`` without changing what it means.

  Integer and boolean targets need the exact value; floating targets may
  round, but must keep NaN as NaN and not overflow to infinity.
  """
  if cast.dtype.kind in "iub":
    if value.dtype.kind in "fc" and not np.isfinite(value):
      return False
    return bool(cast == value)
  if value.dtype.kind not in "fc":
    return True
  back = cast.astype(np.complex128 if value.dtype.kind == "c" else np.float64)
  return bool(np.isnan(back) == np.isnan(value) and np.isinf(back) == np.isinf(value))


def _check_pad_lengths(pad_lengths: Any) -> tuple[int, ...]:
  """``pad_lengths`` as a tuple of strictly increasing non-negative ints."""
  if isinstance(pad_lengths, (str, bytes)) or not isinstance(pad_lengths, Sequence):
    raise TypeError(
        "pad_lengths: expected a sorted sequence of ints, e.g. (32, 64, 128), "
        f"got {type(pad_lengths).__name__} {pad_lengths!r}")
  if len(pad_lengths) == 0:
    raise ValueError("pad_lengths: expected at least one length, got none")
  values = tuple(_check_int(n, "pad_lengths", minimum=0) for n in pad_lengths)
  if any(b <= a for a, b in zip(values, values[1:])):
    raise ValueError(
        f"pad_lengths: expected strictly increasing lengths, got {values}")
  return values


def _padded_length(longest: int, pad_lengths: tuple[int, ...]) -> int:
  """The smallest entry of ``pad_lengths`` that is at least ``longest``."""
  if longest > pad_lengths[-1]:
    raise ValueError(
        f"pad_lengths: a sequence has {longest} steps, more than the largest "
        f"padded length {pad_lengths[-1]}; sequences are never truncated (cut "
        "them first, or add a larger length)")
  return next(n for n in pad_lengths if n >= longest)


def pad_sequences(
    sequences: Sequence[Any],
    *,
    max_length: Optional[int] = None,
    pad_to_multiple: Optional[int] = None,
    pad_lengths: Optional[Sequence[int]] = None,
    pad_value: Any = 0,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Pads sequences of different lengths into one array.

  Sequences are padded at the end (post-padding), the layout the layers'
  ``length`` argument expects. A sequence longer than ``max_length`` (or
  than every entry of ``pad_lengths``) raises: nothing is ever truncated
  silently.

  A jitted training step compiles once per padded shape. Padding every
  batch to its own longest sequence gives up to one compilation per
  distinct length; ``pad_to_multiple=k`` bounds an epoch to ``ceil(L / k)``
  padded lengths (``L`` the longest sequence), and ``pad_lengths`` to at
  most ``len(pad_lengths)``.

  Args:
    sequences: a list of ``B >= 1`` array-likes of shapes ``(T_i, ...)``, all
      with the same trailing shape ``...`` (integers, floats or booleans).
    max_length: the padded length ``T``; ``None`` uses ``max_i T_i``
      (or rounds it up as ``pad_to_multiple`` or ``pad_lengths`` say).
    pad_to_multiple: round ``T = max_i T_i`` up to a multiple of this
      positive int (at least one multiple: ``T >= pad_to_multiple``).
    pad_lengths: the allowed padded lengths, a strictly increasing sequence
      of non-negative ints; ``T`` is the smallest one ``>= max_i T_i``.
      At most one of ``max_length``, ``pad_to_multiple`` and
      ``pad_lengths`` may be given.
    pad_value: the value of the padded steps; it must be representable in
      ``dtype`` (NaN in an integer array raises).
    dtype: the dtype of ``padded``; ``None`` uses the sequences' common
      NumPy dtype (``numpy.result_type``).

  Returns:
    ``(padded, lengths)``: ``padded: (B, T, ...)`` NumPy array with
    ``padded[i, :T_i] == sequences[i]`` and ``pad_value`` after, and
    ``lengths: (B,)`` int32 holding the ``T_i``.

  Example:
    >>> import jaxrnn
    >>> padded, lengths = jaxrnn.pad_sequences([[1, 2, 3], [4], []], pad_value=-1)
    >>> padded
    array([[ 1,  2,  3],
           [ 4, -1, -1],
           [-1, -1, -1]])
    >>> lengths
    array([3, 1, 0], dtype=int32)
    >>> jaxrnn.pad_sequences([[1, 2, 3], [4]], pad_to_multiple=4)[0].shape
    (2, 4)
    >>> jaxrnn.pad_sequences([[1, 2, 3], [4]], pad_lengths=(2, 8, 32))[0].shape
    (2, 8)
  """
  if isinstance(sequences, np.ndarray) or not isinstance(sequences, Sequence):
    raise TypeError(
        "sequences: expected a list of arrays of shape (T_i, ...), got "
        f"{type(sequences).__name__}")
  if len(sequences) == 0:
    raise ValueError("sequences: expected at least one sequence, got an empty list")
  arrays = [np.asarray(s) for s in sequences]
  for i, a in enumerate(arrays):
    if a.ndim == 0:
      raise ValueError(
          f"sequences: sequence {i} is a scalar; expected shape (T_i, ...)")
    if a.dtype == object:
      raise TypeError(
          f"sequences: sequence {i} has ragged or non-numeric entries (dtype object)")
  trailing = arrays[0].shape[1:]
  for i, a in enumerate(arrays):
    if a.shape[1:] != trailing:
      raise ValueError(
          f"sequences: every sequence must have shape (T_i, *{trailing}) like "
          f"sequence 0, but sequence {i} has shape {a.shape}")
  lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
  given = [name for name, value in (("max_length", max_length),
                                    ("pad_to_multiple", pad_to_multiple),
                                    ("pad_lengths", pad_lengths)) if value is not None]
  if len(given) > 1:
    raise ValueError(
        f"{given[1]}: expected at most one of max_length, pad_to_multiple and "
        f"pad_lengths, got {' and '.join(given)}")
  if pad_to_multiple is not None:
    multiple = _check_int(pad_to_multiple, "pad_to_multiple", minimum=1)
    max_length = multiple * max(1, -(-int(lengths.max()) // multiple))
  elif pad_lengths is not None:
    max_length = _padded_length(int(lengths.max()), _check_pad_lengths(pad_lengths))
  elif max_length is None:
    max_length = int(lengths.max())
  else:
    max_length = _check_int(max_length, "max_length", minimum=0)
    longest = int(np.argmax(lengths))
    if lengths[longest] > max_length:
      raise ValueError(
          f"max_length: sequence {longest} has {lengths[longest]} steps, more "
          f"than max_length={max_length}; sequences are never truncated "
          "(cut them first, or raise max_length)")
  if dtype is None:
    # An empty sequence ([] is float64 to NumPy) does not decide the dtype.
    dtype = np.result_type(*([a for a in arrays if a.size] or arrays))
  else:
    dtype = np.dtype(dtype)
  fill = np.asarray(pad_value)
  if fill.shape != ():
    raise ValueError(f"pad_value: expected a scalar, got shape {fill.shape}")
  with np.errstate(invalid="ignore", over="ignore"):
    try:
      cast = fill.astype(dtype)
    except (ValueError, OverflowError, TypeError) as err:
      raise ValueError(
          f"pad_value: {pad_value!r} cannot be stored in dtype {dtype}") from err
  if not _representable(fill, cast):
    raise ValueError(
        f"pad_value: {pad_value!r} cannot be stored in dtype {dtype} "
        f"(it would become {cast.item()!r})")
  padded = np.full((len(arrays), max_length) + trailing, cast, dtype=dtype)
  for i, a in enumerate(arrays):
    padded[i, :a.shape[0]] = a
  return padded, lengths


def unpad_sequences(padded: Any, lengths: Any) -> list[np.ndarray]:
  """Cuts a padded batch back into a list of sequences (`pad_sequences`'s inverse).

  Args:
    padded: ``(B, T, ...)`` array (NumPy or JAX).
    lengths: ``(B,)`` integers in ``[0, T]``.

  Returns:
    A list of ``B`` NumPy arrays, the ``i``-th of shape ``(lengths[i], ...)``
    (copies, not views of ``padded``).

  Example:
    >>> import numpy as np, jaxrnn
    >>> jaxrnn.unpad_sequences(np.array([[1, 2, 3], [4, 0, 0]]), [3, 1])
    [array([1, 2, 3]), array([4])]
  """
  padded = np.asarray(padded)
  lengths = _check_lengths(lengths)
  if padded.ndim < 2:
    raise ValueError(f"padded: expected shape (B, T, ...), got shape {padded.shape}")
  if padded.shape[0] != lengths.shape[0]:
    raise ValueError(
        f"lengths: expected shape ({padded.shape[0]},) (padded.shape[0]), got "
        f"shape {lengths.shape}")
  if lengths.size and lengths.max() > padded.shape[1]:
    raise ValueError(
        f"lengths: expected integers in [0, T] = [0, {padded.shape[1]}], got "
        f"{lengths.max()}")
  return [padded[i, :n].copy() for i, n in enumerate(lengths)]


def bucket_by_length(
    lengths: Any,
    batch_size: int,
    *,
    num_buckets: int = 16,
    rng: Optional[np.random.Generator] = None,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
  """Groups example indices into minibatches of similar sequence length.

  A padded minibatch costs ``batch_size * max(lengths in batch)`` steps, so
  mixing short and long sequences wastes most of it on padding. This sorts
  the examples by length, cuts the sorted order into ``num_buckets`` buckets
  of equal size (length quantiles), and chunks the buckets, in order, into
  minibatches of ``batch_size``. Each minibatch then holds neighbours in the
  sorted order: at most two adjacent buckets.

  With ``rng``, the order of examples within each bucket and the order of
  the minibatches are shuffled, so every epoch sees different batches while
  lengths within a batch stay similar. More buckets means less padding and
  less randomness; ``num_buckets=1`` shuffles freely (no padding saved).

  Pad each minibatch with ``pad_sequences(..., pad_to_multiple=k)`` or
  ``pad_sequences(..., pad_lengths=...)`` so that a jitted step compiles for
  a bounded number of padded lengths over an epoch.

  On a skewed distribution the saving is large. For 1000 lengths drawn as
  ``1 + geometric(0.02)`` (mean 52, a tail to 405) and ``batch_size=32``,
  the share of padded steps in all minibatches, averaged over 20 shuffles:

  ======================================  =======
  batches                                 padding
  ======================================  =======
  random (no bucketing)                   74%
  ``num_buckets=8, rng=rng``              39%
  ``num_buckets=16, rng=rng`` (default)   27%
  ``num_buckets=32, rng=rng``             19%
  ``rng=None`` (fully sorted)             9%
  ======================================  =======

  Args:
    lengths: ``(N,)`` non-negative integers, the length of every example.
    batch_size: examples per minibatch.
    num_buckets: the number of length buckets shuffled within (only matters
      with ``rng``; without it the order is fully sorted).
    rng: a ``numpy.random.Generator`` for shuffling, or ``None`` for a
      deterministic order (ascending length, ties by index).
    drop_remainder: drop ``N % batch_size`` examples so that every minibatch
      has exactly ``batch_size``. Without ``rng`` the dropped ones are the
      longest; with ``rng`` they are drawn uniformly at random.

  Returns:
    A list of 1-D integer index arrays into ``lengths``, each of size
    ``batch_size`` (the last may be smaller unless ``drop_remainder``).
    Together they cover every example exactly once (but the dropped ones).

  Example:
    >>> import numpy as np, jaxrnn
    >>> lengths = np.array([5, 1, 9, 2, 8, 1])
    >>> [b.tolist() for b in jaxrnn.bucket_by_length(lengths, 2)]
    [[1, 5], [3, 0], [4, 2]]
    >>> batches = jaxrnn.bucket_by_length(lengths, 4, rng=np.random.default_rng(0))
    >>> sorted(np.concatenate(batches).tolist())
    [0, 1, 2, 3, 4, 5]
  """
  lengths = _check_lengths(lengths)
  batch_size = _check_int(batch_size, "batch_size", minimum=1)
  num_buckets = _check_int(num_buckets, "num_buckets", minimum=1)
  if rng is not None and not isinstance(rng, np.random.Generator):
    raise TypeError(
        "rng: expected a numpy.random.Generator (numpy.random.default_rng(seed))"
        f" or None, got {type(rng).__name__}")
  indices = np.arange(lengths.shape[0])
  remainder = lengths.shape[0] % batch_size if drop_remainder else 0
  if remainder and rng is not None:
    indices = np.sort(rng.permutation(indices)[remainder:])
  order = indices[np.argsort(lengths[indices], kind="stable")]
  if remainder and rng is None:
    order = order[:-remainder]
  if rng is not None:
    buckets = np.array_split(order, num_buckets)
    order = np.concatenate([rng.permutation(b) for b in buckets])
  batches = [order[i:i + batch_size] for i in range(0, order.shape[0], batch_size)]
  if rng is not None:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches
