"""jaxrnn.interop against PyTorch: outputs, gradients, carries, round trips.

The reference is always the real torch module on a padded minibatch through
``pack_padded_sequence(enforce_sorted=False)``; the jaxrnn side is the
converted layer, ``jax.vmap``-ed over the batch with ``length=``.
"""

import copy
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch
from hypothesis import given, settings, strategies as st  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn.interop import carry_from_torch, carry_to_torch, from_torch, to_torch  # noqa: E402

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
MODULES = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


def E(message):
  """A regex matching exactly ``message``."""
  return "^" + re.escape(message) + "$"


def make_module(kind, input_size, hidden_size, dtype=torch.float32, seed=0, **kwargs):
  torch.manual_seed(seed)
  module = MODULES[kind](input_size, hidden_size, dtype=dtype, **kwargs)
  with torch.no_grad():  # larger than the default init: exercise saturation
    for p in module.parameters():
      p.uniform_(-0.8, 0.8)
  return module


def _np(t):
  return t.detach().cpu().numpy()


def torch_reference(module, xs, lengths, w_out, w_h, w_c, h0, c0):
  """Outputs, final states, loss and gradients of the torch module."""
  bf = module.batch_first
  x = torch.tensor(xs if bf else np.swapaxes(xs, 0, 1), requires_grad=True)
  is_lstm = isinstance(module, torch.nn.LSTM)
  hx = None
  if h0 is not None:
    h0_t = torch.tensor(h0, requires_grad=True)
    hx = h0_t
    if is_lstm:
      c0_t = torch.tensor(c0, requires_grad=True)
      hx = (h0_t, c0_t)
  module.zero_grad()
  packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
  out, state = module(packed, hx)
  out, _ = pad_packed_sequence(out, batch_first=bf, total_length=xs.shape[1])
  if not bf:
    out = out.transpose(0, 1)
  h_n, c_n = state if is_lstm else (state, None)
  loss = (out * torch.from_numpy(w_out)).sum() + (h_n * torch.from_numpy(w_h)).sum()
  if is_lstm:
    loss = loss + (c_n * torch.from_numpy(w_c)).sum()
  loss.backward()
  dx = _np(x.grad) if bf else np.swapaxes(_np(x.grad), 0, 1)
  # The weight gradients in jaxrnn's layout: convert a copy holding the grads.
  grads = copy.deepcopy(module)
  with torch.no_grad():
    named = dict(module.named_parameters())
    for name, p in grads.named_parameters():
      p.copy_(named[name].grad)
  _, dparams = from_torch(grads)
  result = dict(ys=_np(out), h_n=_np(h_n), loss=loss.item(), dx=dx, dparams=dparams)
  if is_lstm:
    result["c_n"] = _np(c_n)
  if h0 is not None:
    result["dh0"] = _np(h0_t.grad)
    if is_lstm:
      result["dc0"] = _np(c0_t.grad)
  return result


def jaxrnn_result(layer, params, xs, lengths, w_out, w_h, w_c, h0, c0, is_lstm):
  mask = (np.arange(xs.shape[1])[None, :] < lengths[:, None]).astype(xs.dtype)

  def loss_fn(params, xs, carry):
    if carry is None:
      run = lambda x, n: layer.apply(params, x, length=n)  # noqa: E731
      ys, final = jax.vmap(run)(xs, lengths)
    else:
      run = lambda x, n, c: layer.apply(params, x, length=n, carry=c)  # noqa: E731
      ys, final = jax.vmap(run)(xs, lengths, carry)
    state = carry_to_torch(layer, final)
    h_n, c_n = state if is_lstm else (state, None)
    loss = jnp.sum(ys * mask[:, :, None] * w_out) + jnp.sum(h_n * w_h)
    if is_lstm:
      loss = loss + jnp.sum(c_n * w_c)
    return loss, (ys, h_n, c_n)

  carry = None if h0 is None else carry_from_torch(layer, h0, c0 if is_lstm else None)
  argnums = (0, 1) if carry is None else (0, 1, 2)
  fn = jax.jit(jax.value_and_grad(loss_fn, argnums=argnums, has_aux=True))
  (loss, (ys, h_n, c_n)), grads = fn(params, jnp.asarray(xs), carry)
  result = dict(ys=np.asarray(ys), h_n=np.asarray(h_n), loss=float(loss),
                dx=np.asarray(grads[1]), dparams=grads[0])
  if is_lstm:
    result["c_n"] = np.asarray(c_n)
  if carry is not None:
    dh0 = carry_to_torch(layer, grads[2])
    if is_lstm:
      result["dh0"], result["dc0"] = map(np.asarray, dh0)
    else:
      result["dh0"] = np.asarray(dh0)
  return result


