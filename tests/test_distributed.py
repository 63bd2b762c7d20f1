"""Data-parallel helpers: jaxrnn.batch_mesh, shard_batch, replicate, data_parallel_step.

The multi-device checks run in subprocesses, because the number of simulated
CPU devices is fixed when JAX starts: one process with 8 devices, and two
processes of 2 devices each joined by ``jax.distributed.initialize``. Each
subprocess writes what it measured to a JSON file and the arrays to compare
to an ``.npz`` file; the assertions are made here. The references are the
same computations jit-compiled on ONE device without any sharding (8
devices), and closed-form NumPy losses and gradients (two processes, and the
in-process checks on a 1-device mesh).
"""

import re
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxrnn
import reference as ref

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "data_parallel.py"


def _env(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
  return env


# ---------------------------------------------------------------------------
# 8 simulated devices, one process

EIGHT_DEVICES = textwrap.dedent("""
    import contextlib, io, json, runpy, sys
    import jax, numpy as np, optax
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxrnn

    example_path, out_dir = sys.argv[1], sys.argv[2]
    ex = runpy.run_path(example_path, run_name="data_parallel_example")
    out, arrays = {"device_count": jax.device_count()}, {}
    B = 16
    mesh = jaxrnn.batch_mesh()
    out["mesh"] = [list(mesh.axis_names), list(mesh.devices.shape)]

    # (1) loss and gradients: sharded step vs one device, no sharding.
    xs, lengths, targets = ex["global_batch"](1, B)
    lengths[:3] = [0, 1, xs.shape[1]]
    params = ex["net"].init_params(jax.random.key(1), 1)
    value_and_grad = jax.value_and_grad(ex["loss_fn"])
    loss_1, grads_1 = jax.jit(value_and_grad)(params, xs, lengths, targets)  # no sharding
    step = jaxrnn.data_parallel_step(value_and_grad, mesh, batch_argnums=(1, 2, 3))
    batch = jaxrnn.shard_batch((xs, lengths, targets), mesh)
    params_8 = jaxrnn.replicate(params, mesh)
    compiled = step.lower(params_8, *batch).compile()  # compiled once, run, inspected
    loss_8, grads_8 = compiled(params_8, *batch)
    out["loss"] = [float(loss_1), float(loss_8)]
    for i, (g1, g8) in enumerate(zip(jax.tree_util.tree_leaves(grads_1),
                                     jax.tree_util.tree_leaves(grads_8))):
      arrays[f"grad_1_{i}"], arrays[f"grad_8_{i}"] = np.asarray(g1), np.asarray(g8)
    out["all_reduce_in_hlo"] = "all-reduce" in compiled.as_text()

    # (2) where things are.
    def placement(a):
      return {
          "named": isinstance(a.sharding, NamedSharding),
          "spec_batch": a.sharding.spec == P("batch"),
          "replicated": bool(a.sharding.is_fully_replicated),
          "num_devices": len(a.sharding.device_set),
          "shards": [[list(s.data.shape), s.index[0].start, s.index[0].stop]
                     if a.ndim else [[], None, None] for s in a.addressable_shards],
      }
    out["batch"] = [placement(a) for a in batch]
    out["shard_rows_match"] = all(
        np.array_equal(np.asarray(s.data), host[s.index])
        for a, host in zip(batch, (xs, lengths, targets)) for s in a.addressable_shards)
    out["params_in"] = [placement(a) for a in jax.tree_util.tree_leaves(params_8)]
    out["grads_out"] = [placement(a) for a in jax.tree_util.tree_leaves(grads_8)]
    out["loss_out"] = placement(loss_8)

    # A 2-D mesh: the batch is split over "batch" and copied over "model".
    mesh_2d = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("batch", "model"))
    xs_2d = jaxrnn.shard_batch(xs, mesh_2d)
    out["mesh_2d"] = placement(xs_2d)

    # (3) a few optax steps with the example's training loop vs one device.
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
      params_dp, losses_dp = ex["main"](ex["parse_args"](
          ["--steps", "3", "--batch", str(B), "--log-every", "1"]))
    out["example_output"] = text.getvalue()
    # One device: the gradient step compiled for (1), then the same update.
    @jax.jit
    def apply_update(params, opt_state, grads):
      updates, opt_state = ex["optimizer"].update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    params_1 = ex["net"].init_params(jax.random.key(ex["SEED"]), 1)
    opt_state = ex["optimizer"].init(params_1)
    losses_1 = []
    for i in range(1, 4):
      loss, grads = jax.jit(value_and_grad)(params_1, *ex["global_batch"](i, B))
      params_1, opt_state = apply_update(params_1, opt_state, grads)
      losses_1.append(float(loss))
    out["train_losses"] = [losses_1, losses_dp]
    for i, (p1, p8) in enumerate(zip(jax.tree_util.tree_leaves(params_1),
                                     jax.tree_util.tree_leaves(params_dp))):
      arrays[f"param_1_{i}"], arrays[f"param_8_{i}"] = np.asarray(p1), np.asarray(p8)
    out["params_after"] = [placement(a) for a in jax.tree_util.tree_leaves(params_dp)]
    for i, p0 in enumerate(jax.tree_util.tree_leaves(
        ex["net"].init_params(jax.random.key(ex["SEED"]), 1))):
      arrays[f"init_{i}"] = np.asarray(p0)

    # (4) a batch that does not split evenly.
    def error(fn):
      try:
        fn()
      except (ValueError, TypeError) as e:
        return [type(e).__name__, str(e)]
      return None
    out["error_12"] = error(lambda: jaxrnn.shard_batch((xs[:12], lengths[:12]), mesh))
    out["error_one_leaf"] = error(lambda: jaxrnn.shard_batch((xs, lengths[:10]), mesh))
    out["error_2d"] = error(lambda: jaxrnn.shard_batch(xs[:6], mesh_2d))

    np.savez(f"{out_dir}/arrays.npz", **arrays)
    with open(f"{out_dir}/out.json", "w") as f:
      json.dump(out, f)
""")


@pytest.mark.slow
def test_eight_simulated_devices(tmp_path):
  # One subprocess for every 8-device check (a test each would, under
  # pytest-xdist, start it once per worker).
  script = tmp_path / "check.py"
  script.write_text(EIGHT_DEVICES)
  proc = subprocess.run(
      [sys.executable, str(script), str(EXAMPLE), str(tmp_path)], env=_env(8),
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads((tmp_path / "out.json").read_text())
  with np.load(tmp_path / "arrays.npz") as f:
    arrays = dict(f)
  _check_loss_and_grads_match_one_device(out, arrays)
  _check_batch_is_split_and_params_replicated(out)
  _check_training_matches_one_device(out, arrays)
  _check_uneven_batch_raises(out)


def _pairs(arrays, prefix):
  names = sorted((k for k in arrays if k.startswith(f"{prefix}_1_")),
                 key=lambda k: int(k.rsplit("_", 1)[1]))
  assert names
  return [(arrays[k], arrays[k.replace(f"{prefix}_1_", f"{prefix}_8_")]) for k in names]


def _check_loss_and_grads_match_one_device(out, arrays):
  assert out["device_count"] == 8
  assert out["mesh"] == [["batch"], [8]]
  loss_1, loss_8 = out["loss"]
  assert abs(loss_1 - loss_8) <= 1e-5 * max(1.0, abs(loss_1))
  for g_1, g_8 in _pairs(arrays, "grad"):
    assert g_1.shape == g_8.shape
    assert np.all(np.isfinite(g_1)) and np.any(g_1 != 0)
    np.testing.assert_allclose(g_8, g_1, rtol=1e-5, atol=1e-5 * np.abs(g_1).max())
  # XLA added the gradient reduction across devices.
  assert out["all_reduce_in_hlo"]


def _check_batch_is_split_and_params_replicated(out):
  B = 16
  for leaf in out["batch"]:
    assert leaf["named"] and leaf["spec_batch"] and not leaf["replicated"]
    assert leaf["num_devices"] == 8 and len(leaf["shards"]) == 8
    assert sorted((start, stop) for _, start, stop in leaf["shards"]) == [
        (k * B // 8, (k + 1) * B // 8) for k in range(8)]
    assert all(shape[0] == B // 8 for shape, _, _ in leaf["shards"])
  assert [s[0][1:] for s in (leaf["shards"][0] for leaf in out["batch"])] == [[24, 1], [], [24, 1]]
  assert out["shard_rows_match"]
  for group in ("params_in", "grads_out", "params_after"):
    assert out[group]
    for leaf in out[group]:
      assert leaf["named"] and leaf["replicated"] and leaf["num_devices"] == 8, group
      assert len(leaf["shards"]) == 8
  assert out["loss_out"]["replicated"] and out["loss_out"]["num_devices"] == 8
  # 2-D mesh (4 x 2): 4 row blocks, each on the 2 devices of the "model" axis.
  mesh_2d = out["mesh_2d"]
  assert mesh_2d["spec_batch"] and len(mesh_2d["shards"]) == 8
  assert sorted((start, stop) for _, start, stop in mesh_2d["shards"]) == [
      (k * 4, (k + 1) * 4) for k in range(4) for _ in range(2)]


def _check_training_matches_one_device(out, arrays):
  losses_1, losses_8 = out["train_losses"]
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
  assert len(losses_1) == 3
  for p_1, p_8 in _pairs(arrays, "param"):
    np.testing.assert_allclose(p_8, p_1, rtol=1e-5, atol=1e-5)
  # The steps changed the params (the comparison is not between two inits).
  moved = [np.abs(arrays[f"init_{i}"] - p_1).max()
           for i, (p_1, _) in enumerate(_pairs(arrays, "param"))]
  assert min(moved) > 1e-4
  text = out["example_output"]
  assert "devices: 8 x cpu" in text
  assert "8 shards of (2, 24, 1)" in text
  assert "params: replicated=True on 8 devices" in text
  assert text.count(" loss ") == 3


def _check_uneven_batch_raises(out):
  kind, message = out["error_12"]
  assert kind == "ValueError"
  assert message.startswith("tree: batch size 12")
  assert "not divisible by the 8 devices of mesh axis 'batch'" in message
  kind, message = out["error_one_leaf"]
  assert kind == "ValueError" and message.startswith("tree: batch size 10")
  assert "tree[1]" in message
  kind, message = out["error_2d"]
  assert kind == "ValueError" and "not divisible by the 4 devices" in message


# ---------------------------------------------------------------------------
# Two processes of 2 devices each (jax.distributed on CPU)

TWO_PROCESSES = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    coordinator, process_id, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator, num_processes=2, process_id=process_id)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import jaxrnn

    head = jaxrnn.readout(2)
    def loss_fn(params, xs, lengths):
      ys, _ = jax.vmap(head.apply, in_axes=(None, 0))(params, xs, length=lengths)
      return jnp.mean(jaxrnn.sequence_loss(jnp.sum(ys ** 2, axis=-1), lengths))

    rng = np.random.default_rng(0)  # the same global batch on both processes
    xs = rng.standard_normal((8, 5, 3)).astype(np.float32)
    lengths = np.array([5, 0, 3, 1, 2, 5, 4, 1], np.int32)
    rows = slice(4 * process_id, 4 * process_id + 4)  # this process's rows
    params = head.init_params(jax.random.key(0), 3)
    params = params._replace(b_y=jnp.array([0.5, -1.0]))

    mesh = jaxrnn.batch_mesh()
    batch = jaxrnn.shard_batch((xs[rows], lengths[rows]), mesh)
    step = jaxrnn.data_parallel_step(jax.value_and_grad(loss_fn), mesh, batch_argnums=(1, 2))
    loss, grads = step(jaxrnn.replicate(params, mesh), *batch)
    try:
      jaxrnn.shard_batch(xs[:3], mesh)
      error = None
    except ValueError as e:
      error = str(e)
    out = {
        "process_count": jax.process_count(), "device_count": jax.device_count(),
        "global_shape": list(batch[0].shape),
        "local_shards": len(batch[0].addressable_shards),
        "fully_addressable": batch[0].is_fully_addressable,
        "grads_replicated": all(g.sharding.is_fully_replicated for g in grads),
        "loss": float(loss), "error": error,
    }
    np.savez(f"{out_dir}/out_{process_id}.npz", W_hy=np.asarray(grads.W_hy.addressable_data(0)),
             b_y=np.asarray(grads.b_y.addressable_data(0)), W=np.asarray(params.W_hy),
             b=np.asarray(params.b_y), xs=xs, lengths=lengths)
    with open(f"{out_dir}/out_{process_id}.json", "w") as f:
      json.dump(out, f)
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_feed_their_own_rows(tmp_path):
  script = tmp_path / "check.py"
  script.write_text(TWO_PROCESSES)
  coordinator = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, str(script), coordinator, str(i), str(tmp_path)], env=_env(2),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  for i in range(2):
    out = json.loads((tmp_path / f"out_{i}.json").read_text())
    assert out["process_count"] == 2 and out["device_count"] == 4
    # Each process gave 4 rows; the global batch has 8, 2 on each device.
    assert out["global_shape"] == [8, 5, 3]
    assert out["local_shards"] == 2 and not out["fully_addressable"]
    assert out["grads_replicated"]
    loss = out["loss"]
    assert out["error"].startswith("tree: batch size 3")
    assert f"held by process {i}" in out["error"]
    # NumPy reference over the whole batch: L = mean_b sum_{t<n_b} |x_bt W + b|^2.
    with np.load(tmp_path / f"out_{i}.npz") as f:
      xs, lengths, W, b = (f[k].astype(np.float64) for k in ("xs", "lengths", "W", "b"))
      valid = (np.arange(5)[None, :] < lengths[:, None]).astype(np.float64)[..., None]
      ys = (xs @ W + b[None, None, :]) * valid
      np.testing.assert_allclose(loss, np.sum(ys ** 2) / 8, rtol=1e-5)
      np.testing.assert_allclose(f["W_hy"], 2 / 8 * np.einsum("btd,bto->do", xs, ys), rtol=1e-5)
      np.testing.assert_allclose(f["b_y"], 2 / 8 * ys.sum(axis=(0, 1)), rtol=1e-5)


# ---------------------------------------------------------------------------
# In this process, on a 1-device mesh


@pytest.fixture
def mesh():
  return jaxrnn.batch_mesh(jax.devices()[:1])


def test_batch_mesh_over_all_devices():
  mesh = jaxrnn.batch_mesh()
  assert isinstance(mesh, jax.sharding.Mesh)
  assert mesh.axis_names == ("batch",)
  assert mesh.devices.shape == (jax.device_count(),)
  assert set(mesh.devices.flat) == set(jax.devices())


def test_batch_mesh_given_devices_and_axis_name():
  device = jax.devices()[0]
  mesh = jaxrnn.batch_mesh([device], axis_name="data")
  assert mesh.axis_names == ("data",)
  assert list(mesh.devices.flat) == [device]


@pytest.mark.parametrize("devices, axis_name, error, message", [
    ([], "batch", ValueError, "devices: expected at least one device, got none"),
    (["cpu:0"], "batch", TypeError, "devices: expected jax.Device entries, got str at index 0"),
    (None, 0, TypeError, "axis_name: expected a str, got int 0"),
])
def test_batch_mesh_rejects(devices, axis_name, error, message):
  with pytest.raises(error) as info:
    jaxrnn.batch_mesh(devices, axis_name=axis_name)
  assert str(info.value) == message


def test_batch_mesh_rejects_repeated_device():
  device = jax.devices()[0]
  with pytest.raises(ValueError, match=r"^devices: every device may appear once, got \[" +
                     re.escape(repr(device)) + ", " + re.escape(repr(device)) + r"\]$"):
    jaxrnn.batch_mesh([device, device])


def test_shard_batch_keeps_structure_and_values(mesh):
  xs = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
  batch = {"xs": xs, "lengths": np.array([3, 0, 1, 2], np.int32),
           "targets": jaxrnn.LSTMState(h=jnp.ones((4, 3)), c=jnp.zeros((4, 1)))}
  out = jaxrnn.shard_batch(batch, mesh)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(batch)
  for got, want in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(batch)):
    assert isinstance(got, jax.Array)
    assert got.sharding == NamedSharding(mesh, P("batch"))
    assert got.dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_shard_batch_custom_axis_name():
  mesh = jaxrnn.batch_mesh(jax.devices()[:1], axis_name="data")
  xs = jaxrnn.shard_batch(np.ones((2, 3)), mesh, axis_name="data")
  assert xs.sharding.spec == P("data")
  with pytest.raises(ValueError, match=r"^axis_name: 'batch' is not an axis of mesh, whose "
                     r"axes are \('data',\)$"):
    jaxrnn.shard_batch(np.ones((2, 3)), mesh)


@pytest.mark.parametrize("tree, error, message", [
    ((np.ones((2, 3)), np.float32(1.0)), ValueError,
     "tree: every leaf needs a leading batch axis, got a scalar at tree[1]"),
    ({"n": 3}, ValueError, "tree: every leaf needs a leading batch axis, got a scalar at tree['n']"),
    ((), ValueError, "tree: expected at least one array, got an empty pytree"),
])
def test_shard_batch_rejects(mesh, tree, error, message):
  with pytest.raises(error) as info:
    jaxrnn.shard_batch(tree, mesh)
  assert str(info.value) == message


def test_helpers_reject_a_non_mesh():
  not_a_mesh = r"^mesh: expected a jax\.sharding\.Mesh \(see jaxrnn\.batch_mesh\), got {}$"
  with pytest.raises(TypeError, match=not_a_mesh.format("list")):
    jaxrnn.shard_batch(np.ones((2, 3)), jax.devices())
  with pytest.raises(TypeError, match=not_a_mesh.format("str")):
    jaxrnn.replicate(np.ones(3), "batch")
  with pytest.raises(TypeError, match=not_a_mesh.format("NoneType")):
    jaxrnn.data_parallel_step(lambda p, x: p, None, batch_argnums=1)


def test_replicate(mesh):
  params = ref.random_params(jaxrnn.readout(3), 0, 2)  # host numbers: nothing to compile
  out = jaxrnn.replicate(params, mesh)
  assert type(out) is type(params)
  for got, want in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(params)):
    assert got.sharding == NamedSharding(mesh, P())
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _linear_loss(w, x, y):
  return jnp.mean((x @ w - y) ** 2)


def test_data_parallel_step_matches_closed_form(mesh):
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 2)).astype(np.float32)
  x = rng.standard_normal((6, 3)).astype(np.float32)
  y = rng.standard_normal((6, 2)).astype(np.float32)
  step = jaxrnn.data_parallel_step(jax.value_and_grad(_linear_loss), mesh, batch_argnums=(1, 2))
  loss, grad = step(jaxrnn.replicate(w, mesh), *jaxrnn.shard_batch((x, y), mesh))
  residual = x.astype(np.float64) @ w - y
  np.testing.assert_allclose(float(loss), np.mean(residual ** 2), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), 2 * x.T @ residual / residual.size, rtol=1e-5)
  assert grad.sharding == NamedSharding(mesh, P())
  # Plain host arrays are placed by the step itself.
  loss_np, _ = step(w, x, y)
  np.testing.assert_allclose(float(loss_np), float(loss), rtol=1e-6)


