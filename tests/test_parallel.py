"""min_gru, min_lstm and lru: against the papers' equations in NumPy
(tests/reference.py), by the sequential and the parallel (associative-scan)
methods."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import D, H

T = 9  # odd: the associative scan splits it unevenly


CASES = {
    "min_gru": (lambda: jaxrnn.min_gru(H), ref.min_gru_step, H),
    "min_lstm": (lambda: jaxrnn.min_lstm(H), ref.min_lstm_step, H),
    "lru": (lambda: jaxrnn.lru(H, r_min=0.5, r_max=0.99), ref.lru_step, D),
}
NAMES = sorted(CASES)
METHODS = ("sequential", "parallel")


@functools.lru_cache(maxsize=None)
def program(name, method):
  cell = CASES[name][0]()
  fwd = jaxrnn.rnn(cell, method=method)
  rev = jaxrnn.rnn(cell, method=method, reverse=True)

  @jax.jit
  def f(params, xs, length, carry, reset):
    return (fwd.apply(params, xs, length=length, carry=carry, reset=reset),
            rev.apply(params, xs, length=length, carry=carry, reset=reset))

  return cell, f


def as_tuple(carry):
  return tuple(carry) if isinstance(carry, tuple) else carry


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", NAMES)
def test_against_numpy_with_lengths_resets_and_reverse(name, method):
  make, step, out = CASES[name]
  cell, f = program(name, method)
  params = ref.random_params(cell, 1)
  carry = ref.random_like(cell.init_carry(), 2)
  xs = ref.random_xs(3, (T, D))
  p = ref.np_params(params)
  no_reset = np.zeros(T, bool)
  packed = no_reset.copy()
  packed[[3, 4, 7]] = True
  for length in (0, 1, 5, T):
    for reset in (no_reset, packed):
      xs_junk = xs.at[length:].set(jnp.nan)
      junk_reset = reset.copy()
      junk_reset[length:] = True  # flags on padding never take effect
      results = f(params, xs_junk, length, carry, jnp.asarray(junk_reset))
      for reverse, (ys, c) in zip((False, True), results):
        want_ys, want_c = ref.run(step, p, xs, ref.np_carry(carry), out, length,
                                  reverse, reset)
        msg = f"{name} {method} length={length} reset={reset.any()} reverse={reverse}"
        ref.assert_tree_close(ys, want_ys, err_msg=msg)
        ref.assert_tree_close(as_tuple(c), want_c, err_msg=msg)


# Gradients: one (method, direction) pair per run, chosen pairwise: the
# direction is handled inside each method, the same way for every cell, so
# each cell is differentiated by both methods and in both directions, and
# each method in both directions.
GRADIENT_RUNS = {
    "min_gru": (("sequential", False), ("parallel", True)),
    "min_lstm": (("sequential", True), ("parallel", False)),
    "lru": (("sequential", False), ("parallel", True)),
}
BATCH_LENGTHS = [T, 5, 0]
BATCH_RESETS = np.zeros((3, T), bool)
BATCH_RESETS[0, [3, 6]] = True
BATCH_RESETS[1, 2] = True


@pytest.mark.parametrize("name", NAMES)
def test_values_and_gradients_match_numpy(name, x64):
  """A vmapped minibatch (lengths T, 5 and 0, segment resets, NaN in the
  padding) in float64: the loss against NumPy, and its gradient along
  random directions of every parameter and of the inputs against central
  differences, for each run of `GRADIENT_RUNS`."""
  make, step, out = CASES[name]
  cell = make()
  params = ref.random_params(cell, 4)
  xs = np.asarray(ref.random_xs(5, (T, D), np.float64))
  batch = np.stack([xs, xs[::-1], xs * 2])
  for b, n in enumerate(BATCH_LENGTHS):
    batch[b, n:] = np.nan
  weights = np.asarray(ref.random_xs(6, (3, T, out)), np.float64)
  zero = ref.np_carry(jax.tree_util.tree_map(np.zeros_like, cell.init_carry()))
  runs = GRADIENT_RUNS[name]

  def loss(p, x, layer):
    ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(
        p, x, length=jnp.asarray(BATCH_LENGTHS), reset=jnp.asarray(BATCH_RESETS))
    return jnp.sum(ys * weights) + sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(carry))

  value_and_grads = [  # unroll 1: a smaller program
      jax.value_and_grad(functools.partial(
          loss, layer=jaxrnn.rnn(cell, method=method, reverse=reverse, unroll=1)),
          argnums=(0, 1))
      for method, reverse in runs]
  program = jax.jit(lambda p, x: [vg(p, x) for vg in value_and_grads])

  def loss_np(p, x, reverse):
    total = 0.0
    for b, n in enumerate(BATCH_LENGTHS):
      ys, carry = ref.run(step, p, x[b], zero, out, n, reverse, BATCH_RESETS[b])
      total += np.sum(ys * weights[b]) + sum(np.sum(c) for c in jax.tree_util.tree_leaves(carry))
    return total

  p_np = ref.np_params(params)
  results = program(params, batch)
  rng = np.random.default_rng(7)
  eps = 1e-6
  for (method, reverse), (value, (g_p, g_x)) in zip(runs, results):
    msg = f"{name} {method} reverse={reverse}"
    np.testing.assert_allclose(value, loss_np(p_np, batch, reverse), rtol=1e-10, err_msg=msg)
    g_x = np.asarray(g_x)
    assert np.all(np.isfinite(g_x)), msg
    for b, n in enumerate(BATCH_LENGTHS):
      np.testing.assert_array_equal(g_x[b, n:], 0, err_msg=msg)  # the padding
    for k, v in p_np.items():
      if v is None:
        continue
      d = rng.standard_normal(v.shape)
      fd = (loss_np(dict(p_np, **{k: v + eps * d}), batch, reverse)
            - loss_np(dict(p_np, **{k: v - eps * d}), batch, reverse)) / (2 * eps)
      np.testing.assert_allclose(np.sum(np.asarray(getattr(g_p, k)) * d), fd, rtol=1e-6,
                                 atol=1e-8, err_msg=f"{k}, {msg}")
    d_x = rng.standard_normal(batch.shape)
    fd_x = (loss_np(p_np, batch + eps * d_x, reverse)
            - loss_np(p_np, batch - eps * d_x, reverse)) / (2 * eps)
    np.testing.assert_allclose(np.sum(g_x * d_x), fd_x, rtol=1e-6, atol=1e-8,
                               err_msg=f"xs, {msg}")


def test_auto_picks_by_length_and_settings():
  """Traced only: ``method="auto"`` is the associative scan from
  ``parallel_min_steps`` steps on, and the sequential scan below it (or
  with None), and its program is then exactly that method's."""
  cell = jaxrnn.min_gru(H)
  params = ref.random_params(cell, 0)

  def text(method, num_steps, **options):
    layer = jaxrnn.rnn(cell, method=method, **options)
    return str(jax.make_jaxpr(lambda p, x: layer.apply(p, x, length=3))(
        params, np.ones((num_steps, D), np.float32)))

  with jaxrnn.engine_settings(parallel_min_steps=T, parallel_derivatives=True):
    for reverse in (False, True):
      auto = text("auto", T, reverse=reverse)
      assert "scan" not in auto and "while" not in auto  # associative
      assert auto == text("parallel", T, reverse=reverse)
      below = text("auto", T - 1, reverse=reverse)
      assert "scan" in below
      assert below == text("sequential", T - 1, reverse=reverse)
  # Per cell kind, and differentiated as the sequential scan: a custom JVP
  # whose primal is the associative scan.
  with jaxrnn.engine_settings(parallel_min_steps={"min_gru": T, "lru": 1},
                              parallel_derivatives=False):
    auto = text("auto", T)
    assert "custom_jvp_call" in auto and "scan[" not in auto
    assert "custom_jvp" not in text("auto", T - 1) and "scan" in text("auto", T - 1)
  with jaxrnn.engine_settings(parallel_min_steps={"lru": 1}):
    assert "scan" in text("auto", 5000)  # kinds absent: sequential
  with jaxrnn.engine_settings(parallel_min_steps=None):
    assert "scan" in text("auto", 5000)  # None: always sequential


