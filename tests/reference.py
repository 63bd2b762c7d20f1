"""Independent float64 NumPy implementations of jaxrnn's cells and layers.

Written from the equations of the contract (not from jaxrnn's code):

* Elman: ``h_t = φ(x W_x + b_x + h W_h + b_h)``.
* LSTM: ``z = x W_x + b_x + h W_h + b_h = [i, f, g, o]``;
  ``c_t = σ(f) c + σ(i) tanh(g)``; ``h_t = σ(o) tanh(c_t)`` (then
  ``h_t W_hr`` with a projection).
* GRU (gates r, z, n), reset after: ``n = tanh(x W_xn + b_xn + r (h W_hn +
  b_hn))``; reset before: ``n = tanh(x W_xn + b_xn + (r h) W_hn + b_hn)``;
  ``h_t = (1 - z) n + z h``.

Sequences follow the ``length`` contract literally: only the valid prefix is
ever looked at, a reversed run visits ``xs[length-1], ..., xs[0]``, outputs
are aligned with the inputs and padded outputs are zero.

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


# ---------------------------------------------------------------------------
# Conversions.


def np_params(params) -> dict:
  """A jaxrnn params NamedTuple as a dict of float64 arrays (None kept)."""
  return {k: None if v is None else np.asarray(v, np.float64)
          for k, v in params._asdict().items()}


def np_carry(carry):
  """A carry as float64: an array, or a tuple ``(h, c)`` for an LSTMState."""
  if isinstance(carry, tuple):
    return tuple(np.asarray(c, np.float64) for c in carry)
  return np.asarray(carry, np.float64)


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _b(v, size):
  return np.zeros(size) if v is None else v


# ---------------------------------------------------------------------------
# Cells: step(p, carry, x) -> (carry, y), p from `np_params`.


def elman_step(p, h, x, activation=np.tanh):
  W_x, W_h = p["W_x"], p["W_h"]
  n = W_h.shape[0]
  z = x @ W_x + _b(p["b_x"], n) + h @ W_h + _b(p["b_h"], n)
  h_new = activation(z)
  return h_new, h_new


def relu(z):
  return np.maximum(z, 0.0)


def lstm_step(p, carry, x):
  h, c = carry
  W_x, W_h = p["W_x"], p["W_h"]
  n = W_x.shape[1] // 4
  z = x @ W_x + _b(p["b_x"], 4 * n) + h @ W_h + _b(p["b_h"], 4 * n)
  z_i, z_f, z_g, z_o = z[:n], z[n:2 * n], z[2 * n:3 * n], z[3 * n:]
  c_new = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_g)
  h_new = sigmoid(z_o) * np.tanh(c_new)
  if p.get("W_hr") is not None:
    h_new = h_new @ p["W_hr"]
  return (h_new, c_new), h_new


def gru_step(p, h, x, reset_after=True):
  W_x, W_h = p["W_x"], p["W_h"]
  n = W_h.shape[0]
  b_x, b_h = _b(p["b_x"], 3 * n), _b(p["b_h"], 3 * n)
  W_xr, W_xz, W_xn = W_x[:, :n], W_x[:, n:2 * n], W_x[:, 2 * n:]
  W_hr, W_hz, W_hn = W_h[:, :n], W_h[:, n:2 * n], W_h[:, 2 * n:]
  b_xr, b_xz, b_xn = b_x[:n], b_x[n:2 * n], b_x[2 * n:]
  b_hr, b_hz, b_hn = b_h[:n], b_h[n:2 * n], b_h[2 * n:]
  r = sigmoid(x @ W_xr + b_xr + h @ W_hr + b_hr)
  z = sigmoid(x @ W_xz + b_xz + h @ W_hz + b_hz)
  if reset_after:
    n_t = np.tanh(x @ W_xn + b_xn + r * (h @ W_hn + b_hn))
  else:
    n_t = np.tanh(x @ W_xn + b_xn + (r * h) @ W_hn + b_hn)
  h_new = (1 - z) * n_t + z * h
  return h_new, h_new


def gru_before_step(p, h, x):
  return gru_step(p, h, x, reset_after=False)


# ---------------------------------------------------------------------------
# Layers.


def run(step, p, xs, carry, out_size, length=None, reverse=False):
  """A cell over ``xs`` (T, D): returns ``(ys (T, out_size), final carry)``."""
  xs = np.asarray(xs, np.float64)
  num_steps = xs.shape[0]
  n = num_steps if length is None else int(length)
  ys = np.zeros((num_steps, out_size))
  order = range(n - 1, -1, -1) if reverse else range(n)
  for t in order:  # never touches xs[n:]
    carry, ys[t] = step(p, carry, xs[t])
  return ys, carry


MERGES = {
    "concat": lambda a, b: np.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: (a + b) / 2,
    "mul": lambda a, b: a * b,
}


def run_bidirectional(step_f, step_b, p_f, p_b, xs, carry_f, carry_b, out_f,
                      out_b, length=None, merge="concat"):
  ys_f, c_f = run(step_f, p_f, xs, carry_f, out_f, length)
  ys_b, c_b = run(step_b, p_b, xs, carry_b, out_b, length, reverse=True)
  merge_fn = MERGES[merge] if isinstance(merge, str) else merge
  ys = merge_fn(ys_f, ys_b)
  n = xs.shape[0] if length is None else int(length)
  ys[n:] = 0.0
  return ys, (c_f, c_b)


def run_readout(p, xs, length=None):
  ys = np.asarray(xs, np.float64) @ p["W_hy"] + p["b_y"]
  n = ys.shape[0] if length is None else int(length)
  ys[n:] = 0.0
  return ys


# ---------------------------------------------------------------------------
# The shared table of cells.


class Case(NamedTuple):
  name: str
  make: Callable[[], jaxrnn.Cell]  # a fresh jaxrnn cell
  step: Callable  # its NumPy reference step
  kind: str  # "elman" | "lstm" | "gru"
  out_size: int
  fused: bool  # whether rnn uses the fused backward pass by default
  bias: bool = True


def _sin(z):
  return jnp.sin(z)


CASES = [
    Case("elman_tanh", lambda: jaxrnn.elman(H), elman_step, "elman", H, True),
    Case("elman_relu", lambda: jaxrnn.elman(H, activation="relu"),
         lambda p, h, x: elman_step(p, h, x, relu), "elman", H, True),
    Case("elman_callable", lambda: jaxrnn.elman(H, activation=_sin),
         lambda p, h, x: elman_step(p, h, x, np.sin), "elman", H, False),
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
# The three cells with a fused backward pass, one of each kind.
FUSED_CASES = [BY_NAME[n] for n in ("elman_tanh", "lstm", "gru")]


# ---------------------------------------------------------------------------
# Data helpers (NumPy random numbers: independent of jax.random).


def random_like(tree, seed: int, scale: float = 0.5):
  """Replaces every array leaf of ``tree`` by random normals of its dtype."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda v: jnp.asarray(scale * rng.standard_normal(np.shape(v)), v.dtype),
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
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def assert_tree_close(actual, expected, *, rtol=2e-5, atol=2e-5, err_msg=""):
  """Leaf-by-leaf ``assert_allclose`` (actual may be jax, expected NumPy)."""
  a_leaves, a_def = jax.tree_util.tree_flatten(actual)
  e_leaves, e_def = jax.tree_util.tree_flatten(expected)
  assert len(a_leaves) == len(e_leaves), (a_def, e_def)
  for a, e in zip(a_leaves, e_leaves):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)