def test_data_parallel_step_donates(mesh):
  def update(w, x):
    return w - 0.1 * jnp.mean(x, axis=0)
  step = jaxrnn.data_parallel_step(update, mesh, batch_argnums=1, donate_argnums=0)
  w = jaxrnn.replicate(jnp.ones(3), mesh)
  new = step(w, jaxrnn.shard_batch(np.full((4, 3), 2.0, np.float32), mesh))
  np.testing.assert_allclose(np.asarray(new), np.full(3, 0.8), rtol=1e-6)
  assert w.is_deleted()


@pytest.mark.parametrize("step_fn, kwargs, error, message", [
    ("not a function", {"batch_argnums": 0}, TypeError,
     "step_fn: expected a callable, got str"),
    (lambda *args: args, {"batch_argnums": 0}, TypeError,
     "step_fn: expected a fixed number of positional parameters, got *args; wrap it in a "
     "function with named parameters"),
    (lambda w, x: w, {"batch_argnums": 2}, ValueError,
     "batch_argnums: index 2 is out of range for a step_fn with 2 positional parameters"),
    (lambda w, x: w, {"batch_argnums": ()}, ValueError,
     "batch_argnums: expected at least one minibatch argument, got none"),
    (lambda w, x: w, {"batch_argnums": True}, TypeError,
     "batch_argnums: expected an int or a tuple of ints, got True"),
    (lambda w, x: w, {"batch_argnums": 1, "donate_argnums": (5,)}, ValueError,
     "donate_argnums: index 5 is out of range for a step_fn with 2 positional parameters"),
    (lambda w, x: w, {"batch_argnums": 1, "axis_name": "data"}, ValueError,
     "axis_name: 'data' is not an axis of mesh, whose axes are ('batch',)"),
])
def test_data_parallel_step_rejects(mesh, step_fn, kwargs, error, message):
  with pytest.raises(error) as info:
    jaxrnn.data_parallel_step(step_fn, mesh, **kwargs)
  assert str(info.value) == message
