"""min_gru, min_lstm and lru: against the papers' equations in NumPy, and the
parallel (associative-scan) method against the sequential one."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import jaxrnn
import reference as ref
from reference import D, H

T = 9


def min_gru_step(p, h, x):
  """Feng et al. 2024, minGRU: z = σ(Linear_z(x)), h̃ = Linear_h(x)."""
  z_lin = x @ p["W_x"] + ref._b(p["b"], 2 * H)
  z, h_tilde = ref.sigmoid(z_lin[:H]), z_lin[H:]
  h_new = (1 - z) * h + z * h_tilde
  return h_new, h_new


def min_lstm_step(p, h, x):
  """Feng et al. 2024, minLSTM: normalised f and i from the input."""
  lin = x @ p["W_x"] + ref._b(p["b"], 3 * H)
  f, i, h_tilde = ref.sigmoid(lin[:H]), ref.sigmoid(lin[H:2 * H]), lin[2 * H:]
  h_new = f / (f + i) * h + i / (f + i) * h_tilde
  return h_new, h_new


def lru_step(p, state, x):
  """Orvieto et al. 2023: h = λ h + γ (B x), y = Re(C h) + D x."""
  h = state[0] + 1j * state[1]
  lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
  B = p["B_re"] + 1j * p["B_im"]
  C = p["C_re"] + 1j * p["C_im"]
  h = lam * h + np.exp(p["gamma_log"]) * (x @ B)
  y = np.real(h @ C) + p["D"] * x
  return (np.real(h), np.imag(h)), y


CASES = {
    "min_gru": (lambda: jaxrnn.min_gru(H), min_gru_step, H),
    "min_lstm": (lambda: jaxrnn.min_lstm(H), min_lstm_step, H),
    "lru": (lambda: jaxrnn.lru(H, r_min=0.5, r_max=0.99), lru_step, D),
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


def np_segments(step, p, xs, carry, out, length, reset, reverse):
  """The NumPy run over each segment of a packed row, from `carry` for the
  first segment in scan order and zeros for the others."""
  n = length
  starts = [t for t in range(n) if reset[t] or t == 0]
  bounds = list(zip(starts, starts[1:] + [n]))
  ys = np.zeros((xs.shape[0], out))
  zero = jax.tree_util.tree_map(np.zeros_like, carry)
  order = bounds[::-1] if reverse else bounds
  final = carry
  for k, (s, e) in enumerate(order):
    ys_k, final = ref.run(step, p, xs[s:e], carry if k == 0 else zero, out,
                          reverse=reverse)
    ys[s:e] = ys_k
  return ys, final


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
        want_ys, want_c = np_segments(step, p, np.asarray(xs, np.float64),
                                      ref.np_carry(carry), out, length, reset, reverse)
        msg = f"{name} {method} length={length} reset={reset.any()} reverse={reverse}"
        ref.assert_tree_close(ys, want_ys, err_msg=msg)
        ref.assert_tree_close(as_tuple(c), want_c, err_msg=msg)


@pytest.mark.parametrize("name", NAMES)
def test_parallel_equals_sequential_values_and_gradients(name):
  cell = CASES[name][0]()
  params = ref.random_params(cell, 4)
  xs = ref.random_xs(5, (40, D))
  lengths = jnp.array([40, 17, 0])
  batch = jnp.stack([xs, xs[::-1], xs * 2])
  weights = ref.random_xs(6, (3, 40, CASES[name][2]))

  def loss(p, x, method, reverse):
    layer = jaxrnn.rnn(cell, method=method, reverse=reverse)
    ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(p, x, length=lengths)
    return jnp.sum(ys * weights) + sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(carry))

  for reverse in (False, True):
    seq = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=(2, 3))
    v_s, g_s = seq(params, batch, "sequential", reverse)
    v_p, g_p = seq(params, batch, "parallel", reverse)
    np.testing.assert_allclose(v_p, v_s, rtol=1e-5)
    ref.assert_tree_close(g_p, g_s, rtol=1e-5, atol=1e-5)


def test_parallel_gradients_match_finite_differences(x64):
  cell = jaxrnn.lru(H)
  layer = jaxrnn.rnn(cell, method="parallel")
  params = ref.random_params(cell, 7, dtype=jnp.float64, scale=0.3)
  xs = ref.random_xs(8, (T, D), np.float64)
  reset = jnp.zeros(T, bool).at[4].set(True)

  def loss(p):
    ys, c = layer.apply(p, xs, length=7, reset=reset)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(c.re * c.im)

  g = jax.grad(loss)(params)
  d = ref.random_like(params, 9)
  eps = 1e-6
  fd = (loss(jax.tree_util.tree_map(lambda p, v: p + eps * v, params, d))
        - loss(jax.tree_util.tree_map(lambda p, v: p - eps * v, params, d))) / (2 * eps)
  analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                jax.tree_util.tree_leaves(d)))
  np.testing.assert_allclose(analytic, fd, rtol=1e-7)


def test_auto_picks_by_length_and_backend(monkeypatch):
  cell = jaxrnn.min_gru(H)
  layer = jaxrnn.rnn(cell)  # method="auto"
  params = layer.init_params(jax.random.key(0), D)

  def text(num_steps):
    return str(jax.make_jaxpr(lambda x: layer.apply(params, x))(jnp.ones((num_steps, D))))

  backend = jax.default_backend()
  monkeypatch.setitem(jaxrnn._src.cells.linear.PARALLEL_MIN_STEPS, backend, 40)
  assert "scan" not in text(40) and "while" not in text(40)  # associative
  assert "scan" in text(39)
  monkeypatch.setitem(jaxrnn._src.cells.linear.PARALLEL_MIN_STEPS, backend, None)
  assert "scan" in text(5000)  # None: always sequential
  xs = ref.random_xs(1, (43, D))
  seq = jaxrnn.rnn(cell, method="sequential").apply(params, xs)[0]
  par = jaxrnn.rnn(cell, method="parallel").apply(params, xs)[0]
  np.testing.assert_allclose(par, seq, rtol=1e-5, atol=1e-6)


def test_cell_apply_loop_equals_the_layer_and_numpy():
  """cell_apply (the per-step recurrence, used under zoneout) vs NumPy."""
  for name in NAMES:
    make, step, out = CASES[name]
    cell = make()
    params = ref.random_params(cell, 21)
    carry = ref.random_like(cell.init_carry(), 22)
    xs = ref.random_xs(23, (T, D))
    c, ys = carry, []
    for x in xs:
      c, y = cell.cell_apply(params, c, x)
      ys.append(y)
    want_ys, want_c = ref.run(step, ref.np_params(params), xs, ref.np_carry(carry), out)
    ref.assert_tree_close(jnp.stack(ys), want_ys, err_msg=name)
    ref.assert_tree_close(as_tuple(c), want_c, err_msg=name)
    zoned = jaxrnn.rnn(cell, zoneout=0.0 if name == "lru" else 1e-9)  # per-step path
    ref.assert_tree_close(zoned.apply(params, xs, carry=carry)[0], want_ys, err_msg=name)


def test_stable_when_gates_saturate():
  """min_lstm's normalisation when both gates underflow, min_gru at z -> 1,
  and a long sequence with |a_t| close to 1."""
  cell = jaxrnn.min_lstm(H)
  params = cell.init_params(jax.random.key(0), D)
  params = params._replace(b=jnp.concatenate([jnp.full(2 * H, -200.0), jnp.zeros(H)]))
  for method in METHODS:
    ys, _ = jaxrnn.rnn(cell, method=method).apply(params, jnp.zeros((70, D)))
    assert bool(jnp.all(jnp.isfinite(ys)))
  lru = jaxrnn.lru(H, r_min=0.999, r_max=0.9999)
  lp = lru.init_params(jax.random.key(1), D)
  xs = jax.random.normal(jax.random.key(2), (5000, D))
  a = jaxrnn.rnn(lru, method="parallel").apply(lp, xs)[0]
  b = jaxrnn.rnn(lru, method="sequential").apply(lp, xs)[0]
  assert bool(jnp.all(jnp.isfinite(a)))
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bidirectional_stack_and_remat_with_the_parallel_method():
  net = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.min_gru(H), jaxrnn.min_lstm(H), method="parallel"),
      jaxrnn.rnn(jaxrnn.lru(H), method="parallel", remat=4),
      jaxrnn.readout(2))
  seq = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.min_gru(H), jaxrnn.min_lstm(H), method="sequential"),
      jaxrnn.rnn(jaxrnn.lru(H), method="sequential"),
      jaxrnn.readout(2))
  params = ref.random_params(net, 3)
  xs = ref.random_xs(4, (T, D))
  reset = jnp.zeros(T, bool).at[5].set(True)
  a, ca = net.apply(params, xs, length=8, reset=reset)
  b, cb = seq.apply(params, xs, length=8, reset=reset)
  ref.assert_tree_close((a, ca), (b, cb), rtol=1e-5, atol=1e-6)


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
  with pytest.raises(ValueError, match="^method: 'parallel' needs"):
    jaxrnn.rnn(jaxrnn.lstm(H), method="parallel")
  with pytest.raises(ValueError, match="^method: expected one of"):
    jaxrnn.rnn(jaxrnn.min_gru(H), method="fast")
  with pytest.raises(ValueError, match="^recurrent_dropout: "):
    jaxrnn.rnn(jaxrnn.min_gru(H), recurrent_dropout=0.2)
  with pytest.raises(ValueError, match="^zoneout: needs a cell whose output"):
    jaxrnn.rnn(jaxrnn.lru(H), zoneout=0.1)
  layer = jaxrnn.rnn(jaxrnn.min_gru(H), method="parallel", zoneout=0.1)
  params = layer.init_params(jax.random.key(0), D)
  with pytest.raises(ValueError, match="^zoneout: the parallel method"):
    layer.apply(params, jnp.ones((T, D)))
  with pytest.raises(ValueError, match="^r_max: "):
    jaxrnn.lru(H, r_min=0.9, r_max=0.5)
  cell = jaxrnn.min_gru(H)
  with pytest.raises(ValueError, match=r"^params.W_x: .*\(input_size, 8\)"):
    cell.cell_apply(jaxrnn.MinGRUParams(jnp.ones((D, 3)), jnp.ones(8)), cell.init_carry(),
                    jnp.ones(D))
  with pytest.raises(TypeError, match="^params: "):
    jaxrnn.rnn(cell).apply(jaxrnn.lstm(H).init_params(jax.random.key(0), D), jnp.ones((T, D)))
