"""The chunkwise engine: a matrix memory with stabilised exponential gates
(`hooks.Chunkwise`, the mLSTM), evaluated a chunk of steps at a time.

Per head, over a chunk of L steps that starts from ``(C_0, n_0, m_0)``,
with ``b_t = Σ_{u≤t} log f_u`` (steps counted within the chunk), the
recurrence of `hooks.Chunkwise` unrolls to::

  m_t = max(b_t + m_0, max_{s≤t} (b_t - b_s + ĩ_s))
  C_t = exp(b_t + m_0 - m_t) C_0 + Σ_{s≤t} exp(b_t - b_s + ĩ_s - m_t) k_s v_s^T

and ``n_t`` likewise with ``k_s``. Every step's ``q_t C_t`` and ``q_t ·
n_t`` are then a product with ``C_0`` and an ``(L, L)`` product within the
chunk, for all chunks at once. Only the chunks' first states are
sequential: their stabilisers by a scan of one number per head, then the
states by a scan of multiply-adds, one per chunk. This is mlstm_kernels'
``chunkwise/native`` formulation; each step's stabiliser is the recurrent
one, so the two forms compute the same numbers.

Padding, resets and reversal map onto the same sums. A padded step is the
identity (``log f = 0``, ``ĩ = -∞``: it adds nothing and decays nothing).
A reset at step ``r`` removes every term from before ``r`` (their log
weights become -∞) and adds the initial carry, weighted ``exp(b_t -
b_{r-1} + m_init - m_t)``. A reversed scan is the forward one over the
steps in reverse order. Plain JAX throughout, so every transformation
composes.
"""

import jax
import jax.numpy as jnp

from jaxrnn._src.engine import steps as steps_lib


def _flip(a):
  return None if a is None else a[::-1]


def _first_states(log_decay, log_in, m_0, weights, k_T, v, initial_terms, C_0, n_0, unroll):
  """The state at each chunk's first step, ``(C, n, m)`` with a chunk axis
  after the heads', and the state after the last chunk.

  ``log_decay: (K, N)``: the log decay of a chunk's first state through the
  chunk; ``log_in: (K, N)`` the largest log weight of the chunk's own
  terms; ``weights: (K, N, L)`` the log weight of each step's term in the
  chunk's last state; ``initial_terms``: None, or the initial carry's share
  of each chunk's last state, ``(log weight (K, N), C_init, n_init)``;
  ``unroll``: chunks per iteration of the two scans.
  """

  def stabiliser(m, inputs):
    log_decay_c, log_in_c = inputs
    return jnp.maximum(log_decay_c + m, log_in_c), m

  m_last, m_first = jax.lax.scan(stabiliser, m_0, (log_decay.T, log_in.T), unroll=unroll)
  m_first = m_first.T
  m_next = jnp.concatenate([m_first[:, 1:], m_last[:, None]], axis=1)
  w = jnp.exp(weights - m_next[..., None])
  U = jnp.einsum("kcds,kcse->kcde", k_T, v * w[..., None])
  u = jnp.einsum("kcds,kcs->kcd", k_T, w)
  if initial_terms is not None:
    log_init, C_init, n_init = initial_terms
    w_init = jnp.exp(log_init - m_next)
    U = U + w_init[..., None, None] * C_init[:, None]
    u = u + w_init[..., None] * n_init[:, None]
  decay = jnp.exp(log_decay + m_first - m_next)

  def step(state, inputs):
    C, n = state
    decay_c, U_c, u_c = inputs
    return (decay_c[:, None, None] * C + U_c, decay_c[:, None] * n + u_c), state

  (C_last, n_last), (C_first, n_first) = jax.lax.scan(
      step, (C_0, n_0), (decay.T, jnp.moveaxis(U, 1, 0), jnp.moveaxis(u, 1, 0)), unroll=unroll)
  first = (jnp.moveaxis(C_first, 0, 1), jnp.moveaxis(n_first, 0, 1), m_first)
  return first, (C_last, n_last, m_last)


def _running_max(a, start):
  """The running maximum of ``a: (K, N, L)`` along its last axis,
  restarting where ``start: (N, L)`` is True (None: nowhere)."""
  if start is None:
    return jax.lax.cummax(a, axis=2)

  def combine(x, y):
    (a_x, start_x), (a_y, start_y) = x, y
    return jnp.where(start_y, a_y, jnp.maximum(a_x, a_y)), start_x | start_y

  return jax.lax.associative_scan(combine, (a, jnp.broadcast_to(start, a.shape)), axis=2)[0]


