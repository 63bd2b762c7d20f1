"""Independent float64 NumPy implementations of jaxrnn's cells and layers.

Written from the equations of the papers and of the contract, never from
jaxrnn's code. ONE reference per cell family, with every option folded in:

* Elman: ``h_t = φ(x W_x + b_x + h W_h + b_h)``.
* LSTM (`lstm_step`, also `conv_lstm` with convolution products):
  ``z = LN(x W_x) + LN(h W_h) + b = [i, f, g, o]``; with peepholes
  ``z^i += w^i ⊙ c``, ``z^f += w^f ⊙ c``; ``c_t = σ(z^f) c + σ(z^i)
  tanh(z^g)``; with peepholes ``z^o += w^o ⊙ c_t``; ``h_t = σ(z^o)
  tanh(LN(c_t))``, then ``h_t W_hr`` with a projection (Hochreiter &
  Schmidhuber 1997; Gers & Schmidhuber 2000; Ba et al. 2016, section 3.1).
* GRU (gates r, z, n), reset after: ``n = tanh(LN(x W_x)^n + b_x^n + r ⊙
  (LN(h W_h)^n + b_h^n))``; reset before: ``n = tanh(x W_xn + b_xn + (r ⊙ h)
  W_hn + b_hn)``; ``h_t = (1 - z) n + z h``.
* MGU (Zhou et al. 2016), minGRU and minLSTM (Feng et al. 2024), LRU
  (Orvieto et al. 2023).

Every step takes ``h_mask`` (variational recurrent dropout: the mask
multiplies ``h_{t-1}`` wherever it enters a recurrent product, Gal &
Ghahramani 2016) where the cell has a recurrent product, and ``dot``, the
product ``dot(a, W)`` (``a @ W``; `bf16_dot` models the bfloat16 policy:
both operands rounded to bfloat16, the sum exact).

Sequences (`run`) follow the ``length`` and ``reset`` contracts literally:
only the valid prefix is ever looked at, a reversed run visits
``xs[length-1], ..., xs[0]``, outputs are aligned with the inputs, padded
outputs are zero, and a reset restarts the carry at the first step of each
packed segment (a reversed run at each segment's last step).

The module also holds the table of cells shared by the test files
(`CASES`), each paired with its reference step, and a few small helpers.
"""

import functools
from typing import Callable, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
import jaxrnn

# Sizes shared by the test files (small: compile time dominates).
D = 3  # input size
H = 4  # hidden size
P = 2  # LSTM projection size
T = 5  # sequence length
EPS = 1e-5  # the layer normalisation's default eps


# ---------------------------------------------------------------------------
# Conversions.


def np_params(params) -> dict:
  """A jaxrnn params NamedTuple as a dict of float64 arrays (None kept).

  A nested `LayerNormParams` becomes one ``(2, N)`` array ``[scale,
  offset]``.
  """
  return {k: None if v is None else np.asarray(v, np.float64)
          for k, v in params._asdict().items()}


def np_carry(carry):
  """A carry as float64: an array, or a tuple ``(h, c)`` for an LSTMState."""
  if isinstance(carry, tuple):
    return tuple(np.asarray(c, np.float64) for c in carry)
  return np.asarray(carry, np.float64)


def to_bf16(a):
  """``a`` rounded to bfloat16 (to nearest even), back in float64."""
  return np.asarray(a, np.float32).astype(jnp.bfloat16).astype(np.float64)


# ---------------------------------------------------------------------------
# Building blocks.


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def relu(z):
  return np.maximum(z, 0.0)


def matmul(a, W):
  return a @ W


def bf16_dot(a, W):
  """The bfloat16 policy's product: operands in bfloat16, exact sum."""
  return to_bf16(a) @ to_bf16(W)


