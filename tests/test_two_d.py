"""2-D recurrence: lstm2d and elman2d cells, rnn2d (wavefront and reference
double scan), multidirectional and renet.

The cells are checked against float64 NumPy double loops written here from
the equations; the layer against a Python double loop over ``cell_apply``;
the wavefront against the double scan; shapes with NaN outside the valid
region against the cropped images.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn._src.engine import wavefront as wavefront_lib

CORNERS = ((False, False), (False, True), (True, False), (True, True))


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------
# Independent references.


def numpy_lstm2d(params, xs, border=None):
  """Graves et al.'s 2-D LSTM, gate order (i, f_up, f_left, g, o), float64."""
  W_x, W_up, W_left, b_x, b_h = (np.asarray(a, np.float64) for a in params)
  xs = np.asarray(xs, np.float64)
  R, C, _ = xs.shape
  H = W_up.shape[0]
  h = np.zeros((R + 1, C + 1, H))  # row/column 0: the border
  c = np.zeros((R + 1, C + 1, H))
  if border is not None:
    h[0, :], h[:, 0] = border[0], border[0]
    c[0, :], c[:, 0] = border[1], border[1]
  for i in range(1, R + 1):
    for j in range(1, C + 1):
      z = (xs[i - 1, j - 1] @ W_x + b_x + h[i - 1, j] @ W_up + h[i, j - 1] @ W_left
           + b_h)
      gate_i, f_up, f_left = _sigmoid(z[:H]), _sigmoid(z[H:2 * H]), _sigmoid(z[2 * H:3 * H])
      g, o = np.tanh(z[3 * H:4 * H]), _sigmoid(z[4 * H:])
      c[i, j] = f_up * c[i - 1, j] + f_left * c[i, j - 1] + gate_i * g
      h[i, j] = o * np.tanh(c[i, j])
  return h[1:, 1:], (h[R, C], c[R, C])


def numpy_elman2d(params, xs, phi=np.tanh):
  W_x, W_up, W_left, b_x, b_h = (np.asarray(a, np.float64) for a in params)
  xs = np.asarray(xs, np.float64)
  R, C, _ = xs.shape
  h = np.zeros((R + 1, C + 1, W_up.shape[0]))
  for i in range(1, R + 1):
    for j in range(1, C + 1):
      h[i, j] = phi(xs[i - 1, j - 1] @ W_x + b_x + h[i - 1, j] @ W_up
                    + h[i, j - 1] @ W_left + b_h)
  return h[1:, 1:]


def loop_layer(cell, params, xs, *, reverse=(False, False), border=None):
  """A Python double loop over ``cell_apply`` (whole image), flips around it."""
  if reverse[0]:
    xs = xs[::-1]
  if reverse[1]:
    xs = xs[:, ::-1]
  R, C = xs.shape[:2]
  border = cell.init_carry(xs.dtype) if border is None else border
  carries, ys = {}, np.zeros((R, C), object)
  for i in range(R):
    for j in range(C):
      up = carries.get((i - 1, j), border)
      left = carries.get((i, j - 1), border)
      carries[i, j], ys[i, j] = cell.cell_apply(params, (up, left), xs[i, j])
  ys = jnp.stack([jnp.stack(list(row)) for row in ys])
  if reverse[0]:
    ys = ys[::-1]
  if reverse[1]:
    ys = ys[:, ::-1]
  return ys, carries[R - 1, C - 1]


def assert_trees_close(a, b, **tolerance):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  assert leaves_a
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


def _random_params(maker, key, input_size, scale=0.5):
  """Params of a cell or layer with every entry random (biases too), float64."""
  params = maker.init_params(key, input_size, jnp.float64)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  return treedef.unflatten([
      leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
      for k, leaf in zip(keys, leaves)])


def _image(key, shape):
  return jax.random.normal(key, shape, jnp.float64)


# ---------------------------------------------------------------------------
# Cells.


