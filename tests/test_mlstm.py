"""`mlstm` against mlstm_kernels 2.0.6's native step, the authors' code.

``cell_apply`` is compared with ``mlstm_recurrent_step__native_fw`` (the JAX
module, loaded from its file: the package's ``jax/__init__.py`` imports
jax_triton) over several steps, from a zero and from a random state, with
two heads. Every method of ``rnn`` (the reference scan, the chunkwise form
in one chunk and in chunks of 3 steps, ``"auto"`` past its crossover,
remat, every step's carry) is compared under ``jit(vmap)`` with a Python
loop over ``cell_apply`` that follows the ``length``/``reverse``/``reset``
contract literally, starting from a given carry and restarting from a
learned one; the chunkwise form's gradient equals the reference scan's.
"""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn._src.cells import mlstm as mlstm_lib
import reference as ref

B, T, D, H, K = 3, 7, 3, 8, 2
LENGTHS = np.array([7, 5, 0], np.int32)
RESET = np.zeros((B, T), bool)
RESET[0, [0, 3, 4]] = True  # the given carry discarded; a one-step segment
RESET[1, 2] = True
RESET[2, 1] = True  # on padding: no effect
CHUNKED = mlstm_lib._cell(H, K, chunk=3)  # 3 chunks, the last padded
PUBLIC = jaxrnn.mlstm(H, num_heads=K)  # one chunk
STEP = jax.jit(PUBLIC.cell_apply)


@functools.lru_cache(maxsize=None)
def _native_step():
  """mlstm_kernels' ``mlstm_recurrent_step__native_fw``, from its file."""
  spec = importlib.util.find_spec("mlstm_kernels")
  path = pathlib.Path(spec.submodule_search_locations[0]) / "jax/recurrent/native_step.py"
  source = path.read_text()
  assert "import jax_triton" not in source and "from ." not in source  # loads alone
  module_spec = importlib.util.spec_from_file_location("mlstm_kernels_native_step", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return jax.jit(module.mlstm_recurrent_step__native_fw)


def _params(seed):
  """Random params with gate biases that make the stabiliser matter."""
  params = ref.random_params(PUBLIC, seed, input_size=D, scale=0.8)
  return params._replace(b_i=jnp.asarray([2.5, -1.5]), b_f=jnp.asarray([1.0, -2.0]))


def _state(seed):
  d = H // K
  rng = np.random.default_rng(seed)
  return jaxrnn.MLSTMState(
      C=jnp.asarray(rng.standard_normal((K, d, d)), jnp.float32),
      n=jnp.asarray(rng.standard_normal((K, d)), jnp.float32),
      m=jnp.asarray(rng.standard_normal(K), jnp.float32))


def _native_cell_apply(params, state, x):
  """One step by mlstm_kernels' native step, with the cell's projections
  and output gate around it (a batch of one)."""
  d = H // K
  heads = lambda a: jnp.reshape(a, (1, K, d))
  q, k, v = (heads(x @ w) for w in (params.W_q, params.W_k, params.W_v))
  i, f = (jnp.reshape(x @ w + b, (1, K, 1)) for w, b in ((params.W_i, params.b_i),
                                                         (params.W_f, params.b_f)))
  h, (C, n, m) = _native_step()(state.C[None], state.n[None], state.m[None, :, None],
                                q, k, v, i, f)
  y = jax.nn.sigmoid(x @ params.W_o + params.b_o) * jnp.reshape(h, (H,))
  return jaxrnn.MLSTMState(C[0], n[0], m[0, :, 0]), y


def test_cell_apply_equals_mlstm_kernels_native_step():
  params = _params(0)
  xs = ref.random_xs(1, (6, D)) * 2
  for start in (PUBLIC.init_carry(), _state(2)):
    carry, want = start, start
    for x in xs:
      carry, y = STEP(params, carry, x)
      want, y_want = _native_cell_apply(params, want, x)
      ref.assert_tree_close((carry, y), (want, y_want), rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(carry.m))) > 1  # the stabiliser moved


def _loop(params, xs, carry, n, reverse, reset):
  """``(ys, carries, carry)`` of one example by a Python loop over
  ``cell_apply``: the valid prefix in scan order, restarting from the
  learned carry at each segment's first step (for a reversed scan, its
  last); zeros on padding."""
  order = range(n - 1, -1, -1) if reverse else range(n)
  ys = np.zeros((T, H), np.float32)
  carries = jax.tree_util.tree_map(lambda a: np.zeros((T,) + a.shape, np.float32), carry)
  for t in order:
    restart = (t + 1 < n and reset[t + 1]) if reverse else reset[t]
    if restart:
      carry = params.initial_carry
    carry, ys[t] = STEP(params.cell, carry, xs[t])
    for leaf, value in zip(carries, carry):
      leaf[t] = value
  return ys, carries, carry


# The layers under test, each with a learned carry: (cell, rnn's options).
# Every step's carry is asked of the chunkwise form in chunks of 3 only
# (the reference scan's is tested with the other cells).
LAYERS = {
    "sequential": (PUBLIC, dict(method="sequential")),
    "chunks of 3": (CHUNKED, dict(method="parallel", return_carries=True)),
    "one chunk": (PUBLIC, dict(method="parallel")),
    "auto": (PUBLIC, dict(method="auto")),
    "remat": (CHUNKED, dict(method="parallel", remat=2)),
}


