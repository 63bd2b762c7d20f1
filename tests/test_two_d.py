"""2-D recurrence: lstm2d and elman2d cells, rnn2d (wavefront and reference
double scan), multidirectional, renet, and 2-D layers in a stack.

What is compared with what:

- every rnn2d output and final carry against float64 NumPy double loops
  written here from the cells' equations (`numpy_rnn2d`: the valid region
  cropped, reversed axes flipped, the loop run, flipped back, zeros
  outside), so reversal per axis, borders, valid regions, tall images and
  the wavefront's segments meet an independent reference; renet against
  `reference.run_bidirectional` along rows, then columns;
- gradients with NaN outside the valid regions against those of each
  cropped, flipped image run by the plain layer (no region, no reverse),
  whose outputs the NumPy loops check; and, final carry included, against
  central finite differences and forward mode;
- causality and the four corners' reach through Jacobians;
- every error message: the argument, what was expected, what was given.

Cost: a test's cost is the programs it compiles, so each group of checks
compiles ONE program, held by a module-scoped fixture and asserted on by
several tests: `forward`, `junk`, `finite_differences`, `jacobians`,
`renet_run` and `stack_run`. Params are random numbers in the structure
that ``init_params`` returns when traced abstractly (the initialisers,
tested once in `test_lstm2d_init`, compile nothing elsewhere). Images are
the smallest that still test a point: 3 x 4 and 4 x 3 for the equations, a
single row and column, 5 x 8 and 8 x 5 cut into several scans, batches of
5 x 6 for regions. float64 is on for the whole module: every check
compares at 1e-12 or takes finite differences.

Combinations are pairwise, not full products (`JUNK_CASES`, `ELMAN_RUNS`):
the two methods see a reversed axis only through `scan2d`'s flips of the
valid region, before and after the loop; only the wavefront transposes a
tall image, after those flips; ``remat`` changes only how the backward
pass is computed; an activation is the cell's alone. No bug needs three of
these factors at once, so each pair of their values appears in some case.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
import reference as ref
from jaxrnn._src.engine import remat as remat_lib
from jaxrnn._src.engine import wavefront as wavefront_lib

CORNERS = ((False, False), (False, True), (True, False), (True, True))


# Every test here compares with float64 NumPy: x64 for the whole module.
pytestmark = pytest.mark.usefixtures("x64_module")


# ---------------------------------------------------------------------------
# Independent references (float64 NumPy, from the equations).


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def numpy_lstm2d(params, xs, border=None):
  """Graves et al.'s 2-D LSTM, gate order (i, f_up, f_left, g, o): ``(ys,
  (h, c))`` with the carry at the last position (the border if empty)."""
  W_x, W_up, W_left, b_x, b_h = (np.asarray(a, np.float64) for a in params)
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


def numpy_elman2d(phi):
  """The 2-D Elman cell with activation ``phi``, as `numpy_lstm2d`."""

  def run(params, xs, border=None):
    W_x, W_up, W_left, b_x, b_h = (np.asarray(a, np.float64) for a in params)
    R, C, _ = xs.shape
    h = np.zeros((R + 1, C + 1, W_up.shape[0]))
    if border is not None:
      h[0, :], h[:, 0] = border, border
    for i in range(1, R + 1):
      for j in range(1, C + 1):
        h[i, j] = phi(xs[i - 1, j - 1] @ W_x + b_x + h[i - 1, j] @ W_up
                      + h[i, j - 1] @ W_left + b_h)
    return h[1:, 1:], (h[R, C],)

  return run


def numpy_rnn2d(equation, params, xs, *, reverse=(False, False), shape=None, border=None):
  """`rnn2d`'s meaning: ``(ys, final carry leaves)`` of ``equation`` run over
  the valid region ``shape`` with the reversed axes flipped; zeros outside."""
  xs = np.asarray(xs, np.float64)
  R, C = xs.shape[:2]
  h, w = (R, C) if shape is None else shape
  flip = lambda a: a[::-1 if reverse[0] else 1, ::-1 if reverse[1] else 1]
  ys, final = equation(params, flip(xs[:h, :w]), border)
  out = np.zeros((R, C, ys.shape[-1]))
  out[:h, :w] = flip(ys)
  return out, final


def assert_close(got, want, rtol=1e-12, atol=1e-12, err_msg=""):
  """Leaf by leaf (``want``: arrays, or a tuple of the leaves of ``got``)."""
  got = jax.tree_util.tree_leaves(got)
  want = jax.tree_util.tree_leaves(want)
  assert got and len(got) == len(want), err_msg
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                               err_msg=err_msg)


def _random_params(maker, seed, input_size, scale=0.5):
  """Params of a cell or layer with every entry random (biases too), float64.

  Their structure comes from ``init_params`` traced abstractly: the
  initialisers (tested in `test_lstm2d_init`) compile nothing here.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda key: maker.init_params(key, input_size, jnp.float64),
                          jax.random.key(0))
  return jax.tree_util.tree_map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape)),
                                shapes)


def _image(seed, shape):
  return np.random.default_rng(seed).normal(size=shape)


def _outside(shape, h, w):
  """``(R, C)`` bool: True outside the valid region ``(h, w)``."""
  out = np.ones(shape, bool)
  out[:h, :w] = False
  return out