def check_against_torch(module, lengths, *, seed=0, initial_state=True, **rnn_options):
  """Converts ``module`` and compares everything on one padded minibatch.

  ``rnn_options`` (e.g. ``unroll=1``, which halves compilation time) go to
  `from_torch`; they change how the scan runs, not what it computes.
  """
  dtype = np.float64 if module.weight_ih_l0.dtype == torch.float64 else np.float32
  tol = TOL[dtype]
  layer, params = from_torch(module, **rnn_options)
  assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(params))
  lengths = np.asarray(lengths)
  B, T = len(lengths), int(lengths.max())
  L, D = module.num_layers, 2 if module.bidirectional else 1
  H = module.hidden_size
  H_out = getattr(module, "proj_size", 0) or H
  is_lstm = isinstance(module, torch.nn.LSTM)
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(B, T, module.input_size)).astype(dtype)
  xs[np.arange(T)[None, :] >= lengths[:, None]] = 1e3  # junk in the padding
  w_out = rng.normal(size=(B, T, D * H_out)).astype(dtype)
  w_h = rng.normal(size=(L * D, B, H_out)).astype(dtype)
  w_c = rng.normal(size=(L * D, B, H)).astype(dtype)
  h0 = c0 = None
  if initial_state:
    h0 = rng.normal(size=(L * D, B, H_out)).astype(dtype) * 0.5
    c0 = rng.normal(size=(L * D, B, H)).astype(dtype) * 0.5
  ref = torch_reference(module, xs, lengths, w_out, w_h, w_c, h0, c0)
  got = jaxrnn_result(layer, params, xs, lengths, w_out, w_h, w_c, h0, c0, is_lstm)

  valid = np.arange(T)[None, :] < lengths[:, None]
  np.testing.assert_allclose(got["ys"][valid], ref["ys"][valid], **tol)
  assert np.all(got["ys"][~valid] == 0)
  for key in ("h_n", "c_n", "dx", "dh0", "dc0"):
    if key in ref:
      np.testing.assert_allclose(got[key], ref[key], err_msg=key, **tol)
  np.testing.assert_allclose(got["loss"], ref["loss"], rtol=tol["rtol"] * 10)
  flat_got, tree_got = jax.tree_util.tree_flatten_with_path(got["dparams"])
  flat_ref, tree_ref = jax.tree_util.tree_flatten_with_path(ref["dparams"])
  assert tree_got == tree_ref
  for (path, g), (_, r) in zip(flat_got, flat_ref):
    np.testing.assert_allclose(
        np.asarray(g), np.asarray(r), err_msg=jax.tree_util.keystr(path), **tol)
  return layer, params


# Pairwise, not the full product. Each row is one module compared with torch
# (one compiled program). The options: kind (RNN tanh, RNN relu, LSTM, LSTM
# with a projection, GRU), 1 or 2 layers, bidirectional, biases,
# batch_first, an initial state given, and the layer as from_torch returns
# it (default unroll) or with unroll=1 (half the compilation, same numbers).
# Each kind has two rows whose binary options are complementary, and the
# rows cover every pair of values of any two options (checked by
# test_the_table_covers_every_pair), and 2 layers x bidirectional x initial
# state for an LSTM. Sizes (input 1 to 3, hidden 2 to 5) and lengths (one
# sequence of one step; unsorted batches holding 1 and T) vary between rows.
# Three rows run in float64, to 1e-10.
# (kind, module kwargs, input size, lengths, initial state, unroll=1)
CONFIGS_F32 = [
    ("RNN", dict(hidden_size=4, num_layers=2, bidirectional=True, bias=False,
                 batch_first=True), 3, [3, 6, 1, 5], False, True),
    ("RNN", dict(hidden_size=3), 1, [4], True, False),
    ("RNN", dict(hidden_size=3, nonlinearity="relu", num_layers=2, bidirectional=True),
     2, [5, 3, 2], False, False),
    ("LSTM", dict(hidden_size=4, num_layers=2, bidirectional=True), 3, [3, 6, 1, 5], True, True),
    ("LSTM", dict(hidden_size=2, bias=False, batch_first=True), 1, [1], False, False),
    ("LSTM", dict(hidden_size=5, proj_size=3, num_layers=2, bias=False, batch_first=True),
     2, [4, 5, 2], False, True),
    ("GRU", dict(hidden_size=4, num_layers=2, bidirectional=True, bias=False), 2, [2, 4, 1],
     False, True),
]
CONFIGS_F64 = [
    ("RNN", dict(hidden_size=2, nonlinearity="relu", bias=False, batch_first=True),
     3, [2, 5, 1], True, True),
    ("LSTM", dict(hidden_size=4, proj_size=2, bidirectional=True), 3, [3, 6, 1, 5], True, False),
    ("GRU", dict(hidden_size=3, batch_first=True), 2, [5, 2, 4], True, False),
]