def test_cell_apply_loop_equals_the_layer_and_numpy():
  """cell_apply (the per-step recurrence, used under zoneout), scanned,
  and the zoneout path vs NumPy."""
  cells = {name: CASES[name][0]() for name in NAMES}
  params = {name: ref.random_params(cell, 21) for name, cell in cells.items()}
  carries = {name: ref.random_like(cell.init_carry(), 22) for name, cell in cells.items()}
  xs = ref.random_xs(23, (T, D))

  @jax.jit  # one program for the three cells
  def loops(params, carries, xs):
    out = {}
    for name, cell in cells.items():
      c, ys = jax.lax.scan(functools.partial(cell.cell_apply, params[name]), carries[name], xs)
      zoned = jaxrnn.rnn(cell, zoneout=0.0 if name == "lru" else 1e-9)  # per-step path
      out[name] = (ys, c), zoned.apply(params[name], xs, carry=carries[name])[0]
    return out

  for name, ((ys, c), zoned_ys) in loops(params, carries, xs).items():
    _, step, out = CASES[name]
    want_ys, want_c = ref.run(step, ref.np_params(params[name]), xs,
                              ref.np_carry(carries[name]), out)
    ref.assert_tree_close(ys, want_ys, err_msg=name)
    ref.assert_tree_close(as_tuple(c), want_c, err_msg=name)
    ref.assert_tree_close(zoned_ys, want_ys, err_msg=name)


