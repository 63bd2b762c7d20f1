"""Checkpoints: bit-exact round trips, optax states, resuming, parts, errors, pruning.

Every test writes small trees: what a checkpoint does never depends on the size of
an array, and each compiled program costs more than all the file work here.
"""

import json
import os
import re
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn


class Pair(NamedTuple):
  first: object
  second: object


def bits(x):
  """The raw bytes of an array (bit-exact comparison, NaN payloads included)."""
  x = np.asarray(x)
  return x.dtype.str, x.shape, x.tobytes()


def assert_bit_exact(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert bits(x) == bits(y)


def elman_params(seed, input_size=2, hidden_size=3, dtype=np.float32):
  rng = np.random.default_rng(seed)
  shapes = [(input_size, hidden_size), (hidden_size, hidden_size), (hidden_size,), (hidden_size,)]
  return jaxrnn.ElmanParams(*(jnp.asarray(rng.standard_normal(s), dtype) for s in shapes))


def mixed_tree():
  rng = np.random.default_rng(0)
  weird = np.array([np.nan, -0.0, np.inf, 1e-45], np.float32)
  return {
      "params": elman_params(0),
      "carry": jaxrnn.LSTMState(h=jnp.ones(3), c=-jnp.ones(3)),
      "bf16": jnp.asarray(rng.standard_normal((2, 3)), jnp.bfloat16),
      "f16": jnp.asarray(rng.standard_normal(4), jnp.float16),
      "special": jnp.asarray(weird),
      "ints": (jnp.arange(5, dtype=jnp.int8), np.arange(3, dtype=np.uint32)),
      "flag": jnp.array([True, False]),
      "nothing": None,
      "pair": Pair(first=jnp.zeros((0, 2)), second=jnp.float32(2.5)),
      "step": 17,
      "lr": 0.125,
      "key": jax.random.key(42),
      "empty": (),
  }


def test_round_trip_is_bit_exact(tmp_path):
  tree = mixed_tree()
  path = jaxrnn.save_checkpoint(tmp_path, 5, tree)
  assert path == tmp_path / "checkpoint_00000005.npz" and path.is_file()
  like = jax.tree.map(lambda x: x, mixed_tree())
  restored, step = jaxrnn.restore_checkpoint(tmp_path, like)
  assert step == 5
  assert_bit_exact(restored, tree)
  assert restored["nothing"] is None and restored["empty"] == ()
  assert isinstance(restored["step"], int) and restored["step"] == 17
  assert isinstance(restored["lr"], float) and restored["lr"] == 0.125
  assert isinstance(restored["ints"][1], np.ndarray)
  assert isinstance(restored["params"], jaxrnn.ElmanParams)
  assert isinstance(restored["carry"], jaxrnn.LSTMState)
  assert restored["bf16"].dtype == jnp.bfloat16
  # Restored keys work as keys.
  np.testing.assert_array_equal(jax.random.bits(restored["key"], (3,)),
                                jax.random.bits(jax.random.key(42), (3,)))


def test_float64_round_trip(x64, tmp_path):
  tree = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))}
  assert tree["w"].dtype == jnp.float64
  tree["tiny"] = jnp.array([np.finfo(np.float64).tiny, np.pi, -1 / 3])
  jaxrnn.save_checkpoint(tmp_path, 0, tree)
  restored, _ = jaxrnn.restore_checkpoint(tmp_path, tree)
  assert restored["w"].dtype == jnp.float64
  assert_bit_exact(restored, tree)


def test_like_may_be_shape_dtype_structs(tmp_path):
  tree = {"a": jnp.arange(4.0), "b": jnp.ones((2, 2), jnp.bfloat16)}
  jaxrnn.save_checkpoint(tmp_path, 1, tree)
  restored, _ = jaxrnn.restore_checkpoint(tmp_path, jax.eval_shape(lambda: tree))
  assert_bit_exact(restored, tree)