@functools.lru_cache(maxsize=None)
def _program(reverse):
  """Every layer's ``(ys, carry)`` under ``jit(vmap)``, in one program;
  ``"auto"`` traced past its crossover."""

  def all_methods(params, xs, carry, n, r):
    out = {}
    for name, (cell, options) in LAYERS.items():
      layer = jaxrnn.rnn(cell, reverse=reverse, learned_carry=True, **options)
      run = lambda p, x, c, n, r: layer.apply(p, x, carry=c, length=n, reset=r)
      out[name] = jax.vmap(run, in_axes=(None, 0, 0, 0, 0))(params, xs, carry, n, r)
    return out

  program = jax.jit(all_methods)

  def traced_with_auto_crossing(*args):
    with jaxrnn.engine_settings(parallel_min_steps={"mlstm": 1}):
      return program(*args)

  return traced_with_auto_crossing


def _inputs():
  params = jaxrnn.LearnedCarryParams(_params(3), _state(4))
  xs = np.array(ref.random_xs(5, (B, T, D)))
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan  # padding never reaches a valid output
  carry = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[_state(6 + b) for b in range(B)])
  return params, jnp.asarray(xs), carry


@pytest.mark.parametrize("reverse", [False, True])
def test_every_method_equals_a_loop_over_cell_apply(reverse):
  params, xs, carry = _inputs()
  out = _program(reverse)(params, xs, carry, jnp.asarray(LENGTHS), jnp.asarray(RESET))
  for b, n in enumerate(LENGTHS):
    one = jax.tree_util.tree_map(lambda a: a[b], carry)
    want_ys, want_carries, want_final = _loop(params, np.asarray(xs[b]), one, n, reverse,
                                              RESET[b])
    for name, (ys, final) in out.items():
      if name == "chunks of 3":
        ys, carries = ys
        ref.assert_tree_close(jax.tree_util.tree_map(lambda a: a[b], carries),
                              want_carries, rtol=1e-4, atol=1e-5, err_msg=name)
      ref.assert_tree_close(ys[b], want_ys, rtol=1e-4, atol=1e-5, err_msg=name)
      ref.assert_tree_close(jax.tree_util.tree_map(lambda a: a[b], final), want_final,
                            rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_chunkwise_gradient_equals_the_reference_scans():
  params, xs, carry = _inputs()
  args = (params, xs, carry, jnp.asarray(LENGTHS), jnp.asarray(RESET))

  def loss(method, cell, params, xs, carry, n, r):
    layer = jaxrnn.rnn(cell, method=method, learned_carry=True)
    run = lambda p, x, c, n, r: layer.apply(p, x, carry=c, length=n, reset=r)
    ys, final = jax.vmap(run, in_axes=(None, 0, 0, 0, 0))(params, xs, carry, n, r)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.sin(final.C))

  grads = jax.jit(lambda *a: (
      jax.grad(functools.partial(loss, "parallel", CHUNKED), argnums=(0, 1, 2))(*a),
      jax.grad(functools.partial(loss, "reference", PUBLIC), argnums=(0, 1, 2))(*a)))
  chunkwise, reference_scan = grads(*args)
  ref.assert_tree_close(chunkwise, reference_scan, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(chunkwise[1])[2] == 0)  # the empty row


def test_initialisation_follows_xlstm():
  params = jaxrnn.mlstm(64, num_heads=4).init_params(jax.random.key(0), 32)
  np.testing.assert_allclose(params.b_f, [3.0, 4.0, 5.0, 6.0], rtol=1e-6)
  assert not np.any(params.W_i) and not np.any(params.W_f) and not np.any(params.b_o)
  np.testing.assert_allclose(np.std(params.W_q), np.sqrt(2 / (5 * 32)), rtol=0.1)
  assert 0 < np.std(params.b_i) < 0.3


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="hidden_size: expected a multiple of num_heads=3, got 8"):
    jaxrnn.mlstm(8, num_heads=3)
  with pytest.raises(ValueError, match="num_heads: expected a positive int, got 0"):
    jaxrnn.mlstm(8, num_heads=0)
  params = PUBLIC.init_params(jax.random.key(0), D)
  with pytest.raises(ValueError, match=r"^x: cell_apply expects shape \(3,\), got shape \(4,\)"):
    PUBLIC.cell_apply(params, PUBLIC.init_carry(), jnp.zeros(4))
  with pytest.raises(ValueError, match=r"^xs: rnn.apply expects shape \(T, 3\) to match its "
                                       r"params' input_size=3, got shape \(5, 4\)"):
    jaxrnn.rnn(PUBLIC).apply(params, jnp.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"^params.W_f: mlstm\(hidden_size=8, num_heads=2\) "
                                       r"expects shape \(3, 2\), got shape \(4, 2\)"):
    PUBLIC.cell_apply(params._replace(W_f=jnp.zeros((4, K))), PUBLIC.init_carry(), jnp.zeros(3))
  with pytest.raises(ValueError, match="^recurrent_dropout"):
    jaxrnn.rnn(PUBLIC, recurrent_dropout=0.1)
  with pytest.raises(ValueError, match="^zoneout"):
    jaxrnn.rnn(PUBLIC, zoneout=0.1)