LSTM = jaxrnn.lstm2d(3)
ELMAN = jaxrnn.elman2d(2)
RELU = lambda z: np.maximum(z, 0)
# elman2d's activations, each with its NumPy twin.
ACTIVATIONS = {"tanh": ("tanh", np.tanh), "relu": ("relu", RELU), "sin": (jnp.sin, np.sin)}


@pytest.fixture(scope="module")
def lstm_params():
  return _random_params(LSTM, 0, 2)


@pytest.fixture(scope="module")
def elman_params():
  return _random_params(ELMAN, 1, 2)


# ---------------------------------------------------------------------------
# One forward program: cells, borders, both methods, reversal, regions,
# segments.

BORDER = jaxrnn.LSTMState(np.linspace(-1.0, 1.0, 3), np.linspace(0.5, -0.5, 3))
# elman2d runs: (activation, method, image): each activation once, both
# methods, wide and tall (the wavefront transposes a tall image).
ELMAN_RUNS = (("tanh", "wavefront", "wide"), ("relu", "reference", "tall"),
              ("sin", "wavefront", "tall"))
# The wavefront cut into several scans (2 per ramp, from a width of 1): a
# single row and column, and a wide and a tall image with a valid region.
SEGMENTED = (((1, 6), (False, False), None), ((6, 1), (True, True), None),
             ((5, 8), (True, False), (4, 7)), ((8, 5), (False, True), (7, 3)))
# One region given as Python ints and traced; a traced one beyond the image.
REGION_LAYER = dict(reverse=(True, False))


@pytest.fixture(scope="module")
def forward(lstm_params, elman_params):
  """``(inputs, outputs)``: every forward check's layer run in one program."""
  inputs = dict(wide=_image(2, (3, 4, 2)), tall=_image(3, (4, 3, 2)),
                region=_image(4, (4, 5, 2)),
                segmented=[_image(5 + k, image + (2,)) for k, (image, _, _) in
                           enumerate(SEGMENTED)])

  @jax.jit
  def run(lp, ep, inputs, border, hw, hw_beyond):
    out = {}
    for method in wavefront_lib.METHODS:
      for image in ("wide", "tall"):
        out[f"lstm {method} {image}"] = jaxrnn.rnn2d(LSTM, method=method).apply(
            lp, inputs[image], carry=border)
    for reverse in CORNERS:
      out[f"reverse {reverse}"] = jaxrnn.rnn2d(LSTM, reverse=reverse).apply(lp, inputs["wide"])
    for name, method, image in ELMAN_RUNS:
      cell = jaxrnn.elman2d(2, activation=ACTIVATIONS[name][0])
      out[f"elman {name}"] = jaxrnn.rnn2d(cell, method=method).apply(ep, inputs[image])
    layer = jaxrnn.rnn2d(ELMAN, **REGION_LAYER)
    out["region ints"] = layer.apply(ep, inputs["region"], shape=(3, 4))
    out["region traced"] = layer.apply(ep, inputs["region"], shape=hw)
    out["region beyond"] = layer.apply(ep, inputs["region"], shape=hw_beyond)
    with jaxrnn.engine_settings(wavefront_min_width=1, wavefront_segments=2):
      for k, ((_, reverse, shape), xs) in enumerate(zip(SEGMENTED, inputs["segmented"])):
        out[f"segmented {k}"] = jaxrnn.rnn2d(ELMAN, reverse=reverse).apply(ep, xs, shape=shape)
    return out

  return inputs, run(lstm_params, elman_params, inputs, BORDER, jnp.array([3, 4]),
                     jnp.array([9, -2]))


def test_lstm2d_matches_numpy(forward, lstm_params):
  """Both methods, from a nonzero border carry, on a wide and a tall image."""
  inputs, out = forward
  for method in wavefront_lib.METHODS:
    for image in ("wide", "tall"):
      want = numpy_rnn2d(numpy_lstm2d, lstm_params, inputs[image], border=BORDER)
      assert_close(out[f"lstm {method} {image}"], want, err_msg=f"{method} {image}")


def test_wavefront_equals_double_scan(forward):
  _, out = forward
  for image in ("wide", "tall"):
    assert_close(out[f"lstm wavefront {image}"], out[f"lstm reference {image}"], err_msg=image)


def test_elman2d_matches_numpy(forward, elman_params):
  inputs, out = forward
  for name, _, image in ELMAN_RUNS:
    want = numpy_rnn2d(numpy_elman2d(ACTIVATIONS[name][1]), elman_params, inputs[image])
    assert_close(out[f"elman {name}"], want, err_msg=name)


def test_reverse_is_flip_run_flip(forward, lstm_params):
  """Each corner: the NumPy loop over the image with those axes flipped."""
  inputs, out = forward
  for reverse in CORNERS:
    want = numpy_rnn2d(numpy_lstm2d, lstm_params, inputs["wide"], reverse=reverse)
    assert_close(out[f"reverse {reverse}"], want, err_msg=str(reverse))


def test_python_int_and_traced_shapes_agree(forward, elman_params):
  inputs, out = forward
  want = numpy_rnn2d(numpy_elman2d(np.tanh), elman_params, inputs["region"],
                     shape=(3, 4), **REGION_LAYER)
  assert_close(out["region ints"], want)
  assert_close(out["region traced"], out["region ints"], rtol=1e-13, atol=0)
  # Traced extents beyond the image are clamped: (9, -2) is (4, 0), empty.
  ys, final = out["region beyond"]
  assert np.all(np.asarray(ys) == 0) and np.all(np.asarray(final) == 0)


