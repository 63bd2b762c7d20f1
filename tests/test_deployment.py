"""Stepping, every step's carry, and `jax.export`, against independent references.

* `as_cell`: a stack stepped under ``lax.scan`` equals a float64 NumPy loop
  over the cells' equations (`reference`), and ``layer.apply``.
* ``rnn(..., return_carries=True)``: the carry after every step equals the
  NumPy loop's, zero at padding, forward and reversed, on the fused,
  linear, parallel and reference paths; its gradient on the fused path
  equals plain autodiff of the reference path.
* `jax.export`: a jitted, vmapped stack with symbolic batch and time sizes,
  exported for cpu, cuda and tpu, runs from its serialized bytes in a fresh
  process and gives ``layer.apply``'s numbers; each platform gets its own
  engine settings; every public NamedTuple serializes.
"""

import functools
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import D, H

B, T = 3, 6
LENGTHS = np.array([6, 4, 0], np.int32)
TOL = {"rtol": 2e-5, "atol": 2e-5}


def _batch(seed):
  xs = np.random.default_rng(seed).standard_normal((B, T, D)).astype(np.float32)
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan  # padding reaches nothing
  return jnp.asarray(xs)


# ---------------------------------------------------------------------------
# as_cell


NET = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.gru(H), zoneout=0.25),
                   jaxrnn.readout(2))


def numpy_net(params, xs):
  """The stack over one sequence, one step at a time: float64 NumPy."""
  p_lstm, p_gru, p_out = (ref.np_params(p) for p in params)
  lstm_c, gru_h = (np.zeros(H), np.zeros(H)), np.zeros(H)
  ys = []
  for x in np.asarray(xs, np.float64):
    lstm_c, h1 = ref.lstm_step(p_lstm, lstm_c, x)
    new, _ = ref.gru_step(p_gru, gru_h, h1)
    gru_h = 0.25 * gru_h + 0.75 * new  # zoneout without a key: its expectation
    ys.append(gru_h @ p_out["W_hy"] + p_out["b_y"])
  return np.stack(ys), (lstm_c, gru_h)


def test_as_cell_steps_a_stack_as_its_layer_runs():
  step = jaxrnn.as_cell(NET)
  params = ref.random_params(NET, seed=0)
  assert step.output_size == 2 and dict(step.config)["layer"] is NET
  xs = _batch(1)[:2]  # two full rows

  @jax.jit
  def stepped(params, xs):
    def one(xs):
      return jax.lax.scan(lambda c, x: step.cell_apply(params, c, x), step.init_carry(), xs)
    return jax.vmap(one)(xs)

  carry, ys = stepped(params, xs)
  for b in range(2):
    expected_ys, (lstm_c, gru_h) = numpy_net(params, xs[b])
    ref.assert_tree_close(ys[b], expected_ys, **TOL)
    ref.assert_tree_close(jax.tree_util.tree_map(lambda a: a[b], carry),
                          ((jaxrnn.LSTMState(*lstm_c)), gru_h, ()), **TOL)
  layer_ys, layer_carry = jax.vmap(lambda x: NET.apply(params, x))(xs)
  ref.assert_tree_close(ys, layer_ys, **TOL)
  ref.assert_tree_close(carry, layer_carry, **TOL)


@pytest.mark.parametrize("layer, culprit", [
    (jaxrnn.rnn(jaxrnn.gru(2), reverse=True), "layer (rnn, reverse=True)"),
    (jaxrnn.stack(jaxrnn.rnn(jaxrnn.gru(2)), jaxrnn.bidirectional(jaxrnn.gru(2), jaxrnn.gru(2))),
     "layer.layers[1] (bidirectional)"),
    (jaxrnn.rnn2d(jaxrnn.lstm2d(2)), "layer (rnn2d)"),
    (jaxrnn.Layer(lambda *a: (), lambda p, xs, **k: (xs, ()), lambda dtype=None: ()),
     "layer (a user layer)"),
])
def test_as_cell_refuses_what_needs_the_whole_sequence(layer, culprit):
  with pytest.raises(ValueError, match="layer: as_cell steps causal layers .*"
                     + re.escape(culprit)):
    jaxrnn.as_cell(layer)
  with pytest.raises(TypeError, match="layer"):
    jaxrnn.as_cell(jaxrnn.gru(2))