def conv2d_same(x, w, dot=matmul):
  """``out[r, c] = Σ_ij dot(xpad[r + i, c + j], w[i, j])``, stride 1, 'SAME'
  (a cross-correlation, as every deep learning library computes it)."""
  kh, kw = w.shape[:2]
  rows, cols = x.shape[:2]
  xpad = np.zeros((rows + kh - 1, cols + kw - 1, x.shape[2]))
  xpad[kh // 2:kh // 2 + rows, kw // 2:kw // 2 + cols] = x
  out = np.zeros((rows, cols, w.shape[3]))
  for r in range(rows):
    for c in range(cols):
      for i in range(kh):
        for j in range(kw):
          out[r, c] += dot(xpad[r + i, c + j], w[i, j])
  return out


def layer_norm(v, p, eps=EPS):
  """``γ ⊙ (v - mean v) / sqrt(var v + eps) + β`` over the last axis;
  ``p = [γ, β]`` (see `np_params`), or None for the identity."""
  if p is None:
    return v
  scale, offset = p
  mu = v.mean(axis=-1, keepdims=True)
  var = ((v - mu) ** 2).mean(axis=-1, keepdims=True)
  return (v - mu) / np.sqrt(var + eps) * scale + offset


def _bias(p, *names):
  """The sum of the biases ``p[name]`` that are present (0 without any)."""
  return sum((p[n] for n in names if p.get(n) is not None), 0.0)


def _masked(h, h_mask):
  return h if h_mask is None else h * h_mask


def _gates(z, k):
  """``z``'s k equal blocks along the last axis."""
  n = z.shape[-1] // k
  return [z[..., j * n:(j + 1) * n] for j in range(k)]


# ---------------------------------------------------------------------------
# Cells: step(p, carry, x) -> (carry, y), p from `np_params`.


def elman_step(p, h, x, activation=np.tanh, *, h_mask=None, dot=matmul):
  z = dot(x, p["W_x"]) + dot(_masked(h, h_mask), p["W_h"]) + _bias(p, "b_x", "b_h")
  h_new = activation(z)
  return h_new, h_new


def lstm_step(p, carry, x, *, h_mask=None, dot=matmul, conv=False, eps=EPS):
  """The LSTM with every option: biases ``b_x``, ``b_h`` (or conv_lstm's
  one ``b``), peepholes ``W_c``, layer norm ``ln_x``, ``ln_h``, ``ln_c``,
  projection ``W_hr``; with ``conv`` the two products are 'SAME'
  convolutions over ``(rows, cols, channels)`` maps."""
  h, c = carry
  product = functools.partial(conv2d_same, dot=dot) if conv else dot
  zx = layer_norm(product(x, p["W_x"]), p.get("ln_x"), eps)
  zh = layer_norm(product(_masked(h, h_mask), p["W_h"]), p.get("ln_h"), eps)
  z_i, z_f, z_g, z_o = _gates(zx + zh + _bias(p, "b_x", "b_h", "b"), 4)
  W_c = p.get("W_c")
  if W_c is not None:
    z_i = z_i + W_c[0] * c
    z_f = z_f + W_c[1] * c
  c_new = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_g)
  if W_c is not None:  # the output gate sees the new cell state
    z_o = z_o + W_c[2] * c_new
  h_new = sigmoid(z_o) * np.tanh(layer_norm(c_new, p.get("ln_c"), eps))
  if p.get("W_hr") is not None:
    h_new = dot(h_new, p["W_hr"])
  return (h_new, c_new), h_new


def conv_lstm_step(p, carry, x, *, h_mask=None, dot=matmul):
  return lstm_step(p, carry, x, h_mask=h_mask, dot=dot, conv=True)


def gru_step(p, h, x, reset_after=True, *, h_mask=None, dot=matmul, eps=EPS):
  h_in = _masked(h, h_mask)
  W_hr, W_hz, W_hn = _gates(p["W_h"], 3)
  x_r, x_z, x_n = _gates(layer_norm(dot(x, p["W_x"]), p.get("ln_x"), eps)
                         + _bias(p, "b_x"), 3)
  b_hr, b_hz, b_hn = _gates(np.zeros(3 * h.shape[-1]) + _bias(p, "b_h"), 3)
  if reset_after:
    h_r, h_z, h_n = _gates(layer_norm(dot(h_in, p["W_h"]), p.get("ln_h"), eps), 3)
    r = sigmoid(x_r + h_r + b_hr)
    z = sigmoid(x_z + h_z + b_hz)
    n = np.tanh(x_n + r * (h_n + b_hn))
  else:
    r = sigmoid(x_r + dot(h_in, W_hr) + b_hr)
    z = sigmoid(x_z + dot(h_in, W_hz) + b_hz)
    n = np.tanh(x_n + dot(r * h_in, W_hn) + b_hn)
  h_new = (1 - z) * n + z * h
  return h_new, h_new