def test_wavefront_edge_shapes_and_segments(forward, elman_params):
  """Single rows and columns; wide and tall images cut into several scans."""
  inputs, out = forward
  for k, ((_, reverse, shape), xs) in enumerate(zip(SEGMENTED, inputs["segmented"])):
    want = numpy_rnn2d(numpy_elman2d(np.tanh), elman_params, xs, reverse=reverse, shape=shape)
    assert_close(out[f"segmented {k}"], want, err_msg=str(SEGMENTED[k]))


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


def test_remat_chunks_alike_in_rnn_and_rnn2d(monkeypatch):
  """``remat=True`` cuts 10 steps (rnn) and 10 diagonals (rnn2d over 3 x 8,
  one scan) into chunks of isqrt(10) = 3 through the one helper; rnn2d's
  ``remat=None`` takes `EngineSettings.wavefront_remat`. Traced only."""
  chunks, scan_chunks = [], remat_lib.scan_chunks

  def record(run, carry, xs, chunk, **options):
    chunks.append(chunk)
    return scan_chunks(run, carry, xs, chunk, **options)

  monkeypatch.setattr(remat_lib, "scan_chunks", record)
  layer = jaxrnn.rnn(jaxrnn.elman(2), remat=True)
  jax.eval_shape(layer.apply, _random_params(layer, 0, 1), jnp.zeros((10, 1)))
  params = _random_params(ELMAN, 0, 1)
  for remat, setting in ((True, 1), (None, 2), (None, None), (False, 1)):
    with jaxrnn.engine_settings(wavefront_remat=setting):
      jax.eval_shape(jaxrnn.rnn2d(ELMAN, remat=remat).apply, params, jnp.zeros((3, 8, 1)))
  assert chunks == [3, 3, 2, None, None]


# ---------------------------------------------------------------------------
# Valid regions with NaN outside: values and gradients.

SHAPES = np.array([[5, 6], [3, 4], [0, 4], [1, 1], [2, 6]], np.int32)  # of (5, 6) images
# (method, reverse, remat): every pair of values of method, reverse rows and
# reverse columns appears (see the module docstring). remat: the CPU's
# default (every diagonal), and True (10 diagonals: chunks of isqrt(10) =
# 3, then a shorter one; both methods chunk with the same helper); False
# is the finite differences'. Tall images with a region: `SEGMENTED`,
# forward only (their gradients are JAX's of the same code).
JUNK_CASES = (
    ("wavefront", (False, False), None),
    ("wavefront", (True, True), True),
    ("reference", (False, True), None),
    ("reference", (True, False), None),
)


def _junk_batch(seed, image, shapes):
  """Images with NaN outside each one's valid region."""
  xs = _image(seed, (len(shapes),) + image + (2,))
  for b, (h, w) in enumerate(shapes):
    xs[b][_outside(image, h, w)] = np.nan
  return xs


def _flip_index(size, extent, reverse):
  """Entry k < extent reads ``extent - 1 - k`` (reversed) or k; the rest read
  ``size``, a zero appended past the end (an involution on the region)."""
  k = np.arange(size)
  return np.where(k < extent, extent - 1 - k if reverse else k, size)


def _gather(a, rows, columns):
  """``a[rows][:, columns]`` with a zero row and column past ``a``'s end."""
  return jnp.pad(a, ((0, 1), (0, 1), (0, 0)))[rows][:, columns]


@pytest.fixture(scope="module")
def junk(lstm_params):
  """``(xs, per case of JUNK_CASES: (ys, finals), the gradients of
  sum(ys * weights), and those of the reference)``. The reference: each
  image's region, flipped, run by the plain layer (no region, no reverse)."""
  xs = _junk_batch(10, (5, 6), SHAPES)
  weights = _image(11, xs.shape[:3] + (3,))
  plain = jaxrnn.rnn2d(LSTM)

  def case_loss(case, params, xs):
    method, reverse, remat = case
    layer = jaxrnn.rnn2d(LSTM, method=method, reverse=reverse, remat=remat)
    ys, finals = jax.vmap(layer.apply, in_axes=(None, 0))(
        params, xs, shape=(jnp.asarray(SHAPES[:, 0]), jnp.asarray(SHAPES[:, 1])))
    return jnp.sum(ys * weights), (ys, finals)

  def reference_loss(params, xs, rows, columns, weights):
    """One image's region, flipped by gathering, padded with zeros and run by
    the plain layer: by causality its outputs there are the cropped image's."""
    ys, _ = plain.apply(params, _gather(xs, rows, columns))
    return jnp.sum(_gather(ys, rows, columns) * weights)

  # Per case and image, the flip of each axis's region as an index.
  rows, columns = (np.array([[_flip_index(xs.shape[1 + axis], shape[axis], reverse[axis])
                              for shape in SHAPES] for _, reverse, _ in JUNK_CASES])
                   for axis in (0, 1))

  @jax.jit
  def run(params, xs):
    """``params``, ``xs``: one copy per case, so that each gets its gradients."""
    def total(params, xs):
      losses, aux = zip(*[case_loss(*a) for a in zip(JUNK_CASES, params, xs)])
      return sum(losses), aux

    def reference_total(params, xs):
      stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)
      per_image = jax.vmap(reference_loss, in_axes=(None, 0, 0, 0, 0))
      return jnp.sum(jax.vmap(per_image, in_axes=(0, 0, 0, 0, None))(
          stack(params), jnp.nan_to_num(stack(xs)), rows, columns, weights))

    (_, aux), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(params, xs)
    return aux, grads, jax.grad(reference_total, argnums=(0, 1))(params, xs)

  n = len(JUNK_CASES)
  aux, (g_params, g_xs), (r_params, r_xs) = run((lstm_params,) * n, (xs,) * n)
  return xs, [dict(ys=ys, finals=finals, g_params=g_params[k], g_xs=g_xs[k],
                   r_params=r_params[k], r_xs=r_xs[k])
              for k, (ys, finals) in enumerate(aux)]