def _options(config):
  """The row's values of the pairwise options."""
  kind, kw, _, _, initial_state, unroll_1 = config
  if kind == "RNN":
    kind += "-" + kw.get("nonlinearity", "tanh")
  elif kind == "LSTM" and kw.get("proj_size"):
    kind += "-proj"
  return (kind, kw.get("num_layers", 1) == 2, kw.get("bidirectional", False),
          kw.get("bias", True), kw.get("batch_first", False), initial_state, unroll_1)


def _id(config):
  kind, kw, input_size, lengths, h0, unroll_1 = config
  return "-".join([kind, f"input_size={input_size}", *(f"{k}={v}" for k, v in kw.items()),
                   f"B={len(lengths)}", "h0" if h0 else "no_h0", "unroll=1" if unroll_1 else
                   "default_unroll"])


def test_the_table_covers_every_pair():
  rows = [_options(c) for c in CONFIGS_F32 + CONFIGS_F64]
  values = [sorted({row[i] for row in rows}) for i in range(len(rows[0]))]
  assert len(values[0]) == 5 and all(v == [False, True] for v in values[1:])
  for i, j in itertools.combinations(range(len(values)), 2):
    assert {(row[i], row[j]) for row in rows} == set(itertools.product(values[i], values[j]))
  assert ("LSTM", True, True, True, False, True, True) in rows  # 2 layers, both directions, h0


def _check_row(config, dtype):
  kind, kwargs, input_size, lengths, initial_state, unroll_1 = config
  kwargs = dict(kwargs)
  module = make_module(kind, input_size, kwargs.pop("hidden_size"), dtype=dtype, **kwargs)
  check_against_torch(module, lengths, seed=len(lengths), initial_state=initial_state,
                      **(dict(unroll=1) if unroll_1 else {}))


@pytest.mark.parametrize("config", CONFIGS_F32, ids=_id)
def test_matches_torch_float32(config):
  _check_row(config, torch.float32)


@pytest.mark.parametrize("config", CONFIGS_F64, ids=_id)
def test_matches_torch_float64(config, x64):
  _check_row(config, torch.float64)


# ---------------------------------------------------------------------------
# Structure, round trips and carries (no compilation).


def assert_same_module(a, b):
  assert type(a) is type(b)
  for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
               "dropout", "bidirectional", "proj_size", "nonlinearity"):
    assert getattr(a, attr, None) == getattr(b, attr, None), attr
  sa, sb = a.state_dict(), b.state_dict()
  assert list(sa) == list(sb)
  for name in sa:
    assert sa[name].dtype == sb[name].dtype, name
    assert torch.equal(sa[name], sb[name]), name


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(["RNN-tanh", "RNN-relu", "LSTM", "LSTM-proj", "GRU"]),
    sizes=st.tuples(st.integers(1, 6), st.integers(2, 6)),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    batch_first=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)
def test_round_trip_is_exact(kind, sizes, num_layers, bidirectional, bias, batch_first, dtype):
  kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                batch_first=batch_first)
  if kind.startswith("RNN"):
    kwargs["nonlinearity"] = kind.split("-")[1]
  if kind == "LSTM-proj":
    kwargs["proj_size"] = sizes[1] - 1
  module = make_module(kind.split("-")[0], *sizes, dtype=dtype, **kwargs)
  layer, params = from_torch(module)
  cfg = dict(layer.config)
  assert cfg["kind"] == "stack" and len(cfg["layers"]) == num_layers
  for sub in cfg["layers"]:
    assert dict(sub.config)["kind"] == ("bidirectional" if bidirectional else "rnn")
  expected = {torch.float32: jnp.float32, torch.bfloat16: jnp.bfloat16,
              torch.float16: jnp.float16}[dtype]
  assert all(leaf.dtype == expected for leaf in jax.tree_util.tree_leaves(params))
  assert_same_module(module, to_torch(layer, params, batch_first=batch_first))


