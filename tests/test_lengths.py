"""The `length` contract: padding is invisible, reversed scans see the prefix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from reference import CASE_IDS, CASES, D, H, T

# This file and test_layers.py share the compiled programs of reference.py
# (`rnn_program`, `bidirectional_program`, `stack_program`): one worker.
pytestmark = pytest.mark.xdist_group("reference_programs")

LENGTHS = (0, 1, 3, T)


def _junk_variants(xs, length):
  """``xs`` with its padding (steps >= length) replaced by junk, incl. NaN."""
  xs = np.asarray(xs)
  pad = xs[length:].shape
  rng = np.random.default_rng(length)
  fills = {
      "zeros": np.zeros(pad),
      "nan": np.full(pad, np.nan),
      "huge": np.where(rng.random(pad) < 0.5, -3e38, 3e38),
      "inf_nan_mix": rng.choice([np.inf, -np.inf, np.nan, 1e30], size=pad),
      "random": 10 * rng.standard_normal(pad),
  }
  out = {}
  for name, fill in fills.items():
    junk = xs.copy()
    junk[length:] = fill
    out[name] = jnp.asarray(junk, jnp.float32)
  return out


def _check_padding_invariance(apply, outputs_of, xs, length, want):
  """``apply(xs)`` for every junk variant: equals ``want`` (NumPy), padded
  outputs (``outputs_of(result)``) are exactly zero, and valid outputs and
  final carries are bitwise those of the zero-padded sequence."""
  variants = _junk_variants(xs, length)
  clean = apply(variants.pop("zeros"))
  ref.assert_tree_close(clean, want)
  for ys in outputs_of(clean):
    np.testing.assert_array_equal(np.asarray(ys)[length:], 0)
  for name, xs_junk in variants.items():
    got = apply(xs_junk)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(clean)):
      np.testing.assert_array_equal(a, b, err_msg=f"padding={name}, length={length}")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rnn_padding_invariance(case):
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 30)
  xs = ref.random_xs(31)
  carry = ref.random_like(cell.init_carry(), 32)
  for length in LENGTHS:
    want = (ref.ref_run(case, params, xs, carry, length),
            ref.ref_run(case, params, xs, carry, length, reverse=True))
    _check_padding_invariance(lambda x: f(params, x, length, carry),
                              lambda out: (out[0][0], out[1][0]), xs, length, want)
  # length == 0 gives back the initial carry itself.
  (_, c_f), (_, c_r) = f(params, xs, 0, carry)
  ref.assert_tree_close((c_f, c_r), (carry, carry), rtol=0, atol=0)


def test_bidirectional_padding_invariance():
  layer, f = ref.bidirectional_program()
  params = ref.random_params(layer, 33)
  xs = ref.random_xs(34)
  carry = ref.random_like(layer.init_carry(), 35)
  for length in LENGTHS:
    want = {m: ref.ref_bidirectional(params, xs, carry, length, m)
            for m in ref.BIDIRECTIONAL_MERGES}
    _check_padding_invariance(lambda x: f(params, x, length, carry),
                              lambda out: [ys for ys, _ in out.values()], xs, length,
                              tuple(want[m] for m in sorted(want)))


def test_stack_padding_invariance():
  layer, f = ref.stack_program()
  params = ref.random_params(layer, 36)
  xs = ref.random_xs(37)
  carry = ref.random_like(layer.init_carry(), 38)
  for length in LENGTHS:
    want = ref.ref_stack(params, xs, carry, length)
    _check_padding_invariance(lambda x: f(params, x, length, carry),
                              lambda out: [out[0]], xs, length, want)
  # length == 0: every layer's carry is its initial carry.
  _, carries = f(params, xs, 0, carry)
  ref.assert_tree_close(carries, carry, rtol=0, atol=0)


REVERSE_CASES = [ref.BY_NAME[n] for n in ("elman_tanh", "lstm", "gru_before")]


@pytest.mark.parametrize("case", REVERSE_CASES, ids=[c.name for c in REVERSE_CASES])
def test_reverse_scans_only_the_valid_prefix(case):
  """reverse=True with length == a forward scan of xs[:length][::-1] and NOT
  the classic bug (flip the whole padded array, scan, flip back)."""
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 40)
  carry = ref.random_like(cell.init_carry(), 41)
  rng = np.random.default_rng(42)
  numpy = lambda tree: jax.tree_util.tree_map(np.asarray, tree)  # noqa: E731
  for length in (1, 3, T - 1):
    xs = rng.standard_normal((T, D)).astype(np.float32)
    xs[length:] = 3.0 * rng.standard_normal((T - length, D))  # finite junk
    _, (ys_rev, c_rev) = numpy(f(params, xs, length, carry))
    # The valid prefix reversed, zero padded, scanned forward.
    prefix_rev = np.concatenate([xs[:length][::-1], np.zeros((T - length, D), np.float32)])
    (ys_pf, c_pf), _ = numpy(f(params, prefix_rev, length, carry))
    ref.assert_tree_close(ys_rev[:length], ys_pf[:length][::-1], rtol=1e-5, atol=1e-6)
    ref.assert_tree_close(c_rev, c_pf, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys_rev[length:], 0)
    # The classic bug: the whole padded array flipped, so junk comes first.
    (ys_flip, c_flip), _ = numpy(f(params, xs[::-1].copy(), T, carry))
    ys_flip = ys_flip[::-1]
    assert not np.allclose(ys_flip[:length], ys_rev[:length], atol=1e-3)
    assert not np.allclose(jax.tree_util.tree_leaves(c_flip)[0],
                           jax.tree_util.tree_leaves(c_rev)[0], atol=1e-3)


def test_bidirectional_backward_half_is_not_flip_whole_array():
  layer, f = ref.bidirectional_program()
  params = ref.random_params(layer, 43)
  carry = ref.random_like(layer.init_carry(), 44)
  length = 2
  rng = np.random.default_rng(45)
  xs = rng.standard_normal((T, D))
  xs[length:] = 3.0 * rng.standard_normal((T - length, D))
  ys, _ = f(params, jnp.asarray(xs, jnp.float32), length, carry)["concat"]
  ys = np.asarray(ys)
  p_b, c_b = ref.np_params(params.backward), ref.np_carry(carry.backward)
  right, _ = ref.run(ref.lstm_step, p_b, xs, c_b, H, length, reverse=True)
  flipped, _ = ref.run(ref.lstm_step, p_b, xs[::-1], c_b, H)
  flipped = flipped[::-1]
  ref.assert_tree_close(ys[:, H:], right)
  assert not np.allclose(ys[:length, H:], flipped[:length], atol=1e-3)


def _all_layers():
  return {
      "rnn": jaxrnn.rnn(jaxrnn.gru(H)),
      "rnn_reverse": jaxrnn.rnn(jaxrnn.lstm(H), reverse=True),
      "bidirectional": ref.bidirectional_layer(),
      "stack": ref.stack_layer(),
      "readout": jaxrnn.readout(2),
  }


@pytest.mark.parametrize("bad", [-1, T + 1, np.int32(T + 1), np.int64(-2),
                                 jnp.asarray(T + 1)],
                         ids=["neg", "too_long", "np_int32", "np_int64", "concrete_array"])
def test_known_length_out_of_range_raises(bad):
  xs = ref.random_xs(46)
  for name, layer in _all_layers().items():
    params = jax.eval_shape(lambda k: layer.init_params(k, D), jax.random.key(0))
    with pytest.raises(ValueError, match=r"^length: expected an integer in \[0, T\] = \[0, 5\], "
                       rf"got {int(bad)}(\n|$)"):
      jax.eval_shape(lambda p, x: layer.apply(p, x, length=bad), params, xs)


def test_traced_length_is_clamped():
  case = ref.BY_NAME["gru"]
  cell, f = ref.rnn_program(case.name)
  params = ref.random_params(cell, 47)
  xs = ref.random_xs(48)
  carry = ref.random_like(cell.init_carry(), 49)
  for bad, good in ((-3, 0), (T + 4, T)):
    ref.assert_tree_close(f(params, xs, bad, carry), f(params, xs, good, carry),
                          rtol=0, atol=0)
  layer, g = ref.stack_program()
  params = ref.random_params(layer, 50)
  carry = ref.random_like(layer.init_carry(), 51)
  for bad, good in ((-1, 0), (T + 1, T)):
    ref.assert_tree_close(g(params, xs, bad, carry), g(params, xs, good, carry),
                          rtol=0, atol=0)
  # Under vmap, per example.
  lengths = np.array([-2, T + 3], np.int32)
  head = jaxrnn.readout(2)
  rp = ref.random_params(head, 52)
  batched = jax.jit(jax.vmap(lambda x, n: head.apply(rp, x, length=n)))
  ys, _ = batched(np.stack([xs, xs]), lengths)
  np.testing.assert_array_equal(ys[0], 0)
  ref.assert_tree_close(ys[1], ref.run_readout(ref.np_params(rp), xs))


def test_length_types():
  """Python ints, NumPy integers and integer arrays of any width all work
  (traced: eager calls with a Python int are test_layers.py's)."""
  head = jaxrnn.readout(2)
  params = ref.random_params(head, 53)
  xs = ref.random_xs(54)
  want = ref.run_readout(ref.np_params(params), xs, 2)
  g = jax.jit(lambda p, x, n: head.apply(p, x, length=n))
  for length in (2, np.int32(2), np.int64(2), np.uint8(2), jnp.asarray(2),
                 jnp.asarray(2, jnp.int16)):
    ys, _ = g(params, xs, length)
    ref.assert_tree_close(ys, want)
  layer = jaxrnn.rnn(jaxrnn.elman(H), unroll=1)
  p = ref.random_params(layer, 55)
  f = jax.jit(lambda p, x, n: layer.apply(p, x, length=n))
  zeros = np.zeros(H)
  for length in (np.int32(3), jnp.asarray(3, jnp.uint32)):
    ref.assert_tree_close(f(p, xs, length),
                          ref.run(ref.elman_step, ref.np_params(p), xs, zeros, H, 3))