# ---------------------------------------------------------------------------
# Every step's carry


def numpy_carries(step, p, xs, carry, length, reverse):
  """The carry after every step (zeros at padding), by a NumPy loop."""
  flat = lambda c: [np.asarray(v, np.float64) for v in (c if isinstance(c, tuple) else (c,))]
  carries = [[np.zeros_like(v) for v in flat(carry)] for _ in range(T)]
  for t in (range(length - 1, -1, -1) if reverse else range(length)):
    carry, _ = step(p, carry, np.asarray(xs[t], np.float64))
    carries[t] = flat(carry)
  return [np.stack([c[k] for c in carries]) for k in range(len(carries[0]))]


CARRY_CASES = {  # name: (cell, NumPy step, method); reverse alternates
    "lstm-fused": (lambda: jaxrnn.lstm(H), ref.lstm_step, "sequential"),
    "gru-before-reference": (lambda: jaxrnn.gru(H, reset_after=False), ref.gru_before_step,
                             "auto"),
    "min_gru-linear": (lambda: jaxrnn.min_gru(H), ref.min_gru_step, "sequential"),
    "lru-parallel": (lambda: jaxrnn.lru(H), ref.lru_step, "parallel"),
}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CARRY_CASES)
def test_return_carries_is_the_carry_after_every_step(name, reverse):
  make, step, method = CARRY_CASES[name]
  cell = make()
  layer = jaxrnn.rnn(cell, return_carries=True, reverse=reverse, method=method)
  plain = jaxrnn.rnn(cell, reverse=reverse, method=method)
  params = ref.random_params(cell, seed=2)
  xs = _batch(3)
  run = jax.jit(jax.vmap(lambda p, x, n: (layer.apply(p, x, length=n),
                                          plain.apply(p, x, length=n)),
                         in_axes=(None, 0, 0)))
  ((ys, carries), final), (plain_ys, plain_final) = run(params, xs, jnp.asarray(LENGTHS))
  ref.assert_tree_close((ys, final), (plain_ys, plain_final), rtol=0, atol=0)
  initial = ref.np_carry(cell.init_carry())
  for b, n in enumerate(LENGTHS):
    expected = numpy_carries(step, ref.np_params(params), xs[b], initial, int(n), reverse)
    got = [leaf[b] for leaf in jax.tree_util.tree_leaves(carries)]
    ref.assert_tree_close(got, expected, **TOL)
    assert all(np.all(np.asarray(g[n:]) == 0) for g in got)


def test_return_carries_gradient_is_plain_autodiff_of_the_reference():
  """The fused path's JVP rule carries the new outputs' tangents too; with
  remat, lengths and reverse."""
  def loss(method, params, xs):
    layer = jaxrnn.rnn(jaxrnn.lstm(H), return_carries=True, reverse=True, method=method,
                       remat=2)
    (ys, carries), _ = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(
        xs, jnp.asarray(LENGTHS))
    return jnp.sum(jnp.sin(ys)) + jnp.sum(carries.c ** 2) + jnp.sum(jnp.cos(carries.h))

  params = ref.random_params(jaxrnn.lstm(H), seed=4)
  xs = _batch(5)
  grads = jax.jit(jax.grad(lambda *a: loss("sequential", *a), argnums=(0, 1)))(params, xs)
  expected = jax.jit(jax.grad(lambda *a: loss("reference", *a), argnums=(0, 1)))(params, xs)
  ref.assert_tree_close(grads, expected, **TOL)
  assert np.all(np.asarray(grads[1])[2] == 0)  # the empty row


def test_return_carries_is_the_last_layer_of_a_stack():
  with pytest.raises(ValueError, match=r"layers\[0\]: an rnn with return_carries=True"):
    jaxrnn.stack(jaxrnn.rnn(jaxrnn.gru(2), return_carries=True), jaxrnn.readout(2))
  with pytest.raises(TypeError, match="return_carries"):
    jaxrnn.rnn(jaxrnn.gru(2), return_carries=1)


# ---------------------------------------------------------------------------
# jax.export


EXPORT_NET = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.gru(H)),
                          jaxrnn.readout(2))