def test_round_trip_float64(x64):
  module = make_module("LSTM", 3, 5, dtype=torch.float64, num_layers=2, proj_size=2,
                       bidirectional=True)
  layer, params = from_torch(module)
  assert params[0].forward.W_x.dtype == jnp.float64
  assert_same_module(module, to_torch(layer, params))


def test_weight_layout():
  module = make_module("LSTM", 3, 5, num_layers=2, proj_size=2, bidirectional=True)
  layer, params = from_torch(module)
  p = params[1].backward
  np.testing.assert_array_equal(p.W_x, _np(module.weight_ih_l1_reverse).T)
  np.testing.assert_array_equal(p.W_h, _np(module.weight_hh_l1_reverse).T)
  np.testing.assert_array_equal(p.W_hr, _np(module.weight_hr_l1_reverse).T)
  np.testing.assert_array_equal(p.b_x, _np(module.bias_ih_l1_reverse))
  np.testing.assert_array_equal(p.b_h, _np(module.bias_hh_l1_reverse))
  assert p.W_x.shape == (4, 20) and p.W_h.shape == (2, 20) and p.W_hr.shape == (5, 2)
  cell = dict(dict(layer.config)["layers"][0].config)["forward"]
  assert dict(cell.config)["proj_size"] == 2


def random_params(layer, input_size, seed=0):
  """Random params of the shapes ``layer.init_params`` gives (no compilation)."""
  shapes = jax.eval_shape(lambda key: layer.init_params(key, input_size), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)), shapes)


def test_to_torch_from_jaxrnn_layer():
  # A layer built in jaxrnn (not imported) converts too, and back exactly.
  cell = jaxrnn.elman(4, activation="relu")
  layer = jaxrnn.stack(jaxrnn.bidirectional(cell, cell), jaxrnn.bidirectional(cell, cell))
  params = random_params(layer, 3)
  module = to_torch(layer, params, batch_first=True)
  assert isinstance(module, torch.nn.RNN) and module.nonlinearity == "relu"
  assert module.batch_first and module.bidirectional and module.num_layers == 2
  _, back = from_torch(module)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)
  # A bare rnn layer is a one-layer module.
  single = jaxrnn.rnn(jaxrnn.gru(4))
  module = to_torch(single, random_params(single, 2))
  assert isinstance(module, torch.nn.GRU) and module.num_layers == 1


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_carry_round_trip(bidirectional, batched):
  module = make_module("LSTM", 3, 5, num_layers=3, proj_size=2, bidirectional=bidirectional)
  layer, _ = from_torch(module)
  D = 2 if bidirectional else 1
  batch = (7,) if batched else ()
  rng = np.random.default_rng(0)
  h0 = torch.from_numpy(rng.normal(size=(3 * D,) + batch + (2,)).astype(np.float32))
  c0 = torch.from_numpy(rng.normal(size=(3 * D,) + batch + (5,)).astype(np.float32))
  carry = carry_from_torch(layer, h0, c0)
  assert isinstance(carry, tuple) and len(carry) == 3
  entry = carry[2].backward if bidirectional else carry[2]
  assert isinstance(entry, jaxrnn.LSTMState)
  assert entry.h.shape == batch + (2,) and entry.c.shape == batch + (5,)
  np.testing.assert_array_equal(entry.h, h0[3 * D - 1].numpy())  # layer 2, last direction
  h_n, c_n = carry_to_torch(layer, carry)
  np.testing.assert_array_equal(h_n, h0.numpy())
  np.testing.assert_array_equal(c_n, c0.numpy())
  # torch's hx tuple is accepted too.
  same = carry_from_torch(layer, (h0, c0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, same, carry)
  # The structure matches what layer.apply takes and returns (shapes only).
  if not batched:
    params = from_torch(module)[1]
    _, final = jax.eval_shape(
        lambda p, x, c: layer.apply(p, x, carry=c), params, jnp.ones((2, 3)), carry)
    assert jax.tree_util.tree_structure(final) == jax.tree_util.tree_structure(carry)


def test_carry_gru_unbatched_apply_matches_torch():
  module = make_module("GRU", 3, 4, num_layers=2)
  layer, params = from_torch(module, unroll=1)
  rng = np.random.default_rng(1)
  xs = rng.normal(size=(5, 3)).astype(np.float32)
  h0 = rng.normal(size=(2, 4)).astype(np.float32)
  ys, final = layer.apply(params, jnp.asarray(xs), carry=carry_from_torch(layer, h0))
  ref, h_n = module(torch.from_numpy(xs), torch.from_numpy(h0))
  np.testing.assert_allclose(ys, _np(ref), **TOL[np.float32])
  np.testing.assert_allclose(carry_to_torch(layer, final), _np(h_n), **TOL[np.float32])


# ---------------------------------------------------------------------------
# Errors.


def test_dropout_is_refused():
  with pytest.raises(ValueError, match=E(
      "module.dropout: from_torch does not support dropout=0.5 between layers (jaxrnn.stack has "
      "no dropout, and training would continue without it); rebuild the module with dropout=0.0 "
      "and apply dropout yourself between the layers of the returned stack")):
    from_torch(torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5))