def test_shape_with_junk_equals_cropped_image(junk, lstm_params):
  """Outputs and final carries: the NumPy loop over each cropped image;
  exactly zero outside; NaN outside reaches nothing."""
  xs, results = junk
  for case, got in zip(JUNK_CASES, results):
    assert np.all(np.isfinite(got["ys"])), case
    for b, (h, w) in enumerate(SHAPES):
      want = numpy_rnn2d(numpy_lstm2d, lstm_params, xs[b], reverse=case[1], shape=(h, w))
      assert_close(jax.tree_util.tree_map(lambda a: a[b], (got["ys"], got["finals"])),
                   want, err_msg=f"{case}, image {b}")
      assert np.all(np.asarray(got["ys"][b])[_outside(got["ys"].shape[1:3], h, w)] == 0)


def test_gradients_with_junk_equal_cropped_gradients(junk):
  """Of the outputs; the final carry's share: the finite differences."""
  _, results = junk
  for case, got in zip(JUNK_CASES, results):
    leaves = jax.tree_util.tree_leaves((got["g_params"], got["g_xs"]))
    assert all(np.all(np.isfinite(g)) for g in leaves), case
    for b, (h, w) in enumerate(SHAPES):
      assert np.all(np.asarray(got["g_xs"][b])[_outside(got["g_xs"].shape[1:3], h, w)] == 0)
    assert_close((got["g_params"], got["g_xs"]), (got["r_params"], got["r_xs"]),
                 rtol=1e-10, atol=1e-12, err_msg=str(case))


@pytest.fixture(scope="module")
def finite_differences(lstm_params, elman_params):
  """Per cell: the loss's derivative along a random direction by reverse
  mode, forward mode and central differences; with a valid region, a
  reversed axis, ``remat=False``, and the final carry in the loss."""
  runs = ((LSTM, lstm_params, dict(reverse=(True, False), remat=False), (3, 4)),
          (ELMAN, elman_params, dict(reverse=(False, True), method="reference"), (4, 3)))
  eps = 1e-6

  @jax.jit
  def run(values, directions):
    out = []
    for (cell, _, options, shape), v, d in zip(runs, values, directions):
      weights = _image(12, (4, 4, cell.hidden_size))

      def f(v):
        ys, final = jaxrnn.rnn2d(cell, **options).apply(*v, shape=shape)
        return jnp.sum(ys * weights) + sum(jnp.sum(a) for a in jax.tree_util.tree_leaves(final))

      analytic = sum(jnp.vdot(g, e) for g, e in zip(jax.tree_util.tree_leaves(jax.grad(f)(v)),
                                                    jax.tree_util.tree_leaves(d)))
      # f at v + eps d and v - eps d, as one batch of two.
      ends = jax.vmap(lambda sign: f(jax.tree_util.tree_map(lambda a, e: a + sign * eps * e,
                                                            v, d)))(jnp.array([1.0, -1.0]))
      out.append((analytic, jax.jvp(f, (v,), (d,))[1], (ends[0] - ends[1]) / (2 * eps)))
    return out

  values = tuple((p, _image(13, (4, 4, 2))) for _, p, _, _ in runs)
  directions = tuple(jax.tree_util.tree_map(lambda a: _image(14 + k, np.shape(a)), v)
                     for k, v in enumerate(values))
  return run(values, directions)


def test_gradients_match_finite_differences(finite_differences):
  for analytic, forward_mode, numeric in finite_differences:
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    np.testing.assert_allclose(forward_mode, analytic, rtol=1e-10)


# ---------------------------------------------------------------------------
# Causality and the four corners.


@pytest.fixture(scope="module")
def jacobians(lstm_params):
  """The Jacobian of rnn2d's outputs, and of one position of a four-corner
  multidirectional layer (with a valid region), with respect to the image."""
  net = jaxrnn.multidirectional(*[jaxrnn.rnn2d(LSTM, reverse=r) for r in CORNERS])

  @jax.jit
  def run(xs):
    causal = jax.jacrev(lambda x: jaxrnn.rnn2d(LSTM).apply(lstm_params, x)[0])(xs)

    def at_one_position(x):
      ys, carries = net.apply((lstm_params,) * 4, x, shape=(3, 4))
      return ys[1, 2], (ys, carries)

    return causal, jax.jacrev(at_one_position, has_aux=True)(xs)

  return run(_image(15, (4, 5, 2)))