def _both_methods(cell):
  """``f(params, xs, carry)``: the results of both methods, one program."""
  layers = [jaxrnn.rnn(cell, method=method) for method in METHODS]
  return jax.jit(lambda p, x, c: [layer.apply(p, x, carry=c) for layer in layers])


def test_stable_when_gates_saturate():
  """Saturated gates against the float64 NumPy formulas: min_lstm with both
  gates underflowing float32 (σ(-150) = 7e-66, where the naive f / (f + i)
  is 0 / 0), with both at 1, and with one at 0 and the other at 1; min_gru
  with 1 - z underflowing float32."""
  T_sat = 12
  xs = ref.random_xs(30, (T_sat, D))
  carry = ref.random_xs(31, (H,))
  k_h = np.asarray(ref.random_xs(33, (H,)), np.float64)
  saturated = {  # pre-activation offsets of the (f, i) gates
      "both underflow": (np.full(H, -150.0), -150.0 + np.array([-3.0, -1.0, 0.5, 2.0])),
      "both one": (np.full(H, 60.0), np.full(H, 70.0)),
      "forget off, input on": (np.full(H, -120.0), np.full(H, 120.0)),
  }
  both = _both_methods(jaxrnn.min_lstm(H))
  W_x = ref.random_xs(32, (D, 3 * H)) * 0.5
  for what, (k_f, k_i) in saturated.items():
    b = jnp.asarray(np.concatenate([k_f, k_i, k_h]), jnp.float32)
    params = jaxrnn.MinLSTMParams(W_x, b)
    want = ref.run(ref.min_lstm_step, ref.np_params(params), xs,
                   np.asarray(carry, np.float64), H)
    for method, got in zip(METHODS, both(params, xs, carry)):
      ref.assert_tree_close(got, want, err_msg=f"{what} {method}")
  W_x = ref.random_xs(34, (D, 2 * H)) * 0.5
  b = jnp.asarray(np.concatenate([np.full(H, 120.0), k_h]), jnp.float32)
  params = jaxrnn.MinGRUParams(W_x, b)
  want = ref.run(ref.min_gru_step, ref.np_params(params), xs, np.asarray(carry, np.float64), H)
  for method, got in zip(METHODS, _both_methods(jaxrnn.min_gru(H))(params, xs, carry)):
    ref.assert_tree_close(got, want, err_msg=f"min_gru {method}")


def test_long_lru_sequence_with_moduli_close_to_one():
  """5,000 steps with |λ| in [0.999, 0.9999]: both methods against NumPy."""
  lru = jaxrnn.lru(H, r_min=0.999, r_max=0.9999)
  lp = lru.init_params(jax.random.key(1), D)
  xs = ref.random_xs(2, (5000, D))
  want, _ = ref.run(ref.lru_step, ref.np_params(lp), xs, (np.zeros(H), np.zeros(H)), D)
  zeros = lru.init_carry()
  for method, (ys, _) in zip(METHODS, _both_methods(lru)(lp, xs, zeros)):
    np.testing.assert_allclose(ys, want, rtol=1e-4, atol=2e-4, err_msg=method)


