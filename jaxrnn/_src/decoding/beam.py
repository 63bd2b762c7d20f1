"""Beam search over the log-probabilities of a step function."""

import math
import numbers
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks

Step = Callable[[Any, jax.Array], Tuple[Any, jax.Array]]


def beam_search(step: Step, carry: Any, start: Any, *, beam_size: int, max_length: int,
                end_token: int, length_penalty: float = 0.0) -> Tuple[jax.Array, jax.Array]:
  r"""The ``beam_size`` best continuations of ``start`` under ``step``.

  A hypothesis is a sequence of tokens ``y_1, ..., y_n`` fed one at a time
  after ``start``. It ends when it emits ``end_token`` (which it includes) or
  when it reaches ``n = max_length``. Its score is GNMT's normalised
  log-probability (Wu et al. 2016, with their ``α`` as ``length_penalty``):

  .. math::
    s(y) = \frac{\sum_{t=1}^{n} \log p(y_t \mid \text{start}, y_{<t})}
                {\left((5 + n) / 6\right)^{\alpha}}

  The search keeps ONE pool of ``beam_size`` hypotheses. At each of the
  ``max_length`` steps (a ``jax.lax.scan``), every alive hypothesis offers
  its ``V`` one-token extensions and every finished one offers itself (it
  extends by ``end_token`` at zero cost and keeps its score); one
  ``jax.lax.top_k`` over these ``beam_size * V`` candidates keeps the
  ``beam_size`` best by their score as if they ended there: ``s(y)`` for a
  finished hypothesis, its sum over its current length's penalty for an
  alive one. All alive candidates of a step have the same length, so among
  them this is the order of their sums. This rule is exact in two limits:

  * ``beam_size=1`` is greedy decoding (argmax at every step until
    ``end_token``) for any ``length_penalty``. A two-pool search, which keeps
    ``beam_size`` alive hypotheses beside the finished ones, is not: there a
    longer hypothesis can outscore the greedy one once ``α > 0``.
  * With ``beam_size`` at least the number of possible sequences, no
    hypothesis is ever dropped, and the result is the exact top
    ``beam_size`` by ``s(y)``.

  In between it is the usual heuristic. The carries of the beam are
  reordered by gathering along the beam axis after each step.

  Args:
    step: ``step(carry, token) -> (carry, log_probs)`` for ONE hypothesis:
      ``token`` is an int32 scalar and ``log_probs`` are normalised
      log-probabilities of shape ``(V,)``. `beam_search` vmaps it over the
      beam.
    carry: the initial carry of ``step`` (any pytree), for one example.
    start: the first token fed to ``step``, an integer scalar (need not be
      in ``[0, V)``).
    beam_size: the number of hypotheses kept (static int >= 1).
    max_length: the most tokens a hypothesis has (static int >= 1).
    end_token: the token that ends a hypothesis, an int in ``[0, V)``.
    length_penalty: ``α`` above (static float); 0 ranks by the plain sum.

  Returns:
    ``(tokens, scores)``: ``tokens`` of shape ``(beam_size, max_length)``,
    int32, best first, without ``start``; after a hypothesis's
    ``end_token`` it holds ``end_token``. ``scores`` of shape
    ``(beam_size,)``, in descending order, in the (at least float32) dtype
    of ``log_probs``. If fewer than ``beam_size`` hypotheses exist, the
    extra slots have score ``-inf``. Every slot at ``-inf`` holds
    ``end_token`` only (hypotheses of probability zero are among them).
    Under ``jax.vmap`` over ``carry`` (and ``start``), every result has a
    leading batch axis.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> # A bigram model on tokens {0: end, 1, 2}; its carry counts the steps.
    >>> table = jnp.log(jnp.array([[0.1, 0.6, 0.3],
    ...                            [0.5, 0.1, 0.4],
    ...                            [0.2, 0.2, 0.6]]))
    >>> step = lambda count, token: (count + 1, table[token])
    >>> tokens, scores = jaxrnn.beam_search(step, 0, 1, beam_size=2, max_length=3,
    ...                                     end_token=0)
    >>> tokens
    Array([[0, 0, 0],
           [2, 2, 2]], dtype=int32)
    >>> [round(float(p), 3) for p in jnp.exp(scores)]  # 0.5 and 0.4 * 0.6 * 0.6
    [0.5, 0.144]

  References:
    Wu, Y. et al. (2016). Google's neural machine translation system:
    bridging the gap between human and machine translation.
    arXiv:1609.08144, section 7.
  """
  if not callable(step):
    raise TypeError(f"step: expected a callable, got {type(step).__name__}")
  beam_size = checks.check_positive_int(beam_size, "beam_size")
  max_length = checks.check_positive_int(max_length, "max_length")
  if isinstance(end_token, bool) or not isinstance(end_token, numbers.Integral):
    raise TypeError(f"end_token: expected an int, got {type(end_token).__name__} {end_token!r}")
  if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):
    raise TypeError(f"length_penalty: expected a real number, got "
                    f"{type(length_penalty).__name__} {length_penalty!r}")
  if not math.isfinite(length_penalty):
    raise ValueError(f"length_penalty: expected a finite number, got {length_penalty}")
  start = _check_start(start)
  carry = jax.tree_util.tree_map(jnp.asarray, carry)
  vocab, dtype = _check_step(step, carry, start)
  end_token = int(end_token)
  if not 0 <= end_token < vocab:
    raise ValueError(
        f"end_token: expected an int in [0, V) = [0, {vocab}) (V from step's "
        f"log_probs), got {end_token}")
  alpha = float(length_penalty)

  # Slot 0 holds the empty hypothesis. The others start finished at -inf, so
  # they offer only end_token and stay the documented padding slots.
  finished = jnp.arange(beam_size) > 0
  raw = jnp.where(finished, -jnp.inf, 0.0).astype(dtype)  # sums of log-probs
  init = (
      jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (beam_size,) + x.shape), carry),
      jnp.full((beam_size,), start, jnp.int32),                   # last tokens
      jnp.full((beam_size, max_length), end_token, jnp.int32),    # hypotheses
      raw,
      raw,                                                        # scores s(y)
      finished,
  )
  is_end = (jnp.arange(vocab) == end_token)[None, :]

  def body(state, t):
    carries, last, tokens, raw, score, finished = state
    carries, log_probs = jax.vmap(step)(carries, last)
    alive_raw = raw[:, None] + log_probs.astype(dtype)                  # (beam, V)
    penalty = ((5 + (t + 1).astype(dtype)) / 6) ** alpha
    frozen = jnp.where(is_end, score[:, None], -jnp.inf)
    candidates = jnp.where(finished[:, None], frozen, alive_raw / penalty)
    score, flat = jax.lax.top_k(candidates.reshape(-1), beam_size)
    parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
    # A finished hypothesis ranks by its frozen score alone, so its raw sum
    # (now stale) is never read again.
    raw = alive_raw.reshape(-1)[flat]
    carries = jax.tree_util.tree_map(lambda x: jnp.take(x, parent, axis=0), carries)
    tokens = jnp.take(tokens, parent, axis=0).at[:, t].set(token)
    return (carries, token, tokens, raw, score, finished[parent] | (token == end_token)), None

  (_, _, tokens, _, scores, _), _ = jax.lax.scan(
      body, init, jnp.arange(max_length, dtype=jnp.int32))
  # After max_length steps every hypothesis has ended, so each slot's
  # ranking score is its final s(y), already in descending order. With fewer
  # than beam_size finite candidates, top_k fills up with -inf ones, maybe a
  # finished parent's other columns: such slots are padding.
  return jnp.where(jnp.isneginf(scores)[:, None], end_token, tokens), scores