def test_causality(jacobians):
  """Output (i, j) depends on exactly the inputs above-left of it."""
  jac, _ = jacobians  # (R, C, H, R, C, D)
  depends = np.any(np.asarray(jac) != 0, axis=(2, 5))  # (R, C, R, C)
  R, C = depends.shape[:2]
  for i in range(R):
    for j in range(C):
      allowed = np.zeros((R, C), bool)
      allowed[:i + 1, :j + 1] = True
      np.testing.assert_array_equal(depends[i, j], allowed, err_msg=f"output {(i, j)}")


def test_multidirectional_four_corners(jacobians):
  _, (jac, (ys, carries)) = jacobians
  # Every output inside sees every input inside: the four corners together.
  reach = np.any(np.asarray(jac) != 0, axis=(0, 3))  # jac: (12, R, C, D)
  np.testing.assert_array_equal(reach[:3, :4], np.ones((3, 4), bool))
  assert not reach[3].any() and not reach[:, 4].any()
  assert ys.shape == (4, 5, 12) and np.all(np.asarray(ys[3]) == 0)
  assert isinstance(carries, tuple) and len(carries) == 4
  # Each corner's final carry is at its own last position: (0, 0) for (True, True).
  np.testing.assert_allclose(carries[0].h, ys[2, 3, :3], rtol=1e-14)
  np.testing.assert_allclose(carries[3].h, ys[0, 0, 9:], rtol=1e-14)


def _scaling_layer(scale):
  """A stateless 2-D layer ``ys = scale * xs`` (zero outside the region);
  its params are a random number drawn from its key."""

  def apply(params, xs, *, shape=None, carry=None, key=None):
    del params, carry, key
    h, w = (xs.shape[0], xs.shape[1]) if shape is None else shape
    inside = (jnp.arange(xs.shape[0]) < h)[:, None] & (jnp.arange(xs.shape[1]) < w)[None, :]
    return jnp.where(inside[:, :, None], scale * xs, 0.0), ()

  return jaxrnn.Layer(lambda key, input_size, dtype=None: jax.random.uniform(key), apply,
                      lambda dtype=None: ())


def test_multidirectional_merges():
  layers = [_scaling_layer(k) for k in (1.0, 2.0, 4.0)]
  merges = ("concat", "sum", "mean", "mul", lambda *ys: sum(ys) + 1.0)
  xs = jnp.arange(24.0).reshape(2, 3, 4) + 1
  params = jaxrnn.multidirectional(*layers).init_params(jax.random.key(0), 4)
  assert len(set(np.asarray(params).tolist())) == 3  # a key per layer
  got = jax.jit(lambda xs: [jaxrnn.multidirectional(*layers, merge=m).apply(
      params, xs, shape=(2, 2))[0] for m in merges])(xs)
  inside = np.zeros((2, 3, 1), bool)
  inside[:, :2] = True
  np.testing.assert_array_equal(got[0], np.concatenate(
      [np.where(inside, k * xs, 0) for k in (1, 2, 4)], axis=-1))
  np.testing.assert_array_equal(got[1], np.where(inside, 7 * xs, 0))
  np.testing.assert_allclose(got[2], np.where(inside, 7 * xs / 3, 0), rtol=1e-15)
  np.testing.assert_array_equal(got[3], np.where(inside, 8 * xs ** 3, 0))
  # A merge that maps zeros elsewhere is re-zeroed outside the region.
  np.testing.assert_array_equal(got[4], np.where(inside, 7 * xs + 1, 0))


# ---------------------------------------------------------------------------
# renet, stack and readout.


def numpy_renet(params, xs, h, w):
  """ReNet by `reference.run_bidirectional` (elman rows, lstm columns):
  ``(ys, carry leaves)``; rows from ``h`` on and columns from ``w`` on have
  length 0."""
  rows = [ref.np_params(p) for p in params.rows]
  columns = [ref.np_params(p) for p in params.columns]
  R, C = xs.shape[:2]
  swept, row_carries = np.zeros((R, C, 4)), []
  for i in range(R):
    swept[i], carry = ref.run_bidirectional(
        ref.elman_step, ref.elman_step, *rows, xs[i], np.zeros(2), np.zeros(2), 2, 2,
        length=w if i < h else 0)
    row_carries.append(carry)
  ys, column_carries = np.zeros((R, C, 6)), []
  zeros = (np.zeros(3), np.zeros(3))
  for j in range(C):
    ys[:, j], carry = ref.run_bidirectional(
        ref.lstm_step, ref.lstm_step, *columns, swept[:, j], zeros, zeros, 3, 3,
        length=h if j < w else 0)
    column_carries.append(carry)
  leaves = lambda carries: [np.stack(a) for a in zip(*[jax.tree_util.tree_leaves(c)
                                                        for c in carries])]
  return ys, leaves(row_carries) + leaves(column_carries)


@pytest.fixture(scope="module")
def renet_run():
  row = jaxrnn.bidirectional(jaxrnn.elman(2), jaxrnn.elman(2))
  column = jaxrnn.bidirectional(jaxrnn.lstm(3), jaxrnn.lstm(3))
  net = jaxrnn.renet(row, column)
  params = _random_params(net, 26, 2)  # nonzero biases too
  xs = _junk_batch(27, (5, 6), SHAPES)
  weights = _image(28, xs.shape[:3] + (6,))

  def batch_loss(params, xs):
    ys, carry = jax.vmap(net.apply, in_axes=(None, 0))(
        params, xs, shape=(jnp.asarray(SHAPES[:, 0]), jnp.asarray(SHAPES[:, 1])))
    return jnp.sum(ys * weights), (ys, carry)

  run = jax.jit(jax.value_and_grad(batch_loss, argnums=(0, 1), has_aux=True))
  return net, params, xs, run(params, xs)