def gru_before_step(p, h, x, **options):
  return gru_step(p, h, x, reset_after=False, **options)


def mgu_step(p, h, x, *, h_mask=None, dot=matmul):
  """Zhou et al. 2016: ``f = σ(x W_xf + h W_hf + b_f)``, ``h̃ = tanh(x W_xh
  + (f ⊙ h) W_hh + b_h)``, ``h_t = (1 - f) h + f h̃``."""
  h_in = _masked(h, h_mask)
  W_hf, W_hh = _gates(p["W_h"], 2)
  x_f, x_h = _gates(dot(x, p["W_x"]) + _bias(p, "b"), 2)
  f = sigmoid(x_f + dot(h_in, W_hf))
  cand = np.tanh(x_h + dot(f * h_in, W_hh))
  h_new = (1 - f) * h + f * cand
  return h_new, h_new


def min_gru_step(p, h, x, *, dot=matmul):
  """Feng et al. 2024, minGRU: z = σ(Linear_z(x)), h̃ = Linear_h(x)."""
  k_z, h_tilde = _gates(dot(x, p["W_x"]) + _bias(p, "b"), 2)
  z = sigmoid(k_z)
  h_new = (1 - z) * h + z * h_tilde
  return h_new, h_new


def min_lstm_step(p, h, x, *, dot=matmul):
  """Feng et al. 2024, minLSTM: normalised f and i from the input."""
  k_f, k_i, h_tilde = _gates(dot(x, p["W_x"]) + _bias(p, "b"), 3)
  f, i = sigmoid(k_f), sigmoid(k_i)
  h_new = f / (f + i) * h + i / (f + i) * h_tilde
  return h_new, h_new


def lru_step(p, state, x, *, dot=matmul):
  """Orvieto et al. 2023: h = λ h + γ (x B), y = Re(h C) + D x."""
  h = state[0] + 1j * state[1]
  lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
  Bx = dot(x, p["B_re"]) + 1j * dot(x, p["B_im"])
  h = lam * h + np.exp(p["gamma_log"]) * Bx
  y = dot(np.real(h), p["C_re"]) - dot(np.imag(h), p["C_im"]) + p["D"] * x
  return (np.real(h), np.imag(h)), y


# ---------------------------------------------------------------------------
# Layers.


def _zeros_like(carry):
  return tuple(np.zeros_like(c) for c in carry) if isinstance(carry, tuple) \
      else np.zeros_like(carry)


def run(step, p, xs, carry, out_size, length=None, reverse=False, reset=None,
        initial=None):
  """A cell over ``xs`` (T, ...): returns ``(ys (T, *out), final carry)``.

  ``out_size``: an int, or the shape of one output. ``reset: (T,)`` bools
  marks the first step of each packed segment: the carry restarts from
  ``initial`` (zeros by default) there; a reversed run, which walks each
  segment from its end, restarts after the step before a segment start.
  """
  xs = np.asarray(xs, np.float64)
  num_steps = xs.shape[0]
  n = num_steps if length is None else int(length)
  out = (out_size,) if isinstance(out_size, (int, np.integer)) else tuple(out_size)
  ys = np.zeros((num_steps,) + out)
  reset = np.zeros(num_steps, bool) if reset is None else np.asarray(reset, bool)
  initial = _zeros_like(carry) if initial is None else initial
  for t in (range(n - 1, -1, -1) if reverse else range(n)):  # never xs[n:]
    restart = (t + 1 < n and reset[t + 1]) if reverse else reset[t]
    if restart:
      carry = initial
    carry, ys[t] = step(p, carry, xs[t])
  return ys, carry