def _check_start(start: Any) -> jax.Array:
  """``start`` as an int32 scalar, or raises."""
  if isinstance(start, bool) or not (
      isinstance(start, numbers.Integral)
      or (hasattr(start, "dtype") and jnp.issubdtype(start.dtype, jnp.integer))):
    raise TypeError(f"start: expected an integer scalar, got {checks.describe(start)}")
  if np.shape(start) != ():
    raise ValueError(
        f"start: expected an integer scalar, got shape {tuple(np.shape(start))}; "
        "for a batch, jax.vmap beam_search over carry and start")
  return jnp.asarray(start, jnp.int32)


def _check_step(step: Step, carry: Any, start: jax.Array) -> Tuple[int, np.dtype]:
  """The vocabulary size and score dtype of ``step``'s output, from shapes alone."""
  out = jax.eval_shape(step, carry, start)
  if not (isinstance(out, tuple) and len(out) == 2):
    raise TypeError(f"step: expected to return (carry, log_probs), got {type(out).__name__}")
  new_carry, log_probs = out
  if not isinstance(log_probs, jax.ShapeDtypeStruct):
    raise TypeError(
        f"step: expected log_probs to be an array of shape (V,), got "
        f"{type(log_probs).__name__}")
  if len(log_probs.shape) != 1:
    raise ValueError(
        f"step: expected log_probs of shape (V,) for one hypothesis (beam_search "
        f"vmaps step over the beam), got shape {tuple(log_probs.shape)}")
  if not jnp.issubdtype(log_probs.dtype, jnp.floating):
    raise TypeError(f"step: expected floating-point log_probs, got dtype {log_probs.dtype}")
  checks.check_carry(new_carry, carry, "beam_search", name="step's returned carry")
  return log_probs.shape[0], checks.accumulation_dtype(log_probs.dtype)
