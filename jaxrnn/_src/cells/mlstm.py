"""The mLSTM of xLSTM: its step (`mlstm_step`) and the `mlstm` cell.

The specification is the authors' code, mlstm_kernels 2.0.6's
``mlstm_recurrent_step__native_fw``, around which the cell puts the
projections and the output gate. Its gates come from the input alone, so
besides the step (the sequential and reference methods) the cell has a
chunkwise-parallel form (`hooks.Chunkwise`, run by
`jaxrnn._src.engine.chunkwise`), tested against the step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import checks
from jaxrnn._src import initializers as inits
from jaxrnn._src.base import Cell
from jaxrnn._src.cells import common
from jaxrnn._src.engine import hooks

Array = jax.Array

EPS = 1e-6  # mlstm_kernels' eps in the normaliser's denominator


def chunk_size(head_size: int) -> int:
  """Steps per chunk of the chunkwise form: the head size, within [16, 64]
  (measured on the CPU, benchmarks/README.md)."""
  return min(64, max(16, head_size))


class MLSTMParams(NamedTuple):
  """Parameters of `mlstm` (D = input_size, H = hidden_size, K = num_heads).

  Head k owns units ``k H/K ... (k+1) H/K - 1`` of the query, key, value
  and output gate; the input and forget gates have one unit per head.
  """

  W_q: Array  # (D, H) queries
  W_k: Array  # (D, H) keys
  W_v: Array  # (D, H) values
  W_i: Array  # (D, K) input gate
  W_f: Array  # (D, K) forget gate
  b_i: Array  # (K,)
  b_f: Array  # (K,)
  W_o: Array  # (D, H) output gate
  b_o: Array  # (H,)


class MLSTMState(NamedTuple):
  """The carry of `mlstm`: per head a matrix memory, a normaliser and a
  stabiliser (d = H/K)."""

  C: Array  # (K, d, d): C[k, key unit, value unit]
  n: Array  # (K, d)
  m: Array  # (K,)


def readout(numerator: Array, denominator: Array, m: Array) -> Array:
  """``h̃ = numerator / (max(|denominator|, exp(-m)) + eps)``, per head:
  ``numerator: (..., K, d)``, ``denominator, m: (..., K)``."""
  denominator = jnp.maximum(jnp.abs(denominator), jnp.exp(-m)) + EPS
  return numerator / denominator[..., None]


def mlstm_step(state: MLSTMState, q: Array, k: Array, v: Array, i: Array, log_f: Array
               ) -> tuple[MLSTMState, Array]:
  """One step of the matrix memory: ``(state, h̃_t)``.

  ``q`` (scaled by ``d^{-1/2}``), ``k``, ``v``: ``(..., K, d)``; ``ĩ`` and
  ``log σ(f̃)``: ``(..., K)``; the state's arrays with the same leading
  axes.
  """
  C, n, m = state
  m_t = jnp.maximum(log_f + m, i)
  f_t, i_t = jnp.exp(log_f + m - m_t), jnp.exp(i - m_t)
  C_t = f_t[..., None, None] * C + i_t[..., None, None] * (k[..., :, None] * v[..., None, :])
  n_t = f_t[..., None] * n + i_t[..., None] * k
  numerator = jnp.einsum("...kd,...kde->...ke", q, C_t)
  denominator = jnp.einsum("...kd,...kd->...k", q, n_t)
  return MLSTMState(C_t, n_t, m_t), readout(numerator, denominator, m_t)


def _cell(hidden_size, num_heads, chunk=None) -> Cell:
  """`mlstm` with ``chunk`` steps per chunk of its chunkwise form (None:
  `chunk_size`'s)."""
  H, K = checks.check_heads(hidden_size, num_heads)
  d = H // K
  owner = f"mlstm(hidden_size={H}, num_heads={K})"
  widths = {"W_q": H, "W_k": H, "W_v": H, "W_i": K, "W_f": K, "W_o": H}

  def init_params(key, input_size, dtype=None):
    input_size, dtype = checks.init_args(input_size, dtype)
    k_q, k_k, k_v, k_o, k_i = jax.random.split(key, 5)
    small = jax.nn.initializers.normal(np.sqrt(2.0 / (5.0 * input_size)))
    draw = lambda k: inits.draw(small, k, (input_size, H), dtype)
    zeros = jnp.zeros((input_size, K), dtype)
    return MLSTMParams(
        W_q=draw(k_q), W_k=draw(k_k), W_v=draw(k_v), W_i=zeros, W_f=zeros,
        b_i=inits.draw(jax.nn.initializers.normal(0.1), k_i, (K,), dtype),
        b_f=jnp.linspace(3.0, 6.0, K, dtype=dtype), W_o=draw(k_o),
        b_o=jnp.zeros((H,), dtype))

  def check(params):
    checks.check_params(params, MLSTMParams, owner)
    checks.check_input_matrix(params.W_q, H, "params.W_q", owner)
    D = params.W_q.shape[0]
    for name, width in widths.items():
      checks.check_array_shape(getattr(params, name), (D, width), f"params.{name}", owner)
    for name, width in (("b_i", K), ("b_f", K), ("b_o", H)):
      checks.check_array_shape(getattr(params, name), (width,), f"params.{name}", owner)

  def project(params, xs):
    # zx = (q, k, v, õ, ĩ, f̃), one product each: splitting one product of
    # the concatenated weights copies every output (measured slower).
    product = lambda W, b=None: common.add(checks.matmul(xs, W), b)
    return (product(params.W_q), product(params.W_k), product(params.W_v),
            product(params.W_o, params.b_o), product(params.W_i, params.b_i),
            product(params.W_f, params.b_f))

  def gates(params, zx):
    del params
    heads = lambda a: jnp.reshape(a, a.shape[:-1] + (K, d))
    q, k, v, _, i, f = zx
    return heads(q) * (d ** -0.5), heads(k), heads(v), i, jax.nn.log_sigmoid(f)

  def outputs(params, h, zx):
    del params
    return jnp.reshape(h, h.shape[:-2] + (H,)) * jax.nn.sigmoid(zx[3])

  chunkwise = hooks.Chunkwise(
      gates=gates, readout=readout, outputs=outputs,
      to_state=lambda carry: (carry.C, carry.n, carry.m), from_state=MLSTMState,
      chunk_size=chunk or chunk_size(d), name="mlstm")

  def step(params, carry, zx_t, h_mask):
    del h_mask  # no recurrent product: `jaxrnn.rnn` refuses recurrent_dropout
    state, h = mlstm_step(carry, *gates(params, zx_t))
    return state, outputs(params, h, zx_t)

  return common.build(
      init_params=init_params, check=check, project=project,
      input_size=lambda params: params.W_q.shape[0],
      init_carry=common.zeros_carry((K, d, d), (K, d), (K,), make=MLSTMState),
      step=step, chunkwise=chunkwise, hidden_size=H, output_size=H,
      config=dict(kind="mlstm", hidden_size=H, num_heads=K))


def mlstm(hidden_size: int, *, num_heads: int = 1) -> Cell:
  r"""The mLSTM of xLSTM: a matrix memory per head, gated from the input.

  With ``q_t, k_t, v_t = x_t W_q, x_t W_k, x_t W_v`` split into K heads of
  d = H/K units, and per head the scalar gates ``ĩ_t = x_t W_i + b_i`` and
  ``f̃_t = x_t W_f + b_f``:

  .. math::
    m_t &= \max(\log σ(f̃_t) + m_{t-1}, \; ĩ_t), \quad
    f_t = \exp(\log σ(f̃_t) + m_{t-1} - m_t), \quad i_t = \exp(ĩ_t - m_t) \\
    C_t &= f_t C_{t-1} + i_t \, k_t v_t^⊤, \qquad n_t = f_t n_{t-1} + i_t k_t \\
    h̃_t &= \frac{q̂_t^⊤ C_t}{\max(|q̂_t^⊤ n_t|, \exp(-m_t)) + 10^{-6}},
    \quad q̂_t = q_t / \sqrt{d} \\
    y_t &= σ(x_t W_o + b_o) ⊙ h̃_t

  This is mlstm_kernels' ``mlstm_recurrent_step__native_fw`` per head, with
  the heads' ``h̃_t`` side by side. The stabiliser ``m`` follows a
  max-plus recurrence of the inputs and ``(C, n)`` a linear one given
  ``m``, so ``jaxrnn.rnn(cell, method="parallel")`` evaluates chunks of
  steps (d of them, within [16, 64]) with matrix products (mlstm_kernels'
  ``chunkwise/native`` form), equal to the step's recurrence;
  ``method="sequential"`` scans the step.

  Initialisation, as xlstm's mLSTM layer where it applies: ``W_q``,
  ``W_k``, ``W_v`` and ``W_o`` normal with variance ``2 / (5
  input_size)`` (its ``small_init``), ``W_i`` and ``W_f`` zeros, ``b_f``
  evenly spaced from 3 to 6 over the heads, ``b_i`` normal with standard
  deviation 0.1, ``b_o`` zeros.

  Args:
    hidden_size: H, the size of the output (d = H/K per head).
    num_heads: K, the number of heads; it must divide H.

  Returns:
    A `Cell` with params `MLSTMParams` ``(W_q, W_k, W_v: (input_size, H),
    W_i, W_f: (input_size, K), b_i, b_f: (K,), W_o: (input_size, H), b_o:
    (H,))``, carry `MLSTMState` ``(C: (K, d, d), n: (K, d), m: (K,))`` and
    outputs ``(H,)``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.mlstm(8, num_heads=2)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> params.W_q.shape, params.W_f.shape, params.b_f.tolist()
    ((3, 8), (3, 2), [3.0, 6.0])
    >>> carry, y = cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
    >>> carry.C.shape, carry.n.shape, carry.m.shape, y.shape
    ((2, 4, 4), (2, 4), (2,), (8,))
    >>> xs = jax.random.normal(jax.random.key(1), (100, 3))
    >>> run = lambda method: jax.jit(jaxrnn.rnn(cell, method=method).apply)
    >>> ys, c = run("parallel")(params, xs, length=90)
    >>> ys_seq, c_seq = run("sequential")(params, xs, length=90)
    >>> bool(jnp.allclose(ys, ys_seq, atol=1e-5)), bool(jnp.allclose(c.C, c_seq.C, atol=1e-5))
    (True, True)

  References:
    Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter
    & Hochreiter, xLSTM: Extended Long Short-Term Memory, 2024; Beck,
    Pöppel, Lippe & Hochreiter, Tiled Flash Linear Attention, 2025; the
    mlstm_kernels package (NXAI), ``mlstm_kernels/jax/recurrent/native_step.py``
    and ``mlstm_kernels/jax/chunkwise/native``.
  """
  return _cell(hidden_size, num_heads)