def _served(params, xs, lengths):
  return jax.vmap(lambda x, n: EXPORT_NET.apply(params, x, length=n)[0])(xs, lengths)


@functools.lru_cache(maxsize=None)
def _exported(platforms):
  params = jax.eval_shape(lambda k: EXPORT_NET.init_params(k, D), jax.random.key(0))
  b, t = jax.export.symbolic_shape("b, t")
  specs = (params, jax.ShapeDtypeStruct((b, t, D), jnp.float32),
           jax.ShapeDtypeStruct((b,), jnp.int32))
  return jax.export.export(jax.jit(_served), platforms=platforms)(*specs)


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import jax, numpy as np
    import jaxrnn  # registers the params' NamedTuples
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    inputs = np.load(sys.argv[2], allow_pickle=True)
    params_tree = exported.in_tree.children()[0].children()[0]  # ((params, xs, lengths), {})
    params = jax.tree_util.tree_unflatten(params_tree,
                                          [inputs[f"p{i}"] for i in range(int(inputs["n"]))])
    for shape in ("a", "b"):
      ys = exported.call(params, inputs["xs_" + shape], inputs["len_" + shape])
      np.save(sys.argv[3] + shape + ".npy", np.asarray(ys))
""")


def test_a_stack_exports_with_symbolic_sizes_and_runs_in_a_fresh_process(tmp_path):
  exported = _exported(("cpu", "cuda", "tpu"))
  assert exported.platforms == ("cpu", "cuda", "tpu")
  (tmp_path / "net.bin").write_bytes(exported.serialize())
  params = ref.random_params(EXPORT_NET, seed=6)
  leaves = jax.tree_util.tree_leaves(params)
  rng = np.random.default_rng(7)
  inputs = {"xs_a": rng.standard_normal((2, 5, D)).astype(np.float32),
            "len_a": np.array([5, 3], np.int32),
            "xs_b": rng.standard_normal((5, 9, D)).astype(np.float32),  # wider than narrow
            "len_b": np.array([9, 0, 4, 9, 1], np.int32)}
  np.savez(tmp_path / "inputs.npz", n=len(leaves), **inputs,
           **{f"p{i}": np.asarray(v) for i, v in enumerate(leaves)})
  script = tmp_path / "serve.py"
  script.write_text(FRESH_PROCESS)
  subprocess.run([sys.executable, str(script), str(tmp_path / "net.bin"),
                  str(tmp_path / "inputs.npz"), str(tmp_path / "ys_")], check=True,
                 env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  for shape in ("a", "b"):
    got = np.load(tmp_path / f"ys_{shape}.npy")
    want = _served(params, jnp.asarray(inputs["xs_" + shape]), jnp.asarray(inputs["len_" + shape]))
    ref.assert_tree_close(got, want, **TOL)
    assert np.all(got[np.arange(got.shape[1])[None] >= inputs["len_" + shape][:, None]] == 0)


def test_each_platform_lowers_with_its_own_settings():
  """The CPU table reads and writes the steps in place, batch-major (under
  vmap: gathers and scatters in the loop); the GPU table has the scan stack
  them time-major (transposes around the loop). Exported from this
  CPU-only machine, the cuda program has the GPU's loop, the cpu program
  the CPU's."""
  count = lambda program, op: program.count(f"stablehlo.{op}")
  cpu = _exported(("cpu",)).mlir_module()
  cuda = _exported(("cuda",)).mlir_module()
  assert count(cpu, "scatter") > 0 and count(cuda, "scatter") == 0
  assert count(cuda, "transpose") > count(cpu, "transpose")


def test_every_public_namedtuple_serializes():
  types = [getattr(jaxrnn, n) for n in jaxrnn.__all__
           if isinstance(getattr(jaxrnn, n), type) and hasattr(getattr(jaxrnn, n), "_fields")]
  assert len(types) >= 20
  tree = tuple(cls(*[np.float32(i)] * len(cls._fields)) for i, cls in enumerate(types))
  exported = jax.export.export(jax.jit(lambda t: t))(tree)
  again = jax.export.deserialize(exported.serialize())
  assert again.in_tree == jax.tree_util.tree_structure(((tree,), {})) == exported.in_tree
  assert again.out_tree == jax.tree_util.tree_structure(tree)