def test_renet_equals_row_then_column_sweeps(renet_run):
  net, params, xs, ((_, (ys, carry)), grads) = renet_run
  assert isinstance(params, jaxrnn.ReNetParams) and isinstance(carry, jaxrnn.ReNetCarry)
  assert params.columns.forward.W_x.shape == (4, 12)  # the row sweep's output size
  assert params.rows.backward.W_x.shape == (2, 2)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  for b, (h, w) in enumerate(SHAPES):
    # Rows below the region and columns right of it keep the starting carry.
    assert_close(jax.tree_util.tree_map(lambda a: a[b], (ys, carry)),
                 numpy_renet(params, xs[b], h, w), err_msg=f"image {b}")
    assert np.all(np.asarray(grads[1][b])[_outside(xs.shape[1:3], h, w)] == 0)
  _, carry = jax.eval_shape(net.apply, params, xs[0])
  assert carry.rows.forward.shape == (5, 2) and carry.columns.backward.h.shape == (6, 3)


def test_renet_zeroes_junk_for_user_layers():
  """A user 1-D layer may ignore ``length``: renet zeroes what lies outside
  the region first, so the NaN there reaches no output and no gradient."""

  def apply(params, xs, *, length=None, carry=None):
    del params, length, carry
    return jnp.cumsum(xs[::-1], axis=0)[::-1], ()  # ys[t] = xs[t] + ... + xs[T-1]

  suffix_sum = jaxrnn.Layer(lambda key, input_size, dtype=None: (), apply,
                            lambda dtype=None: ())
  net = jaxrnn.renet(suffix_sum, suffix_sum)
  xs = _junk_batch(31, (4, 5), [(3, 4)])[0]
  params = net.init_params(jax.random.key(0), 2)
  loss = lambda xs: jnp.sum(net.apply(params, xs, shape=(3, 4))[0])
  (total, grad), ys = jax.jit(lambda xs: (jax.value_and_grad(loss)(xs),
                                          net.apply(params, xs, shape=(3, 4))[0]))(xs)
  want = np.zeros_like(xs)
  want[:3, :4] = xs[:3, :4][::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]
  np.testing.assert_allclose(ys, want, rtol=1e-12)
  assert np.isfinite(total) and np.all(np.asarray(grad)[_outside((4, 5), 3, 4)] == 0)


# Per-image valid regions of the stack's batch of (4, 5) images.
STACK_SHAPES = np.array([[3, 4], [4, 5], [0, 2]], np.int32)


@pytest.fixture(scope="module")
def stack_run():
  layer = jaxrnn.rnn2d(jaxrnn.lstm2d(4))
  net = jaxrnn.stack(layer, jaxrnn.readout(3))
  params = _random_params(net, 29, 2)
  batch = _junk_batch(30, (4, 5), STACK_SHAPES)

  @jax.jit
  def run(params, batch, shapes):
    xs = batch[0]  # valid region (3, 4)
    return dict(
        hidden=layer.apply(params[0], xs, shape=(3, 4)),
        pair=net.apply(params, xs, shape=(3, 4)),
        traced=net.apply(params, xs, shape=shapes[0]),
        concrete=net.apply(params, xs, shape=np.array([3, 4])),
        hidden_batch=jax.vmap(lambda x, s: layer.apply(params[0], x, shape=(s[0], s[1]))[0])(
            batch, shapes),
        batch=jax.vmap(lambda x, s: net.apply(params, x, shape=s))(batch, shapes))

  return net, params, batch, run(params, batch, jnp.asarray(STACK_SHAPES))


def test_stack_and_readout_map_every_position(stack_run):
  """stack passes shape= on to every layer; readout maps every position."""
  _, params, _, out = stack_run
  (ys, carries), (hidden, carry) = out["pair"], out["hidden"]
  assert ys.shape == (4, 5, 3)
  want = hidden @ params[1].W_hy + params[1].b_y[None, None, :]
  np.testing.assert_allclose(ys[:3, :4], want[:3, :4], rtol=1e-12)
  assert np.all(np.asarray(ys[3:]) == 0) and np.all(np.asarray(ys[:, 4:]) == 0)
  assert_close(carries[0], carry, rtol=0, atol=0)
  # Output sizes from shapes alone: rnn2d's cell, and a multidirectional
  # layer (its outputs' shape for an image input).
  corners = jaxrnn.multidirectional(jaxrnn.rnn2d(jaxrnn.lstm2d(4)),
                                    jaxrnn.rnn2d(jaxrnn.lstm2d(5), reverse=(True, True)))
  for net, size in ((jaxrnn.stack(jaxrnn.rnn2d(jaxrnn.lstm2d(4)), jaxrnn.readout(3)), 4),
                    (jaxrnn.stack(corners, jaxrnn.readout(3)), 9)):
    params = jax.eval_shape(lambda key: net.init_params(key, 2), jax.random.key(0))
    assert params[1].W_hy.shape == (size, 3)