MERGES = {
    "concat": lambda a, b: np.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


def run_bidirectional(step_f, step_b, p_f, p_b, xs, carry_f, carry_b, out_f,
                      out_b, length=None, merge="concat", reset=None):
  ys_f, c_f = run(step_f, p_f, xs, carry_f, out_f, length, reset=reset)
  ys_b, c_b = run(step_b, p_b, xs, carry_b, out_b, length, reverse=True, reset=reset)
  merge_fn = MERGES[merge] if isinstance(merge, str) else merge
  ys = merge_fn(ys_f, ys_b)
  n = xs.shape[0] if length is None else int(length)
  ys[n:] = 0.0
  return ys, (c_f, c_b)


def run_readout(p, xs, length=None, dot=matmul):
  ys = dot(np.asarray(xs, np.float64), p["W_hy"]) + p["b_y"]
  n = ys.shape[0] if length is None else int(length)
  ys[n:] = 0.0
  return ys


# ---------------------------------------------------------------------------
# The shared table of cells.


class Case(NamedTuple):
  name: str
  make: Callable[[], jaxrnn.Cell]  # a fresh jaxrnn cell
  step: Callable  # its NumPy reference step (takes h_mask= and dot=)
  kind: str  # "elman" | "lstm" | "gru"
  out_size: int
  fused: bool  # whether its fused path has a hand-written tangent
  bias: bool = True


def _sin(z):
  return jnp.sin(z)


relu_elman_step = functools.partial(elman_step, activation=relu)

CASES = [
    Case("elman_tanh", lambda: jaxrnn.elman(H), elman_step, "elman", H, True),
    Case("elman_relu", lambda: jaxrnn.elman(H, activation="relu"),
         relu_elman_step, "elman", H, True),
    Case("elman_callable", lambda: jaxrnn.elman(H, activation=_sin),
         functools.partial(elman_step, activation=np.sin), "elman", H, False),
    Case("lstm", lambda: jaxrnn.lstm(H), lstm_step, "lstm", H, True),
    Case("lstm_proj", lambda: jaxrnn.lstm(H, proj_size=P), lstm_step, "lstm", P,
         False),
    Case("lstm_nobias", lambda: jaxrnn.lstm(H, bias=False), lstm_step, "lstm",
         H, True, bias=False),
    Case("gru", lambda: jaxrnn.gru(H), gru_step, "gru", H, True),
    Case("gru_before", lambda: jaxrnn.gru(H, reset_after=False), gru_before_step,
         "gru", H, False),
    Case("gru_nobias", lambda: jaxrnn.gru(H, bias=False), gru_step, "gru", H,
         True, bias=False),
]
CASE_IDS = [c.name for c in CASES]
BY_NAME = {c.name: c for c in CASES}


# ---------------------------------------------------------------------------
# Data helpers (NumPy random numbers: independent of jax.random).


def random_like(tree, seed: int, scale: float = 0.5):
  """Replaces every array leaf of ``tree`` by random normals of its dtype."""
  rng = np.random.default_rng(seed)
  # Cast by NumPy: a cast by jnp.asarray would compile a program per shape.
  return jax.tree_util.tree_map(
      lambda v: jnp.asarray(np.asarray(scale * rng.standard_normal(np.shape(v)), v.dtype)),
      tree)


def random_params(layer_or_cell, seed: int, input_size: int = D, dtype=None,
                  scale: float = 0.5):
  """Params of ``layer_or_cell`` with every entry (biases too) random.

  Only the structure, shapes and dtypes of ``init_params`` are used (traced,
  not run: nothing to compile); the numbers come from NumPy.
  """
  params = jax.eval_shape(
      lambda key: layer_or_cell.init_params(key, input_size, dtype),
      jax.random.key(seed))
  return random_like(params, seed + 1000, scale)


def random_xs(seed: int, shape=(T, D), dtype=np.float32):
  return jnp.asarray(np.asarray(np.random.default_rng(seed).standard_normal(shape), dtype))


def assert_tree_close(actual, expected, *, rtol=2e-5, atol=2e-5, err_msg=""):
  """Leaf-by-leaf ``assert_allclose`` (actual may be jax, expected NumPy)."""
  a_leaves, a_def = jax.tree_util.tree_flatten(actual)
  e_leaves, e_def = jax.tree_util.tree_flatten(expected)
  assert len(a_leaves) == len(e_leaves), (a_def, e_def)
  for a, e in zip(a_leaves, e_leaves):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)


def max_error(actual, expected):
  """The largest absolute difference over every leaf of two pytrees."""
  return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)),
                          initial=0.0))
             for a, e in zip(jax.tree_util.tree_leaves(actual),
                             jax.tree_util.tree_leaves(expected)))