def ref_run(case: Case, params, xs, carry, length=None, reverse=False):
  """`run` for a `Case` on jax params/carry: returns float64 NumPy values."""
  return run(case.step, np_params(params), xs, np_carry(carry), case.out_size,
             length, reverse)


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


def ref_bidirectional(params, xs, carry, length=None, merge="concat"):
  merge = custom_merge if merge == "custom" else merge
  return run_bidirectional(
      gru_step, lstm_step, np_params(params.forward), np_params(params.backward),
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


def ref_stack(params, xs, carry, length=None):
  p0, p1, p2, p3 = params
  c0, c1, c2, _ = carry
  ys0, k0 = run(lstm_step, np_params(p0), xs, np_carry(c0), P, length)
  ys1, k1 = run_bidirectional(
      gru_step, lambda p, h, x: elman_step(p, h, x, relu),
      np_params(p1.forward), np_params(p1.backward), ys0,
      np_carry(c1.forward), np_carry(c1.backward), H, H, length)
  ys2, k2 = run(gru_before_step, np_params(p2), ys1, np_carry(c2), H, length,
                reverse=True)
  ys3 = run_readout(np_params(p3), ys2, length)
  return ys3, (k0, k1, k2, ())


@functools.lru_cache(maxsize=None)
def stack_program():
  """``(layer, f)``: ``f(params, xs, length, carry) -> (ys, carries)``, jitted."""
  layer = stack_layer()
  return layer, jax.jit(
      lambda params, xs, length, carry: layer.apply(params, xs, length=length,
                                                    carry=carry))