def test_stack_and_readout_take_an_array_shape(stack_run):
  """``shape=`` as an integer array of shape (2,) (concrete, traced, and one
  per image under vmap) through rnn2d and readout alike."""
  _, params, batch, out = stack_run
  assert_close(out["traced"], out["pair"], rtol=0, atol=0)
  assert_close(out["concrete"], out["pair"], rtol=0, atol=0)
  ys = np.asarray(out["batch"][0])
  want = out["hidden_batch"] @ params[1].W_hy + params[1].b_y[None, None, None, :]
  assert np.all(np.isfinite(ys))
  for b, (h, w) in enumerate(STACK_SHAPES):
    np.testing.assert_allclose(ys[b, :h, :w], want[b, :h, :w], rtol=1e-12)
    assert np.all(ys[b][_outside(ys.shape[1:3], h, w)] == 0)
  # readout alone, eagerly, with a concrete array.
  hidden = jnp.nan_to_num(out["hidden"][0])
  ys, _ = jaxrnn.readout(3).apply(params[1], hidden, shape=jnp.array([3, 4]))
  np.testing.assert_allclose(ys, out["pair"][0], rtol=1e-12, atol=0)

# ---------------------------------------------------------------------------
# Cells: initialisation and config.


def test_lstm2d_init():
  cell = jaxrnn.lstm2d(4, forget_bias=2.0)
  assert dict(cell.config) == {"kind": "lstm2d", "hidden_size": 4, "forget_bias": 2.0}
  params = cell.init_params(jax.random.key(0), 3)
  assert isinstance(params, jaxrnn.LSTM2DParams)
  assert params.W_x.shape == (3, 20) and params.b_h.shape == (20,)
  assert params.W_up.shape == params.W_left.shape == (4, 20)
  assert params.W_x.dtype == jnp.float64  # the default float: x64 is on here
  # Forget biases on both forget gates (f_up, f_left), nowhere else.
  np.testing.assert_array_equal(params.b_x, np.repeat([0.0, 2.0, 2.0, 0.0, 0.0], 4))
  np.testing.assert_array_equal(params.b_h, np.zeros(20))
  # Orthogonal per gate block, and the two directions drawn independently.
  for W in (params.W_up, params.W_left):
    for k in range(5):
      block = np.asarray(W[:, 4 * k:4 * k + 4])
      np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-10)
  assert not np.allclose(params.W_up, params.W_left)
  carry = cell.init_carry(jnp.float16)
  assert isinstance(carry, jaxrnn.LSTMState) and carry.h.dtype == jnp.float16
  assert carry.h.shape == carry.c.shape == (4,)
  assert cell.hidden_size == cell.output_size == 4


def test_elman2d_init():
  cell = jaxrnn.elman2d(4)
  assert dict(cell.config) == {"kind": "elman2d", "hidden_size": 4, "activation": "tanh"}
  # jnp.tanh is "tanh", as for elman; the activation is keyword-only.
  assert dict(jaxrnn.elman2d(4, activation=jnp.tanh).config)["activation"] == "tanh"
  with pytest.raises(TypeError, match="positional"):
    jaxrnn.elman2d(4, "relu")
  params = cell.init_params(jax.random.key(0), 2)
  assert isinstance(params, jaxrnn.Elman2DParams)
  assert params.W_x.shape == (2, 4) and params.W_up.shape == params.W_left.shape == (4, 4)
  np.testing.assert_array_equal(params.b_x, np.zeros(4))
  np.testing.assert_allclose(params.W_up.T @ params.W_up, np.eye(4), atol=1e-10)
  # bfloat16 params (their dtypes traced only); the products accumulate in float32.
  shapes = jax.eval_shape(lambda key: cell.init_params(key, 2, jnp.bfloat16), jax.random.key(0))
  assert all(leaf.dtype == jnp.bfloat16 for leaf in shapes)
  params = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, 0.25, a.dtype), shapes)
  h, y = cell.cell_apply(params, (cell.init_carry(), cell.init_carry()), jnp.ones(2))
  assert h.shape == (4,) and h.dtype == jnp.float32 and bool(jnp.all(h == y))


# ---------------------------------------------------------------------------
# Errors: each names the argument, what was expected and what was given.


@pytest.fixture(scope="module")
def s():
  cell = jaxrnn.lstm2d(3)
  return types.SimpleNamespace(cell=cell, layer=jaxrnn.rnn2d(cell), zero=cell.init_carry(),
                               params=_random_params(cell, 0, 2),
                               xs=jnp.ones((4, 5, 2)))