def memory(q, k, v, i, log_f, state, readout, chunk_size, *, valid=None, reset=None,
           initial=None, carries=False):
  """Every step's ``h`` of the recurrence of `hooks.Chunkwise`, a chunk of
  ``chunk_size`` steps at a time: ``(h, states, last)``.

  ``q, k: (T, K, d)``, ``v: (T, K, e)``, ``i, log_f: (T, K)``, in scan
  order; ``valid: (T,)`` bool (None: every step) marks the steps that are
  not padding; ``state`` and ``initial``: ``(C, n, m)``, the state before
  the first step and the one a reset (``reset: (T,)`` bool, or None)
  restarts from. ``h: (T, K, e)``; ``states``: with ``carries``, ``(C, n,
  m)`` after every step, time first (else None); ``last``: the state after
  the last step.
  """
  num_steps = q.shape[0]
  C_0, n_0, m_0 = state
  # Heads first, then chunks of L steps: (T, K, ...) -> (K, N, L, ...); the
  # steps after the last are padding. The loops over up to 64 chunks are
  # unrolled (a loop's stacked outputs cost more, measured), longer ones
  # 8 chunks per iteration (a bounded program); a symbolic T (jax.export)
  # takes whole chunks and a loop that is not unrolled.
  if isinstance(num_steps, int):
    L = min(chunk_size, num_steps)
    N = -(-num_steps // L)
    unroll = N if N <= 64 else 8
  else:
    L, N, unroll = chunk_size, (num_steps + chunk_size - 1) // chunk_size, 1
  pad = N * L - num_steps

  def chunked(a, fill, heads=True):
    if not isinstance(pad, int) or pad:
      a = jnp.concatenate([a, jnp.full((pad,) + a.shape[1:], fill, a.dtype)])
    a = jnp.reshape(a, (N, L) + a.shape[1:])
    return jnp.moveaxis(a, 2, 0) if heads else a

  q, k_T, v = chunked(q, 0), jnp.swapaxes(chunked(k, 0), -1, -2), chunked(v, 0)
  if valid is not None:  # padding: the identity step (log f = 0 here, ĩ = -∞ below)
    log_f = jnp.where(valid[:, None], log_f, jnp.zeros((), log_f.dtype))
  # Step s's term enters step t's state (s <= t in the same segment) with
  # log weight b_t + c_s, c_s = ĩ_s - b_s; the largest of them, b_t + max_s
  # c_s. b and c come from one product with a triangular matrix, so that
  # the (L, L) loops below read them instead of recomputing them (and the
  # gates' transposes) at every entry (measured).
  tri, eye = jnp.triu(jnp.ones((L, L), i.dtype)), jnp.eye(L, dtype=i.dtype)
  cumulative = jnp.block([[tri, -tri], [jnp.zeros_like(eye), eye]])  # [log f, ĩ] -> [b, c]
  log_f = chunked(log_f, 0)
  gates = jnp.concatenate([log_f, chunked(i, 0)], axis=-1)
  b, c = jnp.split(jnp.einsum("kcu,ut->kct", gates, cumulative), 2, axis=-1)  # (K, N, L)
  if valid is not None or not isinstance(pad, int) or pad:
    valid = jnp.ones((num_steps,), bool) if valid is None else valid
    c = jnp.where(chunked(valid, False, heads=False)[None], c, -jnp.inf)
  if reset is not None:
    reset = chunked(reset, False, heads=False)  # (N, L)
  own = b + _running_max(c, reset)
  mask = jnp.tril(jnp.ones((1, 1, L, L), bool))
  log_last = b[..., -1:] + c  # the terms' log weights in the chunk's last state
  log_prev = b  # the chunk's first state's, before its stabiliser is added
  initial_terms = log_init = None
  if reset is not None:
    C_init, n_init, m_init = initial
    segment = jnp.cumsum(reset, axis=-1)[None]  # (1, N, L)
    mask = mask & (segment[..., :, None] == segment[..., None, :])
    log_last = jnp.where(segment == segment[..., -1:], log_last, -jnp.inf)
    # After a reset at r, the initial carry's: b_t - b_{r-1} + m_init.
    last = jax.lax.cummax(jnp.where(reset, jnp.arange(L)[None], 0), axis=1)
    b_before = jnp.take_along_axis(b - log_f, jnp.broadcast_to(last, b.shape), axis=-1)
    log_init = jnp.where(segment > 0, b - b_before + m_init[:, None, None], -jnp.inf)
    log_prev = jnp.where(segment == 0, b, -jnp.inf)
    initial_terms = (log_init[..., -1], C_init, n_init)
  log_in = own[..., -1]
  if initial_terms is not None:
    log_in = jnp.maximum(log_in, initial_terms[0])
  (C_first, n_first, m_first), last = _first_states(
      log_prev[..., -1], log_in, m_0, log_last, k_T, v, initial_terms, C_0, n_0, unroll)

  # Every step: the chunk's first state, its own chunk's terms and, after a
  # reset, the initial carry, each weighted relative to the step's m.
  log_prev = log_prev + m_first[..., None]
  m = jnp.maximum(log_prev, own)
  if log_init is not None:
    m = jnp.maximum(m, log_init)
  P = jnp.exp(jnp.where(mask, (b - m)[..., :, None] + c[..., None, :], -jnp.inf))
  S = jnp.einsum("kctd,kcds->kcts", q, k_T) * P
  w_prev = jnp.exp(log_prev - m)
  numerator = (jnp.einsum("kcts,kcse->kcte", S, v)
               + w_prev[..., None] * jnp.einsum("kctd,kcde->kcte", q, C_first))
  denominator = jnp.sum(S, axis=-1) + w_prev * jnp.einsum("kctd,kcd->kct", q, n_first)
  if log_init is not None:
    w_init = jnp.exp(log_init - m)
    numerator = numerator + w_init[..., None] * jnp.einsum("kctd,kde->kcte", q, C_init)
    denominator = denominator + w_init * jnp.einsum("kctd,kd->kct", q, n_init)

  def by_time(a):  # (K, N, L, ...) -> (T, K, ...)
    a = jnp.moveaxis(a, 0, 2)
    return jnp.reshape(a, (N * L,) + a.shape[2:])[:num_steps]

  states = None
  if carries:
    C = (w_prev[..., None, None] * C_first[:, :, None]
         + jnp.einsum("kcts,kcds,kcse->kctde", P, k_T, v))
    n = w_prev[..., None] * n_first[:, :, None] + jnp.einsum("kcts,kcds->kctd", P, k_T)
    if log_init is not None:
      C = C + w_init[..., None, None] * C_init[:, None, None]
      n = n + w_init[..., None] * n_init[:, None, None]
    states = (by_time(C), by_time(n), by_time(m))
  return by_time(readout(numerator, denominator, m)), states, last


def run(cell, hooks, plan, params, carry, xs, steps, initial, h_mask, zoneout):
  """The ``chunkwise`` path of `engine.PATHS`: ``(ys, carry)``. ``cell``,
  ``h_mask`` and ``zoneout`` are unused: `jaxrnn.rnn` runs neither dropout
  nor zoneout on this cell."""
  del cell, h_mask, zoneout
  chunkwise = hooks.chunkwise
  zx = hooks.project(params, xs)
  valid, reset = steps.valid, steps.reset
  if plan.reverse:
    zx = jax.tree_util.tree_map(_flip, zx)
    valid, reset = _flip(valid), _flip(reset)
  q, k, v, i, log_f = chunkwise.gates(params, zx)
  state = tuple(a.astype(q.dtype) for a in chunkwise.to_state(carry))
  if q.shape[0] == 0:
    ys = chunkwise.outputs(params, v, zx)
    carries = chunkwise.from_state(*(jnp.zeros((0,) + a.shape, a.dtype) for a in state))
    return ((ys, carries) if plan.carries else ys), carry
  if reset is not None:
    initial = tuple(a.astype(q.dtype) for a in chunkwise.to_state(initial))
  h, states, last = memory(q, k, v, i, log_f, state, chunkwise.readout, chunkwise.chunk_size,
                           valid=valid, reset=reset, initial=initial, carries=plan.carries)
  ys = chunkwise.outputs(params, h, zx)
  if plan.carries:
    ys = (ys, chunkwise.from_state(*states))
  if plan.reverse:
    ys = jax.tree_util.tree_map(_flip, ys)
  if steps.valid is not None:
    ys = steps_lib.zero_unless(steps.valid, ys)
  final = chunkwise.from_state(*last)
  return ys, jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), final, carry)