@pytest.fixture(scope="module")
def adam_run():
  """Params and a clipped AdamW state after 3 updates (one compiled update)."""
  params = elman_params(1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  state = optimizer.init(params)
  update = jax.jit(optimizer.update)
  for k in range(3):
    grads = jax.tree.map(lambda p: jnp.full_like(p, k + 1.0), params)
    _, state = update(grads, state, params)
  return params, optimizer, state


def test_optax_adam_state(tmp_path, adam_run):
  params, optimizer, state = adam_run
  jaxrnn.save_checkpoint(tmp_path, 3, (params, state))
  like = (params, optimizer.init(params))
  (p2, s2), _ = jaxrnn.restore_checkpoint(tmp_path, like)
  assert_bit_exact((p2, s2), (params, state))
  assert int(s2[1][0].count) == 3


def test_resume_mid_run_equals_uninterrupted(tmp_path):
  optimizer = optax.adam(1e-2)
  xs = np.random.default_rng(2).standard_normal((6, 4, 5, 2)).astype(np.float32)  # 6 batches

  def predict(params, x):  # an Elman network unrolled by hand, (B, T, D) -> (B, T, H)
    h, ys = jnp.zeros((x.shape[0], 3)), []
    for t in range(x.shape[1]):
      h = jnp.tanh(x[:, t] @ params.W_x + h @ params.W_h + (params.b_x + params.b_h)[None])
      ys.append(h)
    return jnp.stack(ys, axis=1)

  @jax.jit
  def train_step(params, opt_state, key, x):
    key, k_noise = jax.random.split(key)
    x = x + 0.1 * jax.random.normal(k_noise, x.shape)  # the key is training state
    loss = lambda p: jnp.mean((predict(p, x) - jnp.cumsum(x[..., :1], axis=1)) ** 2)
    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key

  def fresh():
    params = elman_params(3)
    state = {"params": params, "opt_state": optimizer.init(params), "key": jax.random.key(4)}
    return jax.device_put(state, jax.devices()[0])  # committed, as train_step's outputs

  def train(state, start, stop, directory=None):
    for step in range(start, stop):
      params, opt_state, key = train_step(
          state["params"], state["opt_state"], state["key"], xs[step])
      state = {"params": params, "opt_state": opt_state, "key": key}
      if directory is not None:
        jaxrnn.save_checkpoint(directory, step + 1, state, keep=2)
    return state

  uninterrupted = train(fresh(), 0, 6)
  train(fresh(), 0, 4, tmp_path)  # the run stops after 4 steps
  assert jaxrnn.latest_step(tmp_path) == 4
  state, step = jaxrnn.restore_checkpoint(tmp_path, fresh())
  resumed = train(state, step, 6)
  assert_bit_exact(resumed, uninterrupted)
  # And an interruption actually changes something: 4 steps != 6 steps.
  assert not np.array_equal(state["params"].W_h, uninterrupted["params"].W_h)


def test_keep_prunes_old_steps_and_latest_step(tmp_path):
  assert jaxrnn.latest_step(tmp_path / "missing") is None
  assert jaxrnn.latest_step(tmp_path) is None
  for step in (1, 10, 2, 30):
    jaxrnn.save_checkpoint(tmp_path, step, {"x": jnp.full(2, float(step))})
  assert jaxrnn.latest_step(tmp_path) == 30
  jaxrnn.save_checkpoint(tmp_path, 20, {"x": jnp.full(2, 20.0)}, keep=2)
  names = sorted(p.name for p in tmp_path.iterdir())
  assert names == ["checkpoint_00000020.npz", "checkpoint_00000030.npz"]
  restored, step = jaxrnn.restore_checkpoint(tmp_path, {"x": jnp.zeros(2)}, step=20)
  assert step == 20
  np.testing.assert_array_equal(restored["x"], [20.0, 20.0])
  jaxrnn.save_checkpoint(tmp_path, 30, {"x": jnp.full(2, -1.0)})  # replaces step 30
  restored, step = jaxrnn.restore_checkpoint(tmp_path, {"x": jnp.zeros(2)})
  assert step == 30
  np.testing.assert_array_equal(restored["x"], [-1.0, -1.0])


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
  jaxrnn.save_checkpoint(tmp_path, 1, {"x": jnp.ones(3)})

  def failing_savez(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", failing_savez)
  with pytest.raises(OSError, match="disk full"):
    jaxrnn.save_checkpoint(tmp_path, 2, {"x": jnp.zeros(3)})
  monkeypatch.undo()
  assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_00000001.npz"]
  assert jaxrnn.latest_step(tmp_path) == 1
  # Stray temporaries and unrelated files are ignored.
  (tmp_path / ".tmp-checkpoint-abc.npz").write_bytes(b"partial")
  (tmp_path / "notes.txt").write_text("hello")
  assert jaxrnn.latest_step(tmp_path) == 1


def test_file_holds_a_readable_manifest(tmp_path):
  path = jaxrnn.save_checkpoint(tmp_path, 7, {"w": jnp.ones((2, 3), jnp.bfloat16), "n": None})
  with zipfile.ZipFile(path) as archive:
    assert sorted(archive.namelist()) == ["__manifest__.npy", "leaf_00000.npy"]
  with np.load(path, allow_pickle=False) as data:
    manifest = json.loads(bytes(data["__manifest__"]).decode())
    assert data["leaf_00000"].dtype == np.uint16  # bfloat16 as its bits
  assert manifest["step"] == 7
  assert manifest["leaves"] == [
      {"path": "['w']", "dtype": "bfloat16", "shape": [2, 3], "key": "leaf_00000"}]


def test_mismatched_like_names_the_leaf(tmp_path):
  params = elman_params(0)
  jaxrnn.save_checkpoint(tmp_path, 1, {"params": params, "step": 1})
  other = elman_params(0, hidden_size=4)
  with pytest.raises(ValueError, match=r"^like: leaf \['params'\]\.W_x has shape \(2, 4\) but "
                     r"the checkpoint of step 1 holds shape \(2, 3\)"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": other, "step": 0})
  as_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  with pytest.raises(ValueError, match=r"^like: leaf \['params'\]\.W_x has dtype bfloat16 but .* "
                     r"holds dtype float32"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": as_bf16, "step": 0})
  with pytest.raises(ValueError, match=r"^like: leaf \['opt'\] is not in the checkpoint"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": params, "step": 0, "opt": jnp.zeros(1)})
  with pytest.raises(ValueError, match=r"^like: the checkpoint of step 1 holds leaf \['step'\]"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": params})
  with pytest.raises(ValueError, match=r"^like: leaf \['step'\] is a PRNG key"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": params, "step": jax.random.key(0)})


@pytest.mark.parametrize("call, error, match", [
    (lambda d: jaxrnn.restore_checkpoint(d, {}),
     FileNotFoundError, r"^directory: no checkpoint in"),
    (lambda d: jaxrnn.restore_checkpoint(d, {}, step=3),
     FileNotFoundError, r"^step: no checkpoint of step 3"),
    (lambda d: jaxrnn.save_checkpoint(d, -1, {}),
     ValueError, r"^step: expected a non-negative int"),
    (lambda d: jaxrnn.save_checkpoint(d, 1.0, {}),
     TypeError, r"^step: expected a non-negative int"),
    (lambda d: jaxrnn.save_checkpoint(d, 1, {}, keep=0),
     ValueError, r"^keep: expected None or an int >= 1"),
    (lambda d: jaxrnn.save_checkpoint(d, 1, {"s": "text"}),
     TypeError, r"^tree: leaf \['s'\] has dtype <U4"),
    (lambda d: jaxrnn.save_checkpoint(d, 1, {"o": object()}), TypeError, r"^tree: leaf \['o'\]"),
])
def test_errors(tmp_path, call, error, match):
  with pytest.raises(error, match=match):
    call(tmp_path)
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".npz")]


def test_not_a_checkpoint(tmp_path):
  np.savez(tmp_path / "checkpoint_00000001.npz", x=np.ones(2))
  with pytest.raises(ValueError, match=r"^directory: .* is not a jaxrnn checkpoint"):
    jaxrnn.restore_checkpoint(tmp_path, {"x": np.ones(2)})


def three_steps(directory):
  """Checkpoints of steps 1, 2 and 3; returns step 3's path and a like tree."""
  like = {"params": elman_params(0), "key": jax.random.key(0), "step": 0}
  for step in (1, 2, 3):
    tree = {"params": elman_params(step), "key": jax.random.key(step), "step": step}
    path = jaxrnn.save_checkpoint(directory, step, tree)
  return path, like


def unreadable(path, problem):
  """The start of the error for ``path`` when steps 1 and 2 precede it."""
  return (rf"^directory: {re.escape(str(path))} {problem}.*\. Earlier checkpoints in "
          rf"{re.escape(str(path.parent))}: steps 1, 2; "
          r"restore_checkpoint\(directory, like, step=2\) loads the latest of them\.$")


def test_truncated_file_names_it_and_the_earlier_steps(tmp_path):
  path, like = three_steps(tmp_path)
  data = path.read_bytes()
  # The empty file, inside the zip magic, inside the first entry, mid-file,
  # inside the central directory, and one byte short.
  for size in (0, 2, 4, 40, len(data) // 2, len(data) - 60, len(data) - 1):
    path.write_bytes(data[:size])
    problem = r"is empty \(truncated or damaged\)" if size == 0 else r"is truncated or damaged \("
    with pytest.raises(ValueError, match=unreadable(path, problem)):
      jaxrnn.restore_checkpoint(tmp_path, like)
  # The message's way out works.
  restored, step = jaxrnn.restore_checkpoint(tmp_path, like, step=2)
  assert step == 2 and restored["step"] == 2
  assert_bit_exact(restored["params"], elman_params(2))


def test_damaged_bytes_are_found(tmp_path):
  path, like = three_steps(tmp_path)
  data = bytearray(path.read_bytes())
  with zipfile.ZipFile(path) as archive:
    info = archive.getinfo("leaf_00001.npy")  # W_h, 9 float32 values
  # The entry's data ends where the next local header starts; change its last byte.
  data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0x40
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=unreadable(
      path, r"is truncated or damaged \(BadZipFile: Bad CRC-32 for file 'leaf_00001.npy'\)")):
    jaxrnn.restore_checkpoint(tmp_path, like)


def test_foreign_files(tmp_path):
  path, like = three_steps(tmp_path)

  def text():
    path.write_text("step,loss\n3,0.25\n")

  def other_zip():
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("notes.txt", "hello")

  def npy():
    with open(path, "wb") as f:
      np.save(f, np.arange(3))

  def manifest(text):
    with open(path, "wb") as f:
      np.savez(f, __manifest__=np.frombuffer(text, np.uint8))

  foreign = {
      "a text file": (text, r"is not a jaxrnn checkpoint \(not a \.npz archive\)"),
      "a zip of other files": (
          other_zip, r"is not a jaxrnn checkpoint \(no manifest; it holds \['notes\.txt'\]\)"),
      "a .npy array": (npy, r"is not a jaxrnn checkpoint \(a \.npy array, not a \.npz archive\)"),
      "another format's manifest": (
          lambda: manifest(b'{"format": "x"}'),
          r"has format 'x' version None; expected 'jaxrnn\.checkpoint' version 1"),
      "a manifest that is not JSON": (
          lambda: manifest(b"\xff{"), r"is truncated or damaged \(UnicodeDecodeError"),
  }
  for name, (write, problem) in foreign.items():
    path.unlink()
    write()
    with pytest.raises(ValueError, match=unreadable(path, problem)):
      jaxrnn.restore_checkpoint(tmp_path, like)


def test_a_checkpoint_missing_an_entry(tmp_path):
  path, like = three_steps(tmp_path)
  with zipfile.ZipFile(path) as archive:
    entries = {name: archive.read(name) for name in archive.namelist()}
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in entries.items():
      if name != "leaf_00002.npy":
        archive.writestr(name, data)
  with pytest.raises(ValueError, match=unreadable(
      path, r"is truncated or damaged \(KeyError: 'leaf_00002 is not a file in the archive'\)")):
    jaxrnn.restore_checkpoint(tmp_path, like)


def test_no_earlier_step_and_a_chosen_step(tmp_path):
  path, like = three_steps(tmp_path)
  first = tmp_path / "checkpoint_00000001.npz"
  first.write_bytes(first.read_bytes()[:100])
  with pytest.raises(ValueError, match=(
      rf"^directory: {re.escape(str(first))} is truncated or damaged .*\. There is no "
      rf"earlier checkpoint in {re.escape(str(tmp_path))}\.$")):
    jaxrnn.restore_checkpoint(tmp_path, like, step=1)
  second = tmp_path / "checkpoint_00000002.npz"
  second.write_text("not a checkpoint")
  # Only the steps before the one asked for are offered, step 3 is not.
  with pytest.raises(ValueError, match=r"Earlier checkpoints in .*: step 1; "
                     r"restore_checkpoint\(directory, like, step=1\)"):
    jaxrnn.restore_checkpoint(tmp_path, like, step=2)


def test_orbax_round_trip(tmp_path, adam_run):
  """Params, an optax state and PRNG keys through orbax, bit for bit."""
  ocp = pytest.importorskip("orbax.checkpoint")
  params, _, opt_state = adam_run
  state = {"params": params, "opt_state": opt_state,
           "key": jax.random.key(7), "rbg_key": jax.random.key(8, impl="rbg")}
  checkpointer = ocp.StandardCheckpointer()
  # Typed keys as they are (orbax keeps their implementation) ...
  checkpointer.save(tmp_path / "typed", state)
  # ... and as raw key data, rebuilt with jax.random.wrap_key_data.
  impls = {k: jax.random.key_impl(state[k]) for k in ("key", "rbg_key")}
  raw = dict(state, **{k: jax.random.key_data(state[k]) for k in impls})
  checkpointer.save(tmp_path / "raw", raw)
  checkpointer.wait_until_finished()

  typed = checkpointer.restore(tmp_path / "typed", jax.eval_shape(lambda: state))
  assert_bit_exact(typed, state)
  restored = checkpointer.restore(tmp_path / "raw", jax.eval_shape(lambda: raw))
  restored.update({k: jax.random.wrap_key_data(restored[k], impl=impl)
                   for k, impl in impls.items()})
  assert_bit_exact(restored, state)
  assert isinstance(restored["params"], jaxrnn.ElmanParams)
  assert int(restored["opt_state"][1][0].count) == 3
  np.testing.assert_array_equal(jax.random.bits(restored["rbg_key"], (3,)),
                                jax.random.bits(state["rbg_key"], (3,)))


def test_step_may_be_an_array_and_directory_is_created(tmp_path):
  directory = os.path.join(tmp_path, "a", "b")
  jaxrnn.save_checkpoint(directory, jnp.asarray(12), {"x": np.arange(3)})
  restored, step = jaxrnn.restore_checkpoint(directory, {"x": np.zeros(3, np.int64)})
  assert step == 12 and isinstance(restored["x"], np.ndarray)
  np.testing.assert_array_equal(restored["x"], [0, 1, 2])


# ---------------------------------------------------------------------------
# Restoring a part: e.g. the params of a checkpoint of {params, opt_state}.


def saved_train_state(directory, adam_run):
  """Step 3 of {params, opt_state, step}; returns the saved tree."""
  params, _, opt_state = adam_run
  state = {"params": params, "opt_state": opt_state, "step": 3}
  jaxrnn.save_checkpoint(directory, 3, state)
  return state


def test_restore_a_part(tmp_path, adam_run):
  state = saved_train_state(tmp_path, adam_run)
  params = state["params"]
  # The params alone, into fresh params, their shapes or NumPy arrays.
  for like in (elman_params(9), jax.eval_shape(lambda: params)):
    restored, step = jaxrnn.restore_checkpoint(tmp_path, like, part="['params']")
    assert step == 3 and isinstance(restored, jaxrnn.ElmanParams)
    assert_bit_exact(restored, params)
  as_numpy, _ = jaxrnn.restore_checkpoint(tmp_path, jax.tree.map(np.asarray, params),
                                          part="['params']")
  assert all(isinstance(leaf, np.ndarray) for leaf in as_numpy)
  assert_bit_exact(jax.tree.map(jnp.asarray, as_numpy), params)
  # A deeper part (Adam's mu, structured like the params) and one leaf.
  mu, _ = jaxrnn.restore_checkpoint(tmp_path, params, part="['opt_state'][1][0].mu")
  assert_bit_exact(mu, state["opt_state"][1][0].mu)
  assert not np.array_equal(mu.W_x, params.W_x)
  w, _ = jaxrnn.restore_checkpoint(tmp_path, np.zeros((2, 3), np.float32),
                                   part="['params'].W_x")
  assert_bit_exact(w, np.asarray(params.W_x))
  count, _ = jaxrnn.restore_checkpoint(tmp_path, 0, part="['step']")
  assert count == 3 and isinstance(count, int)


def test_restoring_a_part_that_is_not_there(tmp_path, adam_run):
  state = saved_train_state(tmp_path, adam_run)
  params = state["params"]
  parts = "['opt_state'], ['params'], ['step'] or a path below them"
  for part in ("['parms']", "['params'].W", "['params']['W_x']", ""):  # .W is not .W_x
    with pytest.raises(ValueError, match="^" + re.escape(
        f"part: expected the key path of a subtree of the checkpoint of step 3 ({parts}), "
        f"got {part!r}") + "$"):
      jaxrnn.restore_checkpoint(tmp_path, params, part=part)
  with pytest.raises(TypeError, match="^" + re.escape(
      "part: expected the key path of a subtree as a str, e.g. \"['params']\", got int 0") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, params, part=0)
  # The part is there, but like is not structured like it.
  under = "the checkpoint of step 3 under ['params']"
  with pytest.raises(ValueError, match="^" + re.escape(
      f"like: {under} holds leaf ['params'].W_h that like does not have (3 extra); like must "
      "hold every leaf of the part") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, jaxrnn.ElmanParams(params.W_x, None, None, None),
                              part="['params']")
  with pytest.raises(ValueError, match="^" + re.escape(
      f"like: leaf ['params']['W_x'] is not in {under} (1 missing; it holds "
      "[\"['params'].W_h\", \"['params'].W_x\", \"['params'].b_h\", \"['params'].b_x\"])")
      + "$"):
    jaxrnn.restore_checkpoint(tmp_path, {"W_x": params.W_x}, part="['params']")
  with pytest.raises(ValueError, match="^" + re.escape(
      "like: leaf ['params'].W_x has shape (2, 4) but the checkpoint of step 3 holds shape "
      "(2, 3)") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, elman_params(0, hidden_size=4), part="['params']")


def test_a_like_that_is_a_part_says_which(tmp_path, adam_run):
  """Without part=, the params alone as like: the message names the parts they
  match (Adam's mu and nu too: a part is named, never guessed)."""
  state = saved_train_state(tmp_path, adam_run)
  held = ", ".join(f'"{p}"' for p in [
      "['opt_state'][1][0].count", "['opt_state'][1][0].mu.W_h", "['opt_state'][1][0].mu.W_x",
      "['opt_state'][1][0].mu.b_h", "['opt_state'][1][0].mu.b_x", "['opt_state'][1][0].nu.W_h",
      "['opt_state'][1][0].nu.W_x", "['opt_state'][1][0].nu.b_h"])
  with pytest.raises(ValueError, match="^" + re.escape(
      f"like: leaf .W_x is not in the checkpoint of step 3 (4 missing; it holds [{held}] ...); "
      "like matches the parts ['params'], ['opt_state'][1][0].mu, ['opt_state'][1][0].nu of "
      "the checkpoint: pass part= the one to restore, e.g. part=\"['params']\"") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, state["params"])
  # The report of the issue: like holds the params under their key, and no more.
  with pytest.raises(ValueError, match="^" + re.escape(
      "like: the checkpoint of step 3 holds leaf ['opt_state'][1][0].count that like does not "
      "have (10 extra); restore into a like tree with the saved structure, or pass part= the "
      "key path of one subtree (['opt_state'], ['params'], ['step'] or a path below them) with "
      "a like tree structured as that subtree") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, {"params": state["params"]})
  # One match: part= is given as it is to pass.
  jaxrnn.save_checkpoint(tmp_path, 4, {"params": state["params"], "step": 4})
  with pytest.raises(ValueError, match=re.escape(
      "; like matches the part ['params'] of the checkpoint: pass part=\"['params']\"") + "$"):
    jaxrnn.restore_checkpoint(tmp_path, state["params"])


def test_a_damaged_file_names_itself_when_a_part_is_asked_for(tmp_path):
  path, like = three_steps(tmp_path)
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(ValueError, match=unreadable(path, r"is truncated or damaged \(")):
    jaxrnn.restore_checkpoint(tmp_path, like["params"], part="['params']")
  restored, step = jaxrnn.restore_checkpoint(tmp_path, like["params"], step=2, part="['params']")
  assert step == 2
  assert_bit_exact(restored, elman_params(2))