def test_not_a_recurrent_module():
  with pytest.raises(TypeError, match=E(
      "module: from_torch expects a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got Linear")):
    from_torch(torch.nn.Linear(3, 4))


def test_float64_needs_x64():
  with pytest.raises(ValueError, match=E(
      "weight_ih_l0: the torch tensor is float64 but jax_enable_x64 is off, so JAX would silently"
      " truncate it to float32; enable it with jax.config.update('jax_enable_x64', True) or "
      "convert the module with module.float() first")):
    from_torch(torch.nn.GRU(3, 4).double())


def test_to_torch_refuses_what_torch_cannot_express():
  def check(layer, match, exc=ValueError):
    params = random_params(layer, 3)
    with pytest.raises(exc, match=match):
      to_torch(layer, params)

  same_cell = ("^layer\\.layers\\[1\\] cell: torch needs the same cell in every layer and "
               "direction; found \\(mode, hidden_size, proj_size\\) = \\('LSTM', 4, 0\\) and ")
  check(jaxrnn.rnn(jaxrnn.gru(4, reset_after=False)), E(
      "layer cell: torch.nn.GRU applies the reset gate after the recurrent product; "
      "gru(..., reset_after=False) has no torch equivalent"))
  check(jaxrnn.rnn(jaxrnn.elman(4, activation=jnp.sin)),
        "^layer cell: torch\\.nn\\.RNN supports the activations 'tanh' and 'relu', got "
        "<.*sin.*>$")
  check(jaxrnn.rnn(jaxrnn.lstm(4), reverse=True), E(
      "layer: a reversed jaxrnn.rnn (reverse=True) has no torch equivalent; torch layers are "
      "forward or bidirectional"))
  check(jaxrnn.bidirectional(jaxrnn.lstm(4), jaxrnn.lstm(4), merge="sum"), E(
      "layer: torch concatenates the two directions; bidirectional(merge='sum') has no torch "
      "equivalent"))
  check(jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(4)), jaxrnn.rnn(jaxrnn.gru(4))),
        same_cell + "\\('GRU', 4, 0\\)$")
  check(jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(4)), jaxrnn.rnn(jaxrnn.lstm(5))),
        same_cell + "\\('LSTM', 5, 0\\)$")
  check(jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(4)),
                     jaxrnn.bidirectional(jaxrnn.lstm(4), jaxrnn.lstm(4))), E(
      "layer: torch needs every layer to be unidirectional or every layer bidirectional; "
      "layer 0 has 1 direction(s), layer 1 has 2"))
  check(jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(4)), jaxrnn.readout(2)), E(
      "layer.layers[1]: expected jaxrnn.rnn or jaxrnn.bidirectional layers (in a "
      "jaxrnn.stack), got 'readout'"), TypeError)
  layer = jaxrnn.rnn(jaxrnn.lstm(4))
  params = random_params(layer, 3)
  with pytest.raises(ValueError, match=E(
      "params: torch has both biases or neither; got b_x set and b_h None")):
    to_torch(layer, params._replace(b_h=None))
  with pytest.raises(ValueError, match=E(  # a projection would be dropped
      "params.W_hr: expected None for an LSTM with proj_size=None, got an array")):
    to_torch(layer, params._replace(W_hr=jnp.zeros((4, 2))))



def test_carry_errors():
  layer, _ = from_torch(torch.nn.LSTM(3, 4, num_layers=2))
  with pytest.raises(ValueError, match=E("c0: an LSTM needs the cell states c0 together with h0")):
    carry_from_torch(layer, np.zeros((2, 5, 4), np.float32))
  with pytest.raises(ValueError, match=E("h0: expected shape (2, B, 4) or (2, 4), got (3, 5, 4)")):
    carry_from_torch(layer, np.zeros((3, 5, 4), np.float32), np.zeros((3, 5, 4), np.float32))
  gru_layer, _ = from_torch(torch.nn.GRU(3, 4))
  with pytest.raises(ValueError, match=E("c0: only an LSTM has cell states; this layer is GRU")):
    carry_from_torch(gru_layer, np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))
