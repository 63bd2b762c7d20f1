"""`slstm` against the authors' code, xlstm 2.0.6's vanilla sLSTM (PyTorch).

Outputs, final states and gradients against ``slstm_forward`` with the
pointwise function ``"slstm"`` from a zero state (its first-step
stabiliser) and from a random one; the initialisation and the weight
layout against xlstm's ``sLSTMCell``; the layer on the fused path, under
``jit(vmap)`` with lengths, reverse and resets, against a Python loop over
``cell_apply``; its gradient and JVP, and recurrent dropout with zoneout,
against the reference path; the hand-written tangent against ``jax.jvp``;
errors. One compiled program per direction and path, called many times.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig
from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

import jaxrnn
import reference as ref
from jaxrnn._src.engine.hooks import hooks_of

# D = 4H: xlstm's sLSTMCell takes the four pre-activations as its input.
B, T, H, K = 3, 6, 8, 2
D, HEAD = 4 * H, H // K
LENGTHS = np.array([6, 4, 0], np.int32)
RESET = np.zeros((B, T), bool)
RESET[0, 3] = RESET[1, 2] = True
CELL = jaxrnn.slstm(H, num_heads=K)


def random_params(seed, scale=0.5):
  """float32 `SLSTMParams` with every entry random; the heads of R differ."""
  rng = np.random.default_rng(seed)
  shapes = ((D, 4 * H), (K, HEAD, 4 * HEAD), (4 * H,))
  return jaxrnn.SLSTMParams(*(np.float32(scale * rng.standard_normal(s)) for s in shapes))


def random_carry(seed, batch=B):
  """A random `SLSTMState` per example, with a positive normaliser."""
  h, c, n, m = np.float32(np.random.default_rng(seed).standard_normal((4, batch, H)))
  return jaxrnn.SLSTMState(h, c, np.abs(n) + 0.5, m)


def zero_carry(batch=B):
  return jaxrnn.SLSTMState(*np.zeros((4, batch, H), np.float32))


def xlstm_run(params, xs, carry):
  """xlstm's vanilla ``slstm_forward`` over ``xs: (B, T, D)`` from ``carry``
  (leaves ``(B, H)``): ``(ys (B, T, H), final SLSTMState, grads)``, the
  grads of ``sum(sin(ys))`` with respect to ``(params, carry)``.

  Its layouts: ``x`` the projected inputs ``(T, B, 4H)`` (gate-major, heads
  within each gate, as ``x W_x``), ``R: (K, 4 H/K, H/K)`` (each head's block
  transposed), ``b: (4H,)`` gate-major, states ``(4, B, H)`` = (y, c, n, m).
  """
  W_x, R, b = (torch.tensor(np.asarray(a), requires_grad=True) for a in params)
  states = torch.tensor(np.stack(carry), requires_grad=True)
  xs_t = torch.from_numpy(np.ascontiguousarray(np.swapaxes(xs, 0, 1)))
  all_states, last, _ = slstm_forward(xs_t @ W_x, states, R.transpose(1, 2), b,
                                      slstm_pointwise_function_registry["slstm"])
  ys = all_states[0, 1:]
  torch.sin(ys).sum().backward()
  grads = (jaxrnn.SLSTMParams(W_x.grad.numpy(), R.grad.numpy(), b.grad.numpy()),
           jaxrnn.SLSTMState(*states.grad.numpy()))
  return (np.swapaxes(ys.detach().numpy(), 0, 1),
          jaxrnn.SLSTMState(*last.detach().numpy()), grads)


@functools.lru_cache(maxsize=None)
def _program(method, reverse):
  """``f(params, xs, lengths, reset, carry, tangents) -> ((ys, carry), grads,
  jvp)`` for a batch, jitted: the outputs, the gradient of ``sum(sin(ys))``
  with respect to ``(params, xs, carry)``, and the JVP of the outputs."""
  layer = jaxrnn.rnn(CELL, method=method, reverse=reverse)
  batched = jax.vmap(lambda p, x, n, r, c: layer.apply(p, x, length=n, reset=r, carry=c),
                     in_axes=(None, 0, 0, 0, 0))

  def f(params, xs, lengths, reset, carry, tangents):
    run = lambda p, x, c: batched(p, x, lengths, reset, c)
    grads = jax.grad(lambda *a: jnp.sum(jnp.sin(run(*a)[0])), argnums=(0, 1, 2))(
        params, xs, carry)
    return run(params, xs, carry), grads, jax.jvp(run, (params, xs, carry), tangents)[1]

  return jax.jit(f)


def _inputs(seed):
  """params, xs (NaN on padding), lengths, resets, carry and tangents."""
  params = random_params(seed)
  xs = np.float32(np.random.default_rng(seed + 1).standard_normal((B, T, D)))
  tangents = ref.random_like((params, xs, random_carry(seed + 2)), seed + 3)
  return params, xs, tangents


def test_equals_xlstm_slstm_forward_from_zero_and_random_states():
  params, xs, tangents = _inputs(0)
  full, no_reset = np.full(B, T, np.int32), np.zeros((B, T), bool)
  for carry in (zero_carry(), random_carry(1)):
    want_ys, want_final, want_grads = xlstm_run(params, xs, carry)
    (ys, final), grads, _ = _program("sequential", False)(params, xs, full, no_reset, carry,
                                                          tangents)
    ref.assert_tree_close(ys, want_ys)
    ref.assert_tree_close(final, want_final)
    ref.assert_tree_close((grads[0], grads[2]), want_grads, rtol=1e-4, atol=1e-4)


def test_recurrent_product_is_block_diagonal_and_gate_major():
  params = random_params(2)
  h = np.float32(np.random.default_rng(3).standard_normal(H))
  got = np.asarray(hooks_of(CELL).product.recur(params, jnp.asarray(h)))
  for k in range(K):
    per_head = h[k * HEAD:(k + 1) * HEAD] @ params.R[k]
    for g in range(4):  # gate g of head k
      np.testing.assert_allclose(got[g * H + k * HEAD:g * H + (k + 1) * HEAD],
                                 per_head[g * HEAD:(g + 1) * HEAD], rtol=1e-5, atol=1e-6)


def test_initialisation_and_layout_equal_xlstm_slstm_cell():
  module = sLSTMCell(sLSTMCellConfig(hidden_size=H, num_heads=K, backend="vanilla",
                                     dtype="float32"))
  params = CELL.init_params(jax.random.key(0), D)
  # xlstm's external layouts: recurrent_kernel (K, H/K, 4, H/K), bias (K, 4, H/K).
  as_R = lambda kernel: np.asarray(kernel).reshape(K, HEAD, 4 * HEAD)
  as_b = lambda bias: np.asarray(bias).transpose(1, 0, 2).reshape(4 * H)
  np.testing.assert_array_equal(params.R, as_R(module.recurrent_kernel[:]))
  np.testing.assert_allclose(params.b, as_b(module.bias[:]), rtol=1e-6, atol=1e-6)
  assert abs(float(jnp.std(params.W_x)) - np.sqrt(2 / (5 * D))) < 0.1 * np.sqrt(2 / (5 * D))
  # Random weights in the module; its input is the four pre-activations.
  rng = np.random.default_rng(4)
  module.recurrent_kernel[:] = torch.from_numpy(np.float32(0.5 * rng.standard_normal(
      (K, HEAD, 4, HEAD))))
  module.bias[:] = torch.from_numpy(np.float32(0.5 * rng.standard_normal((K, 4, HEAD))))
  xs = np.float32(rng.standard_normal((B, T, D)))
  with torch.no_grad():
    ys_bnsh, last = module(torch.from_numpy(xs))
  converted = jaxrnn.SLSTMParams(np.eye(D, dtype=np.float32),
                                 as_R(module.recurrent_kernel[:]),
                                 as_b(module.bias[:]))
  _, _, tangents = _inputs(0)
  (ys, final), _, _ = _program("sequential", False)(
      converted, xs, np.full(B, T, np.int32), np.zeros((B, T), bool), zero_carry(), tangents)
  ref.assert_tree_close(ys, ys_bnsh.numpy().transpose(0, 2, 1, 3).reshape(B, T, H))
  ref.assert_tree_close(final, jaxrnn.SLSTMState(*last.numpy()))


@pytest.mark.parametrize("reverse", [False, True])
def test_fused_path_matches_a_loop_over_cell_apply(reverse):
  params, xs, tangents = _inputs(5)
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan
  carry = random_carry(6)
  (ys, final), grads, jvp = _program("sequential", reverse)(params, xs, LENGTHS, RESET, carry,
                                                            tangents)
  step = jax.jit(CELL.cell_apply)
  for b, n in enumerate(LENGTHS):
    start = jaxrnn.SLSTMState(*(c[b] for c in carry))
    want_ys, want_final = ref.run(
        lambda p, c, x: step(p, c, jnp.asarray(x, jnp.float32)), params, xs[b], start, H, n,
        reverse, RESET[b], initial=CELL.init_carry())
    ref.assert_tree_close(ys[b], want_ys)
    ref.assert_tree_close(jax.tree_util.tree_map(lambda c: c[b], final), want_final)
  assert np.all(np.asarray(grads[1])[2] == 0) and np.all(np.isfinite(grads[1]))
  if not reverse:  # the derivatives, once, against the reference path's
    _, want_grads, want_jvp = _program("reference", reverse)(params, xs, LENGTHS, RESET, carry,
                                                            tangents)
    ref.assert_tree_close(grads, want_grads, rtol=1e-5, atol=1e-5)
    ref.assert_tree_close(jvp, want_jvp, rtol=1e-5, atol=1e-5)


def test_recurrent_dropout_and_zoneout_compose_on_the_fused_path():
  layers = {m: jaxrnn.rnn(CELL, method=m, recurrent_dropout=0.3, zoneout=0.2)
            for m in ("sequential", "reference")}

  @jax.jit
  def f(params, xs, lengths, keys):
    def run(layer, p):
      return jax.vmap(lambda x, n, k: layer.apply(p, x, length=n, key=k))(xs, lengths, keys)
    return {m: (run(layer, params), jax.grad(lambda p: jnp.sum(jnp.sin(run(layer, p)[0])))(
        params)) for m, layer in layers.items()}

  params, xs, _ = _inputs(7)
  out = f(params, xs, LENGTHS, jax.random.split(jax.random.key(8), B))
  ref.assert_tree_close(out["sequential"], out["reference"], rtol=1e-5, atol=1e-5)


def test_tangent_is_the_jvp_of_pointwise(x64):
  """Per example (vmapped): a zero carry (the first step, its forget gate
  clipped at 1 in some units) and a random one."""
  product = hooks_of(CELL).product
  params = ref.random_like(jaxrnn.SLSTMParams(np.zeros((D, 4 * H)), np.zeros((K, HEAD, 4 * HEAD)),
                                              np.zeros(4 * H)), 10)
  carry = ref.random_like(jaxrnn.SLSTMState(*np.zeros((4, 2, H))), 12, scale=1.0)
  carry = carry._replace(n=jnp.abs(carry.n).at[0].set(0.0))
  zx, zh = ref.random_like((np.zeros((2, 4 * H)),) * 2, 13, scale=1.5)
  tangents = ref.random_like((params, carry, zx, zh), 14, scale=1.0)
  assert zx.dtype == jnp.float64

  def equation(p, c, zx_t, zh_t):
    return product.pointwise(p, c, zx_t, zh_t)[:2]

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(None, 0, 0, 0, None, 0, 0, 0))
  def both(p, c, zx_t, zh_t, dp, dc, dzx, dzh):
    primals, tangents = (p, c, zx_t, zh_t), (dp, dc, dzx, dzh)
    res = product.pointwise(*primals)[2]
    _, want = jax.jvp(equation, primals, tangents)
    got = product.tangent(p, c.h, res, *tangents)
    cotangent = ref.random_like(want, 15, scale=1.0)
    linear = lambda *t: product.tangent(p, c.h, res, *t)
    return (got, want, jax.linear_transpose(linear, *tangents)(cotangent),
            jax.vjp(equation, *primals)[1](cotangent))

  got, want, transposed, vjp = both(params, carry, zx, zh, *tangents)
  z = zx[0] + zh[0]
  clipped = np.exp(carry.m[0] + jax.nn.log_sigmoid(z[H:2 * H]) - z[:H]) > 1
  assert clipped.any() and not clipped.all()
  ref.assert_tree_close(got, want, rtol=1e-12, atol=1e-12, err_msg="jvp")
  ref.assert_tree_close(transposed, vjp, rtol=1e-12, atol=1e-12, err_msg="transpose")


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"hidden_size: expected a multiple of num_heads=3"):
    jaxrnn.slstm(8, num_heads=3)
  with pytest.raises(ValueError, match="num_heads"):
    jaxrnn.slstm(8, num_heads=0)
  with pytest.raises(TypeError, match="num_heads"):
    jaxrnn.slstm(8, num_heads=2.0)
  params = random_params(16)
  carry = CELL.init_carry()
  with pytest.raises(ValueError, match=r"^x: .*\(32,\).*got shape \(5,\)"):
    CELL.cell_apply(params, carry, jnp.ones(5))
  with pytest.raises(ValueError, match=r"^xs: .*input_size=32.*\(6, 5\)"):
    jaxrnn.rnn(CELL).apply(params, jnp.ones((T, 5)))
  with pytest.raises(TypeError, match=r"^params: .*expects SLSTMParams"):
    CELL.cell_apply(jaxrnn.LSTMParams(*params, None), carry, jnp.ones(D))
  # R: the blocks of slstm(8) with one head.
  bad = {"W_x": params.W_x[:, :-1], "R": np.zeros((1, H, 4 * H), np.float32),
         "b": params.b[:-4]}
  for name, value in bad.items():
    with pytest.raises(ValueError, match=rf"^params.{name}: slstm\(hidden_size=8, num_heads=2\)"):
      CELL.cell_apply(params._replace(**{name: value}), carry, jnp.ones(D))
  with pytest.raises(ValueError, match="carry"):
    CELL.cell_apply(params, carry._replace(m=jnp.zeros(H + 1)), jnp.ones(D))