def test_lstm2d_matches_numpy(x64):
  cell = jaxrnn.lstm2d(3)
  params = _random_params(cell, jax.random.key(0), 2)
  xs = _image(jax.random.key(1), (4, 5, 2))
  border = (np.linspace(-1, 1, 3), np.linspace(0.5, -0.5, 3))
  want, (h_last, c_last) = numpy_lstm2d(params, xs, border)
  ys, final = jaxrnn.rnn2d(cell).apply(
      params, xs, carry=jaxrnn.LSTMState(jnp.asarray(border[0]), jnp.asarray(border[1])))
  np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(final.h, h_last, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(final.c, c_last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation,phi", [
    ("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0)), (jnp.sin, np.sin)])
def test_elman2d_matches_numpy(x64, activation, phi):
  cell = jaxrnn.elman2d(3, activation=activation)
  params = _random_params(cell, jax.random.key(2), 2)
  xs = _image(jax.random.key(3), (3, 4, 2))
  ys, final = jaxrnn.rnn2d(cell).apply(params, xs)
  want = numpy_elman2d(params, xs, phi)
  np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(final, want[-1, -1], rtol=1e-12, atol=1e-12)


def test_lstm2d_init():
  cell = jaxrnn.lstm2d(4, forget_bias=2.0)
  params = cell.init_params(jax.random.key(0), 3)
  assert isinstance(params, jaxrnn.LSTM2DParams)
  assert params.W_x.shape == (3, 20) and params.b_h.shape == (20,)
  assert params.W_up.shape == params.W_left.shape == (4, 20)
  assert params.W_x.dtype == jnp.float32
  # Forget biases on both forget gates (f_up, f_left), nowhere else.
  np.testing.assert_array_equal(params.b_x, np.repeat([0.0, 2.0, 2.0, 0.0, 0.0], 4))
  np.testing.assert_array_equal(params.b_h, np.zeros(20))
  # Orthogonal per gate block, and the two directions drawn independently.
  for W in (params.W_up, params.W_left):
    for k in range(5):
      block = np.asarray(W[:, 4 * k:4 * k + 4], np.float64)
      np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
  assert not np.allclose(params.W_up, params.W_left)
  carry = cell.init_carry(jnp.float16)
  assert isinstance(carry, jaxrnn.LSTMState) and carry.h.dtype == jnp.float16
  assert carry.h.shape == carry.c.shape == (4,)
  assert cell.hidden_size == cell.output_size == 4


def test_elman2d_init():
  cell = jaxrnn.elman2d(5)
  params = cell.init_params(jax.random.key(0), 2, jnp.bfloat16)
  assert isinstance(params, jaxrnn.Elman2DParams)
  assert params.W_x.shape == (2, 5) and params.W_up.shape == (5, 5)
  assert all(leaf.dtype == jnp.bfloat16 for leaf in params)
  np.testing.assert_array_equal(params.b_x, np.zeros(5))
  h, y = cell.cell_apply(params, (cell.init_carry(), cell.init_carry()), jnp.ones(2))
  assert h.shape == (5,) and bool(jnp.all(h == y))


# ---------------------------------------------------------------------------
# The layer: both methods against the Python loop and each other.


def test_rnn2d_matches_python_loop(x64):
  cell = jaxrnn.lstm2d(3)
  params = _random_params(cell, jax.random.key(4), 2)
  xs = _image(jax.random.key(5), (4, 3, 2))  # taller than wide: transposed inside
  want = loop_layer(cell, params, xs)
  for method in ("wavefront", "reference"):
    got = jax.jit(jaxrnn.rnn2d(cell, method=method).apply)(params, xs)
    assert_trees_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", CORNERS)
def test_wavefront_equals_double_scan(x64, reverse):
  """Both methods, under vmap over images with traced valid regions."""
  cell = jaxrnn.lstm2d(2)
  params = _random_params(cell, jax.random.key(6), 3)
  xs = _image(jax.random.key(7), (4, 5, 7, 3))
  hs, ws = jnp.array([5, 4, 0, 2]), jnp.array([7, 5, 3, 7])
  results = []
  for method in ("wavefront", "reference"):
    layer = jaxrnn.rnn2d(cell, reverse=reverse, method=method)
    results.append(jax.jit(jax.vmap(layer.apply, in_axes=(None, 0)))(params, xs, shape=(hs, ws)))
  assert_trees_close(results[0], results[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("image_shape,reverse,per_ramp", [
    ((1, 6), (False, False), 4), ((6, 1), (True, True), 4),
    ((5, 8), (True, False), 2), ((8, 5), (False, True), 2)])
def test_wavefront_edge_shapes_and_segments(x64, monkeypatch, image_shape, reverse, per_ramp):
  """Single rows and columns; wide and tall images cut into several scans."""
  monkeypatch.setattr(wavefront_lib, "MIN_SEGMENTED_WIDTH", 1)
  monkeypatch.setattr(wavefront_lib, "RAMP_SEGMENTS", per_ramp)
  cell = jaxrnn.elman2d(2)
  params = _random_params(cell, jax.random.key(31), 2)
  xs = _image(jax.random.key(32), image_shape + (2,))
  got = jaxrnn.rnn2d(cell, reverse=reverse).apply(params, xs)
  assert_trees_close(got, loop_layer(cell, params, xs, reverse=reverse), rtol=1e-12,
                     atol=1e-12)


def test_segments_cover_every_diagonal():
  for L, M in [(1, 1), (1, 7), (2, 2), (5, 5), (6, 9), (16, 16), (16, 40), (64, 64)]:
    for per_ramp in (1, 2, 3, 4, 8):
      parts = wavefront_lib.segments(L, M, per_ramp, min_width=1)
      assert parts[0][0] == 0 and parts[-1][1] == L + M - 1
      assert all(p[1] == q[0] for p, q in zip(parts[:-1], parts[1:]))
      assert len(parts) <= 2 * per_ramp + 1
      for s0, s1, a, b in parts:
        for s in range(s0, s1):
          lo, hi = max(0, s - M + 1), min(s, L - 1)
          # Every row of the diagonal, and the row above its first one.
          assert a <= max(lo - (s == s0), 0) and hi < b <= L
  assert wavefront_lib.segments(8, 8, 4, min_width=16) == [(0, 15, 0, 8)]
  assert sum((s1 - s0) * (b - a) for s0, s1, a, b in
             wavefront_lib.segments(64, 64, 4, min_width=16)) < 1.3 * 64 * 64


def test_python_int_and_traced_shapes_agree(x64):
  cell = jaxrnn.elman2d(2)
  layer = jaxrnn.rnn2d(cell, reverse=(True, False))
  params = _random_params(cell, jax.random.key(8), 1)
  xs = _image(jax.random.key(9), (5, 6, 1))
  want = jax.jit(functools.partial(layer.apply, shape=(3, 4)))(params, xs)
  traced = jax.jit(lambda hw: layer.apply(params, xs, shape=hw))
  assert_trees_close(traced(jnp.array([3, 4])), want, rtol=1e-13)
  # Traced extents beyond the image are clamped.
  assert_trees_close(traced(jnp.array([9, -2])), layer.apply(params, xs, shape=(5, 0)))


def test_causality(x64):
  """Output (i, j) depends on exactly the inputs above-left of it."""
  cell = jaxrnn.lstm2d(2)
  params = _random_params(cell, jax.random.key(10), 1)
  xs = _image(jax.random.key(11), (4, 5, 1))
  R, C = 4, 5
  layer = jaxrnn.rnn2d(cell)
  jac = jax.jacrev(lambda x: layer.apply(params, x)[0])(xs)  # (R, C, H, R, C, 1)
  depends = np.any(np.asarray(jac) != 0, axis=(2, 5))  # (R, C, R, C)
  for i in range(R):
    for j in range(C):
      allowed = np.zeros((R, C), bool)
      allowed[:i + 1, :j + 1] = True
      np.testing.assert_array_equal(depends[i, j], allowed, err_msg=f"output {(i, j)}")


def test_reverse_is_flip_run_flip(x64):
  cell = jaxrnn.lstm2d(2)
  params = _random_params(cell, jax.random.key(12), 2)
  xs = _image(jax.random.key(13), (4, 6, 2))
  run = jax.jit(jaxrnn.rnn2d(cell).apply)
  for reverse in CORNERS[1:]:
    flipped = xs[::-1] if reverse[0] else xs
    flipped = flipped[:, ::-1] if reverse[1] else flipped
    want_ys, want_final = run(params, flipped)
    want_ys = want_ys[::-1] if reverse[0] else want_ys
    want_ys = want_ys[:, ::-1] if reverse[1] else want_ys
    ys, final = jaxrnn.rnn2d(cell, reverse=reverse).apply(params, xs)
    assert_trees_close(ys, want_ys, rtol=1e-12, atol=1e-12)
    assert_trees_close(final, want_final, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Valid regions.

SHAPES = np.array([[5, 6], [3, 4], [0, 4], [1, 1], [2, 6]], np.int32)


def _junk_batch(key, R=5, C=6, D=2):
  """Images with NaN outside each one's valid region (``SHAPES``)."""
  xs = np.array(_image(key, (len(SHAPES), R, C, D)))
  for b, (h, w) in enumerate(SHAPES):
    inside = np.zeros((R, C), bool)
    inside[:h, :w] = True
    xs[b][~inside] = np.nan
  return jnp.asarray(xs)


def _loss_terms(ys, final, weights):
  """A scalar using every output and every leaf of the final carry."""
  return jnp.sum(ys * weights) + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(final))


JUNK_CELL = jaxrnn.lstm2d(3)


def _junk_problem():
  params = _random_params(JUNK_CELL, jax.random.key(14), 2)
  xs = _junk_batch(jax.random.key(15))
  weights = _image(jax.random.key(16), xs.shape[:3] + (3,))
  return params, xs, weights


@functools.lru_cache(maxsize=None)
def _cropped_expectations(reverse):
  """Per image: outputs, final carry and gradients of the cropped image, by
  the Python loop over ``cell_apply`` (None for an empty region). Called
  with float64 on (the tests that use it take the x64 fixture)."""
  params, xs, weights = _junk_problem()
  out = []
  for b, (h, w) in enumerate(SHAPES):
    if h == 0 or w == 0:
      out.append(None)
      continue
    loss = lambda p, x: _loss_terms(*loop_layer(JUNK_CELL, p, x, reverse=reverse),
                                    weights[b, :h, :w])
    crop = xs[b, :h, :w]
    out.append((loop_layer(JUNK_CELL, params, crop, reverse=reverse),
                jax.grad(loss, argnums=(0, 1))(params, crop)))
  return out


@pytest.mark.parametrize("reverse,method", [(r, "wavefront") for r in CORNERS]
                         + [((False, False), "reference"), ((True, True), "reference")])
def test_shape_with_junk_equals_cropped_image(x64, reverse, method):
  layer = jaxrnn.rnn2d(JUNK_CELL, reverse=reverse, method=method)
  params, xs, weights = _junk_problem()

  def batch_loss(params, xs):
    ys, final = jax.vmap(layer.apply, in_axes=(None, 0))(
        params, xs, shape=(jnp.asarray(SHAPES[:, 0]), jnp.asarray(SHAPES[:, 1])))
    return _loss_terms(ys, final, weights), (ys, final)

  (_, (ys, finals)), (g_params, g_xs) = jax.jit(jax.value_and_grad(
      batch_loss, argnums=(0, 1), has_aux=True))(params, xs)
  assert np.all(np.isfinite(ys))
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves((g_params, g_xs)))
  want_g_params = jax.tree_util.tree_map(jnp.zeros_like, params)
  for b, ((h, w), expected) in enumerate(zip(SHAPES, _cropped_expectations(reverse))):
    outside = np.ones(xs.shape[1:3], bool)
    outside[:h, :w] = False
    assert np.all(np.asarray(ys[b])[outside] == 0)
    assert np.all(np.asarray(g_xs[b])[outside] == 0)
    final_b = jax.tree_util.tree_map(lambda f: f[b], finals)
    if expected is None:
      assert np.all(np.asarray(ys[b]) == 0)
      assert_trees_close(final_b, JUNK_CELL.init_carry(jnp.float64))
      continue
    (want_ys, want_final), (gp, gx) = expected
    assert_trees_close(ys[b, :h, :w], want_ys, rtol=1e-12, atol=1e-12)
    assert_trees_close(final_b, want_final, rtol=1e-12, atol=1e-12)
    assert_trees_close(g_xs[b, :h, :w], gx, rtol=1e-10, atol=1e-12)
    want_g_params = jax.tree_util.tree_map(jnp.add, want_g_params, gp)
  assert_trees_close(g_params, want_g_params, rtol=1e-10, atol=1e-12)


def test_gradients_match_finite_differences(x64):
  """Central differences of the loss along random directions (float64),
  reverse mode and forward mode, with a valid region."""
  for cell in (jaxrnn.lstm2d(2), jaxrnn.elman2d(2)):
    layer = jaxrnn.rnn2d(cell, reverse=(True, False))
    params = _random_params(cell, jax.random.key(17), 2)
    xs = _image(jax.random.key(18), (4, 4, 2))
    weights = _image(jax.random.key(19), (4, 4, 2))

    @jax.jit
    def loss(p, x):
      return _loss_terms(*layer.apply(p, x, shape=(3, 4)), weights)

    leaves, treedef = jax.tree_util.tree_flatten((params, xs))
    keys = jax.random.split(jax.random.key(20), len(leaves))
    direction = treedef.unflatten([jax.random.normal(k, v.shape, v.dtype)
                                   for k, v in zip(keys, leaves)])
    grads, (_, forward) = jax.jit(lambda v, d: (
        jax.grad(loss, argnums=(0, 1))(*v), jax.jvp(lambda a: loss(*a), (v,), (d,))))(
            (params, xs), direction)
    eps = 1e-6
    shifted = lambda sign: jax.tree_util.tree_map(lambda v, d: v + sign * eps * d,
                                                  (params, xs), direction)
    numeric = (loss(*shifted(1)) - loss(*shifted(-1))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                   jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    np.testing.assert_allclose(forward, analytic, rtol=1e-10)


@pytest.mark.parametrize("method,remats", [("wavefront", (False, None, True)),
                                           ("reference", (None, 2))])
def test_remat_gives_the_same_gradients(x64, method, remats):
  cell = jaxrnn.lstm2d(2)
  params = _random_params(cell, jax.random.key(21), 1)
  xs = _image(jax.random.key(22), (3, 8, 1))  # 10 diagonals: chunks 4, 4, 2
  weights = _image(jax.random.key(23), (3, 8, 2))
  grads = []
  for remat in remats:
    layer = jaxrnn.rnn2d(cell, method=method, remat=remat)
    loss = lambda p, x: _loss_terms(*layer.apply(p, x, shape=(3, 5)), weights)
    grads.append(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs))
  for g in grads[1:]:
    assert_trees_close(g, grads[0], rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------
# multidirectional, renet, stack.


def _scaling_layer(scale):
  """A stateless 2-D layer ``ys = scale * xs`` (zero outside the region)."""

  def apply(params, xs, *, shape=None, carry=None, key=None):
    del params, carry, key
    h, w = (xs.shape[0], xs.shape[1]) if shape is None else shape
    inside = (jnp.arange(xs.shape[0]) < h)[:, None] & (jnp.arange(xs.shape[1]) < w)[None, :]
    return jnp.where(inside[:, :, None], scale * xs, 0.0), ()

  return jaxrnn.Layer(lambda key, input_size, dtype=None: (), apply, lambda dtype=None: ())


def test_multidirectional_four_corners(x64):
  layers = [jaxrnn.rnn2d(jaxrnn.lstm2d(2), reverse=r, method="reference") for r in CORNERS]
  net = jaxrnn.multidirectional(*layers)
  params = net.init_params(jax.random.key(24), 2, jnp.float64)
  assert isinstance(params, tuple) and len(params) == 4
  assert params[3].W_x.shape == (2, 10) and not np.allclose(params[0].W_x, params[3].W_x)
  xs = _image(jax.random.key(25), (4, 5, 2))

  def at_one_position(x):
    ys, carries = net.apply(params, x, shape=(3, 4))
    return ys[1, 2], (ys, carries)

  # Every output inside sees every input inside: the four corners together.
  jac, (ys, carries) = jax.jit(jax.jacrev(at_one_position, has_aux=True))(xs)
  reach = np.any(np.asarray(jac) != 0, axis=(0, 3))  # jac: (8, R, C, D)
  np.testing.assert_array_equal(reach[:3, :4], np.ones((3, 4), bool))
  assert not reach[3].any() and not reach[:, 4].any()
  assert ys.shape == (4, 5, 8) and np.all(np.asarray(ys[3]) == 0)
  assert isinstance(carries, tuple) and len(carries) == 4
  # Each corner's final carry is at its own last position: (0, 0) for (True, True).
  np.testing.assert_allclose(carries[0].h, ys[2, 3, :2], rtol=1e-14)
  np.testing.assert_allclose(carries[3].h, ys[0, 0, 6:], rtol=1e-14)


def test_multidirectional_merges():
  layers = [_scaling_layer(k) for k in (1.0, 2.0, 4.0)]
  xs = jnp.arange(24.0).reshape(2, 3, 4) + 1
  params = jaxrnn.multidirectional(*layers).init_params(jax.random.key(0), 4)
  apply = lambda merge: jaxrnn.multidirectional(*layers, merge=merge).apply(
      params, xs, shape=(2, 2))[0]
  inside = np.zeros((2, 3, 1), bool)
  inside[:, :2] = True
  np.testing.assert_array_equal(apply("concat"), np.concatenate(
      [np.where(inside, k * xs, 0) for k in (1, 2, 4)], axis=-1))
  np.testing.assert_array_equal(apply("sum"), np.where(inside, 7 * xs, 0))
  np.testing.assert_allclose(apply("mean"), np.where(inside, 7 * xs / 3, 0))
  # A merge that maps zeros elsewhere is re-zeroed outside the region.
  np.testing.assert_array_equal(apply(lambda *ys: sum(ys) + 1.0),
                                np.where(inside, 7 * xs + 1, 0))
  assert apply("concat").shape == (2, 3, 12)


def test_renet_equals_row_then_column_sweeps(x64):
  row = jaxrnn.bidirectional(jaxrnn.elman(2), jaxrnn.elman(2))
  column = jaxrnn.bidirectional(jaxrnn.lstm(3), jaxrnn.lstm(3))
  net = jaxrnn.renet(row, column)
  params = _random_params(net, jax.random.key(26), 2)  # nonzero biases too
  assert isinstance(params, jaxrnn.ReNetParams)
  assert params.columns.forward.W_x.shape == (4, 12)  # the row sweep's output size
  assert params.rows.backward.W_x.shape == (2, 2)
  xs = _junk_batch(jax.random.key(27))
  weights = _image(jax.random.key(28), xs.shape[:3] + (6,))

  @jax.jit
  def batch_loss(params, xs):
    ys, carry = jax.vmap(net.apply, in_axes=(None, 0))(
        params, xs, shape=(jnp.asarray(SHAPES[:, 0]), jnp.asarray(SHAPES[:, 1])))
    return jnp.sum(ys * weights), (ys, carry)

  @jax.jit
  def by_sweeps(params, crop):
    by_rows = jax.vmap(lambda r: row.apply(params.rows, r)[0])(crop)
    by_columns = jax.vmap(lambda c: column.apply(params.columns, c)[0])(
        jnp.swapaxes(by_rows, 0, 1))
    return jnp.swapaxes(by_columns, 0, 1)

  (_, (ys, carry)), grads = jax.jit(jax.value_and_grad(
      batch_loss, argnums=(0, 1), has_aux=True))(params, xs)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  for b, (h, w) in enumerate(SHAPES):
    outside = np.ones(xs.shape[1:3], bool)
    outside[:h, :w] = False
    assert np.all(np.asarray(ys[b])[outside] == 0)
    assert np.all(np.asarray(grads[1][b])[outside] == 0)
    # Rows below the region and columns right of it keep the starting carry.
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda c: c[b], carry))
    rows, columns = np.asarray(leaves[0]), np.asarray(leaves[-1])  # (R, H), (C, H)
    assert np.all(rows[h:] == 0) and np.all(columns[w:] == 0)
    assert np.all(np.any(rows[:h] != 0, axis=-1)) if w else np.all(rows == 0)
    if (h, w) == (3, 4):
      np.testing.assert_allclose(ys[b, :h, :w], by_sweeps(params, xs[b, :h, :w]),
                                 rtol=1e-12, atol=1e-12)
  _, carry = jax.eval_shape(net.apply, params, xs[0])
  assert carry.rows.forward.shape == (5, 2) and carry.columns.backward.h.shape == (6, 3)


def test_stack_and_readout_map_every_position(x64):
  """stack passes shape= on to every layer; readout maps every position."""
  layer = jaxrnn.rnn2d(jaxrnn.lstm2d(4))
  net = jaxrnn.stack(layer, jaxrnn.readout(3))
  params = net.init_params(jax.random.key(29), 2, jnp.float64)
  assert params[1].W_hy.shape == (4, 3)
  xs = _image(jax.random.key(30), (4, 5, 2)).at[3:].set(jnp.nan).at[:, 4:].set(jnp.nan)

  @jax.jit
  def both(params, xs):
    hidden, carry = layer.apply(params[0], xs, shape=(3, 4))
    return net.apply(params, xs, shape=(3, 4)), (hidden, carry)

  (ys, carries), (hidden, carry) = both(params, xs)
  assert ys.shape == (4, 5, 3)
  want = hidden @ params[1].W_hy + params[1].b_y[None, None, :]
  np.testing.assert_allclose(ys[:3, :4], want[:3, :4], rtol=1e-12)
  assert np.all(np.asarray(ys[3:]) == 0) and np.all(np.asarray(ys[:, 4:]) == 0)
  assert_trees_close(carries[0], carry)


# ---------------------------------------------------------------------------
# Errors.


def _errors():
  cell = jaxrnn.lstm2d(3)
  layer = jaxrnn.rnn2d(cell)
  params = cell.init_params(jax.random.key(0), 2)
  xs = jnp.ones((4, 5, 2))
  zero = cell.init_carry()
  return [
      (lambda: layer.apply(params, jnp.ones((2, 4, 5, 2))), ValueError, r"ONE image.*vmap"),
      (lambda: layer.apply(params, jnp.ones((4, 2))), ValueError, r"xs: .*\(R, C, input_size\)"),
      (lambda: layer.apply(params, jnp.ones((4, 5, 3))), ValueError, r"xs: .*\(R, C, 2\).*\(4, 5, 3\)"),
      (lambda: layer.apply(params, jnp.ones((4, 5, 2), jnp.int32)), TypeError, "xs: expected a floating"),
      (lambda: layer.apply(params, jnp.ones((0, 5, 2))), ValueError, r"xs: .*at least one row"),
      (lambda: layer.apply(params, xs, shape=(5, 1)), ValueError, r"shape\[0\] \(h\): expected an integer in \[0, 4\], got 5"),
      (lambda: layer.apply(params, xs, shape=(1, -1)), ValueError, r"shape\[1\] \(w\).*got -1"),
      (lambda: layer.apply(params, xs, shape=4), TypeError, r"shape: expected a pair \(h, w\)"),
      (lambda: layer.apply(params, xs, shape=(1.5, 2)), TypeError, r"shape\[0\] \(h\): expected an integer"),
      (lambda: layer.apply(params, xs, shape=jnp.array([1, 2, 3])), ValueError, r"shape: .*\(2,\)"),
      (lambda: layer.apply(params, xs, length=3), ValueError, r"length: .*shape=\(h, w\)"),
      (lambda: layer.apply(params, xs, reset=jnp.zeros(4, bool)), ValueError, "reset: "),
      (lambda: layer.apply(params, xs, carry=jnp.zeros(3)), TypeError, "carry: "),
      (lambda: layer.apply(jaxrnn.elman2d(3).init_params(jax.random.key(0), 2), xs), TypeError,
       "params: lstm2d.*expects LSTM2DParams"),
      (lambda: cell.cell_apply(params, zero, jnp.ones(2)), TypeError,
       r"carries: .*pair \(carry_up, carry_left\), got one LSTMState"),
      (lambda: cell.cell_apply(params, (zero,) * 3, jnp.ones(2)), TypeError, "got 3 entries"),
      (lambda: cell.cell_apply(params, (zero, zero.h), jnp.ones(2)), TypeError, r"carries\[1\] \(carry_left\)"),
      (lambda: cell.cell_apply(params, (zero, zero), jnp.ones(3)), ValueError, r"x: .*\(2,\)"),
      (lambda: jaxrnn.rnn2d(jaxrnn.rnn(jaxrnn.lstm(3))), TypeError, "cell: expected a jaxrnn.Cell"),
      (lambda: jaxrnn.rnn2d(cell, reverse=True), TypeError, r"reverse: expected a pair"),
      (lambda: jaxrnn.rnn2d(cell, reverse=(1, 0)), TypeError, r"reverse\[0\] \(rows\): expected a bool"),
      (lambda: jaxrnn.rnn2d(cell, method="diagonal"), ValueError, "method: expected one of"),
      (lambda: jaxrnn.rnn2d(cell, remat=0), ValueError, "remat: expected a positive int"),
      (lambda: jaxrnn.lstm2d(0), ValueError, "hidden_size: expected a positive int"),
      (lambda: jaxrnn.elman2d(3, activation="gelu"), ValueError, "activation: expected one of"),
      (lambda: jaxrnn.multidirectional(), ValueError, "layers: .*at least one"),
      (lambda: jaxrnn.multidirectional(layer, merge="max"), ValueError, "merge: expected one of"),
      (lambda: jaxrnn.multidirectional(layer, cell), TypeError, r"layers\[1\]: expected a jaxrnn.Layer"),
      (lambda: jaxrnn.multidirectional(layer, layer).apply((params,), xs), TypeError,
       "params: .*tuple of 2 entries, got 1"),
      (lambda: jaxrnn.renet(layer, cell), TypeError, "column_layer: expected a jaxrnn.Layer"),
  ]


@pytest.mark.parametrize("index", range(len(_errors())))
def test_errors(index):
  fn, kind, match = _errors()[index]
  with pytest.raises(kind, match=match):
    fn()