def test_bidirectional_stack_and_remat_with_the_parallel_method():
  net = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.min_gru(H), jaxrnn.min_lstm(H), method="parallel"),
      jaxrnn.rnn(jaxrnn.lru(H), method="parallel", remat=4),
      jaxrnn.readout(2))
  params = ref.random_params(net, 3)
  xs = ref.random_xs(4, (T, D))
  reset = np.zeros(T, bool)
  reset[5] = True
  ys, (c0, c1, _) = jax.jit(lambda p, x, r: net.apply(p, x, length=8, reset=r))(
      params, xs, jnp.asarray(reset))
  p0, p1, p2 = params
  zeros = np.zeros(H)
  ys0, k0 = ref.run_bidirectional(ref.min_gru_step, ref.min_lstm_step,
                                  ref.np_params(p0.forward), ref.np_params(p0.backward),
                                  np.asarray(xs, np.float64), zeros, zeros, H, H, 8,
                                  reset=reset)
  ys1, k1 = ref.run(ref.lru_step, ref.np_params(p1), ys0, (zeros, zeros), 2 * H, 8,
                    reset=reset)
  want = ref.run_readout(ref.np_params(p2), ys1, 8)
  ref.assert_tree_close((ys, (c0.forward, c0.backward), tuple(c1)), (want, k0, k1))


def test_lru_initialisation_follows_the_paper():
  cell = jaxrnn.lru(1000, r_min=0.4, r_max=0.9, max_phase=np.pi)
  p = cell.init_params(jax.random.key(0), D)
  modulus = np.exp(-np.exp(np.asarray(p.nu_log)))
  phase = np.exp(np.asarray(p.theta_log))
  assert modulus.min() >= 0.4 - 1e-6 and modulus.max() <= 0.9 + 1e-6
  assert phase.min() >= 0 and phase.max() <= np.pi
  # Uniform on the ring's area: |λ|^2 is uniform on [r_min^2, r_max^2].
  assert abs(np.mean(modulus ** 2) - (0.16 + 0.81) / 2) < 0.02
  np.testing.assert_allclose(np.exp(np.asarray(p.gamma_log)),
                             np.sqrt(1 - modulus ** 2), rtol=1e-5)


def test_errors():
  with pytest.raises(ValueError, match=r"^method: 'parallel' needs a cell with a parallel form "
                     r"\(the cells linear in the state: min_gru, min_lstm, lru, rg_lru, mamba, "
                     r"linear_cell; and mlstm\); this cell runs sequentially$"):
    jaxrnn.rnn(jaxrnn.lstm(H), method="parallel")
  with pytest.raises(ValueError, match=r"^method: expected one of \('auto', 'sequential', "
                     r"'parallel', 'reference'\), got 'fast'$"):
    jaxrnn.rnn(jaxrnn.min_gru(H), method="fast")
  with pytest.raises(ValueError, match=r"^recurrent_dropout: this cell has no recurrent "
                     r"product to drop inputs of \(user cells, the cells linear in the state, "
                     r"and mlstm\)$"):
    jaxrnn.rnn(jaxrnn.min_gru(H), recurrent_dropout=0.2)
  with pytest.raises(ValueError, match=r"^zoneout: expected a cell whose output is its hidden "
                     r"state \(a built-in cell with vector inputs but lru, or a user cell whose "
                     r"carry is its output\), got output_size=None and a hidden state of shape "
                     r"LRUState\(re=\(4,\), im=\(4,\)\)$"):
    jaxrnn.rnn(jaxrnn.lru(H), zoneout=0.1)
  with pytest.raises(ValueError, match=r"^zoneout: the parallel method evaluates a linear "
                     r"recurrence without per-step carry mixing; use method='sequential' "
                     r"with zoneout$"):
    jaxrnn.rnn(jaxrnn.min_gru(H), method="parallel", zoneout=0.1)
  with pytest.raises(ValueError, match=r"^r_max: expected r_min < r_max, got r_min=0\.9, "
                     r"r_max=0\.5$"):
    jaxrnn.lru(H, r_min=0.9, r_max=0.5)
  cell = jaxrnn.min_gru(H)
  with pytest.raises(ValueError, match=r"^params\.W_x: min_gru\(hidden_size=4\) expects shape "
                     r"\(input_size, 8\), got \(3, 3\)$"):
    cell.cell_apply(jaxrnn.MinGRUParams(jnp.ones((D, 3)), jnp.ones(8)), cell.init_carry(),
                    jnp.ones(D))
  with pytest.raises(TypeError, match=r"^params: min_gru\(hidden_size=4\) expects "
                     r"MinGRUParams, got LSTMParams; were these params made by another cell or "
                     r"layer\?$"):
    jaxrnn.rnn(cell).apply(ref.random_params(jaxrnn.lstm(H), 0), jnp.ones((T, D)))