ERRORS = [
    (lambda s: s.layer.apply(s.params, jnp.ones((2, 4, 5, 2))), ValueError,
     r"ONE image.*vmap"),
    (lambda s: s.layer.apply(s.params, jnp.ones((4, 2))), ValueError,
     r"xs: .*\(R, C, input_size\)"),
    (lambda s: s.layer.apply(s.params, jnp.ones((4, 5, 3))), ValueError,
     r"xs: .*\(R, C, 2\).*\(4, 5, 3\)"),
    (lambda s: s.layer.apply(s.params, jnp.ones((4, 5, 2), jnp.int32)), TypeError,
     "xs: expected a floating"),
    (lambda s: s.layer.apply(s.params, jnp.ones((0, 5, 2))), ValueError,
     r"xs: .*at least one row"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=(5, 1)), ValueError,
     r"shape\[0\] \(h\): expected an integer in \[0, R\] = \[0, 4\], got 5"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=(1, -1)), ValueError,
     r"shape\[1\] \(w\): expected an integer in \[0, C\] = \[0, 5\], got -1"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=jnp.array([1, 6])), ValueError,
     r"shape\[1\] \(w\): expected an integer in \[0, C\] = \[0, 5\], got 6"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=4), TypeError,
     r"shape: expected a pair \(h, w\), got int"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=(1.5, 2)), TypeError,
     r"shape\[0\] \(h\): expected an integer scalar, got float"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=jnp.array([1.0, 2.0])), TypeError,
     r"shape\[0\] \(h\): expected an integer scalar, got dtype float"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=jnp.array([1, 2, 3])), ValueError,
     r"shape: expected \(h, w\), .*shape \(2,\), got an array of shape \(3,\)"),
    (lambda s: s.layer.apply(s.params, s.xs, shape=(jnp.array([1, 2]), 3)), ValueError,
     r"shape: expected a pair \(h, w\) of scalars \(one image\), got shapes \(\(2,\), \(\)\)"),
    (lambda s: jaxrnn.readout(2).apply(jaxrnn.ReadoutParams(jnp.ones((2, 2)), jnp.ones(2)),
                                       s.xs, shape=jnp.array([5, 1])), ValueError,
     r"shape\[0\] \(h\): expected an integer in \[0, R\] = \[0, 4\], got 5"),
    (lambda s: s.layer.apply(s.params, s.xs, length=3), ValueError,
     r"length: .*shape=\(h, w\)"),
    (lambda s: s.layer.apply(s.params, s.xs, reset=jnp.zeros(4, bool)), ValueError,
     "reset: "),
    (lambda s: s.layer.apply(s.params, s.xs, carry=jnp.zeros(3)), TypeError,
     "carry: rnn2d.apply expects a carry structured like"),
    (lambda s: s.layer.apply(s.params, s.xs, key=jax.random.split(jax.random.key(0))),
     ValueError, r"key: expected ONE PRNG key \(shape \(\)\), got shape \(2,\)"),
    (lambda s: s.layer.apply(_random_params(jaxrnn.elman2d(3), 0, 2), s.xs),
     TypeError, "params: lstm2d.*expects LSTM2DParams"),
    (lambda s: s.cell.cell_apply(s.params, s.zero, jnp.ones(2)), TypeError,
     r"carries: .*pair \(carry_up, carry_left\), got one LSTMState"),
    (lambda s: s.cell.cell_apply(s.params, (s.zero,) * 3, jnp.ones(2)), TypeError,
     "got 3 entries"),
    (lambda s: s.cell.cell_apply(s.params, (s.zero, s.zero.h), jnp.ones(2)), TypeError,
     r"carries\[1\] \(carry_left\): lstm2d\(hidden_size=3\) expects a carry structured"),
    (lambda s: s.cell.cell_apply(s.params, (s.zero, s.zero), jnp.ones(3)), ValueError,
     r"x: .*\(2,\)"),
    (lambda s: jaxrnn.rnn2d(jaxrnn.rnn(jaxrnn.lstm(3))), TypeError,
     r"cell: expected a jaxrnn.Cell, got a jaxrnn.Layer; pass the 2-D cell itself "
     r"\(e.g. jaxrnn.lstm2d\(32\)\), not rnn2d\(cell\)"),
    (lambda s: jaxrnn.rnn2d(3), TypeError, "cell: expected a jaxrnn.Cell, got int"),
    (lambda s: jaxrnn.rnn2d(s.cell, reverse=True), TypeError, r"reverse: expected a pair"),
    (lambda s: jaxrnn.rnn2d(s.cell, reverse=(1, 0)), TypeError,
     r"reverse\[0\] \(rows\): expected a bool"),
    (lambda s: jaxrnn.rnn2d(s.cell, method="diagonal"), ValueError,
     "method: expected one of"),
    (lambda s: jaxrnn.rnn2d(s.cell, remat=0), ValueError, "remat: expected a positive int"),
    (lambda s: jaxrnn.lstm2d(0), ValueError, "hidden_size: expected a positive int"),
    (lambda s: jaxrnn.elman2d(3, activation="gelu"), ValueError,
     r"activation: expected one of \['relu', 'tanh'\] or a callable, got 'gelu'"),
    (lambda s: jaxrnn.multidirectional(), ValueError, "layers: .*at least one"),
    (lambda s: jaxrnn.multidirectional(s.layer, merge="max"), ValueError,
     r"merge: expected one of \['concat', 'mean', 'mul', 'sum'\] or a callable, got 'max'"),
    (lambda s: jaxrnn.multidirectional(s.layer, s.cell), TypeError,
     r"layers\[1\]: expected a jaxrnn.Layer, got a jaxrnn.Cell; wrap it as "
     r"jaxrnn.rnn2d\(cell\)"),
    (lambda s: jaxrnn.multidirectional(s.layer, s.layer).apply((s.params,), s.xs), TypeError,
     "params: .*tuple of 2 entries, got 1"),
    (lambda s: jaxrnn.renet(s.layer, s.cell), TypeError,
     "column_layer: expected a jaxrnn.Layer, got a jaxrnn.Cell"),
]


@pytest.mark.parametrize("index", range(len(ERRORS)))
def test_errors(s, index):
  fn, kind, match = ERRORS[index]
  with pytest.raises(kind, match=match):
    fn(s)