def ref_run(case: Case, params, xs, carry, length=None, reverse=False, dot=matmul):
  """`run` for a `Case` on jax params/carry: returns float64 NumPy values."""
  return run(functools.partial(case.step, dot=dot), np_params(params), xs,
             np_carry(carry), case.out_size, length, reverse)


# ---------------------------------------------------------------------------
# Shared compiled programs. Compilation dominates the suite's run time, so
# each program is built once per process and called with traced `length`s
# and many data values.


@functools.lru_cache(maxsize=None)
def rnn_program(case_name: str, **options):
  """``(cell, f)``: ``f(params, xs, length, carry)`` returns the results
  ``(ys, carry)`` of ``rnn(cell, **options)`` and of its ``reverse=True``
  twin, jitted (``length`` traced)."""
  cell = BY_NAME[case_name].make()
  fwd = jaxrnn.rnn(cell, **options)
  rev = jaxrnn.rnn(cell, reverse=True, **options)

  @jax.jit
  def f(params, xs, length, carry):
    return (fwd.apply(params, xs, length=length, carry=carry),
            rev.apply(params, xs, length=length, carry=carry))

  return cell, f


def custom_merge(a, b):
  """A user merge that maps (0, 0) to non-zero (works on NumPy and jax)."""
  return a - 2 * b + 1.0


BIDIRECTIONAL_MERGES = ("concat", "sum", "mean", "mul", "custom")


def bidirectional_layer(merge="concat", **options):
  """gru forward, lstm backward (different cells catch swapped params)."""
  merge = custom_merge if merge == "custom" else merge
  return jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.lstm(H), merge=merge,
                              **options)


def ref_bidirectional(params, xs, carry, length=None, merge="concat", dot=matmul):
  merge = custom_merge if merge == "custom" else merge
  return run_bidirectional(
      functools.partial(gru_step, dot=dot), functools.partial(lstm_step, dot=dot),
      np_params(params.forward), np_params(params.backward),
      xs, np_carry(carry.forward), np_carry(carry.backward), H, H, length, merge)


@functools.lru_cache(maxsize=None)
def bidirectional_program():
  """``(layer, f)``: ``f(params, xs, length, carry)`` returns ``{merge: (ys,
  carry)}`` for every merge in `BIDIRECTIONAL_MERGES`, jitted."""
  layers = {m: bidirectional_layer(m) for m in BIDIRECTIONAL_MERGES}

  @jax.jit
  def f(params, xs, length, carry):
    return {m: layer.apply(params, xs, length=length, carry=carry)
            for m, layer in layers.items()}

  return layers["concat"], f


STACK_OUT = 2


def stack_layer(**options):
  """lstm_proj -> bidirectional(gru, relu elman) -> reversed gru_before ->
  readout."""
  return jaxrnn.stack(
      jaxrnn.rnn(jaxrnn.lstm(H, proj_size=P), **options),
      jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.elman(H, activation="relu"),
                           **options),
      jaxrnn.rnn(jaxrnn.gru(H, reset_after=False), reverse=True, **options),
      jaxrnn.readout(STACK_OUT),
  )


def ref_stack(params, xs, carry, length=None, dot=matmul):
  p0, p1, p2, p3 = params
  c0, c1, c2, _ = carry
  with_dot = lambda step: functools.partial(step, dot=dot)
  ys0, k0 = run(with_dot(lstm_step), np_params(p0), xs, np_carry(c0), P, length)
  ys1, k1 = run_bidirectional(
      with_dot(gru_step), with_dot(relu_elman_step),
      np_params(p1.forward), np_params(p1.backward), ys0,
      np_carry(c1.forward), np_carry(c1.backward), H, H, length)
  ys2, k2 = run(with_dot(gru_before_step), np_params(p2), ys1, np_carry(c2), H, length,
                reverse=True)
  ys3 = run_readout(np_params(p3), ys2, length, dot=dot)
  return ys3, (k0, k1, k2, ())


@functools.lru_cache(maxsize=None)
def stack_program():
  """``(layer, f)``: ``f(params, xs, length, carry) -> (ys, carries)``, jitted."""
  layer = stack_layer()
  return layer, jax.jit(
      lambda params, xs, length, carry: layer.apply(params, xs, length=length,
                                                    carry=carry))
