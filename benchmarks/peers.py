"""The implementations under comparison, each built for one grid point.

Every builder returns an `Impl` whose ``call()`` runs ONE step of the task on
prepared inputs and returns only once the result is computed:

* ``"fwd"``: the forward pass and the loss ``sum(ys ** 2)`` over every output
  of every step and example (PyTorch under ``torch.no_grad()``).
* ``"fwd+bwd"``: the same loss and its gradient with respect to the
  parameters (``jax.value_and_grad``; for PyTorch ``loss.backward()`` with
  the gradients zeroed first).

JAX peers are ``jax.jit``-compiled and ``jax.block_until_ready`` is called
on their results; PyTorch's loss is read back with ``.item()`` (on a GPU
after ``torch.cuda.synchronize()``). On a GPU (``device="gpu"``) PyTorch
runs its cuDNN kernels and the ``jax-cudnn`` peer, ``jax.experimental.rnn``'s
cuDNN LSTM, joins the JAX peers. Inputs are float32 and are built once per
grid point from the same NumPy array, in the layout each library expects
(batch-major for jaxrnn, Flax and Equinox; time-major for Haiku and PyTorch,
their native layouts), so no transposition is timed.

Peers run with their library's defaults (notably ``unroll=1`` for the scans
of Flax, Equinox and Haiku); ``peer_unroll`` overrides that for the JAX peers
so the loop structure can be matched to jaxrnn's.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

CELLS = ("lstm", "gru", "elman")
TASKS = ("fwd", "fwd+bwd")
# Every peer name, in display order; not every library has every cell.
PEERS = ("jaxrnn", "flax", "flax-opt", "equinox", "haiku", "jax-cudnn", "torch")
# Peers that exist only on a GPU (left out of the default list on the CPU).
GPU_ONLY_PEERS = ("jax-cudnn",)

# The concrete class each peer uses for each cell (None: the library has no
# such cell, the peer is skipped for it).
PEER_CLASSES = {
    "jaxrnn": {"lstm": "jaxrnn.lstm", "gru": "jaxrnn.gru", "elman": "jaxrnn.elman"},
    "flax": {"lstm": "nn.LSTMCell", "gru": "nn.GRUCell", "elman": "nn.SimpleCell"},
    "flax-opt": {"lstm": "nn.OptimizedLSTMCell", "gru": None, "elman": None},
    "equinox": {"lstm": "eqx.nn.LSTMCell", "gru": "eqx.nn.GRUCell", "elman": None},
    "haiku": {"lstm": "hk.LSTM", "gru": "hk.GRU", "elman": "hk.VanillaRNN"},
    "jax-cudnn": {"lstm": "jax.experimental.rnn.lstm", "gru": None, "elman": None},
    "torch": {"lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU", "elman": "torch.nn.RNN(tanh)"},
}

SKIP_REASONS = {
    ("flax-opt", "gru"): "Flax has an optimised cell only for the LSTM",
    ("flax-opt", "elman"): "Flax has an optimised cell only for the LSTM",
    ("equinox", "elman"): "Equinox has no simple (Elman) RNN cell",
    ("jax-cudnn", "gru"): "jax.experimental.rnn has only an LSTM",
    ("jax-cudnn", "elman"): "jax.experimental.rnn has only an LSTM",
}


class Unavailable(Exception):
  """A peer that cannot run here (library not installed, GPU-only kernel)."""


def _import(module):
  import importlib
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise Unavailable(f"{module} is not installed ({e})") from None


# Differences from the reference computation that cannot be configured away.
NOTES = {
    ("haiku", "elman"): "hk.VanillaRNN uses ReLU (no tanh option); others use tanh",
}


@dataclasses.dataclass
class Impl:
  name: str  # a key of PEERS
  cls: str  # the class used, e.g. "nn.OptimizedLSTMCell"
  family: str  # "jax" or "torch"
  call: Callable[[], Any]  # one timed step, synchronous
  out_shape: tuple  # (B, T, O) in batch-major order, for the sanity check
  note: Optional[str] = None
  first_call: Optional[tuple] = None  # (seconds, result) of a call already made


# ---------------------------------------------------------------------------
# JAX peers: each supplies ``apply(params, xs) -> ys`` with ys batch-major.


def _jax_impl(name, cls, apply, params, xs, task, batch_major_out=True):
  import jax
  import jax.numpy as jnp

  def loss(p, x):
    ys = apply(p, x)
    return jnp.sum(jnp.square(ys))

  fn = jax.jit(loss if task == "fwd" else jax.value_and_grad(loss))
  shape = jax.eval_shape(apply, params, xs).shape
  if not batch_major_out:  # (T, B, O) -> (B, T, O)
    shape = (shape[1], shape[0]) + tuple(shape[2:])

  def call():
    return jax.block_until_ready(fn(params, xs))

  return Impl(name, cls, "jax", call, tuple(shape))


def _key(seed):
  import jax
  return jax.random.key(seed)


def build_jaxrnn(cell, xs_btd, H, task, *, seed=0, **rnn_options):
  import jax
  import jaxrnn
  make = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}[cell]
  layer = jaxrnn.rnn(make(H), **rnn_options)
  params = layer.init_params(_key(seed), xs_btd.shape[-1])
  batched = jax.vmap(layer.apply, in_axes=(None, 0))

  def apply(p, x):
    return batched(p, x)[0]

  return _jax_impl("jaxrnn", PEER_CLASSES["jaxrnn"][cell], apply, params,
                   jax.device_put(xs_btd), task)


def build_flax(cell, xs_btd, H, task, *, optimized=False, seed=0, unroll=None):
  import jax
  nn = _import("flax.linen")
  if optimized:
    assert cell == "lstm"
    make = nn.OptimizedLSTMCell
  else:
    make = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "elman": nn.SimpleCell}[cell]
  kwargs = {} if unroll is None else {"unroll": unroll}
  model = nn.RNN(make(features=H), **kwargs)
  xs = jax.device_put(xs_btd)
  params = model.init(_key(seed), xs)["params"]

  def apply(p, x):
    return model.apply({"params": p}, x)

  name = "flax-opt" if optimized else "flax"
  return _jax_impl(name, PEER_CLASSES[name][cell], apply, params, xs, task)


def build_equinox(cell, xs_btd, H, task, *, seed=0, unroll=None):
  import jax
  import jax.numpy as jnp
  eqx = _import("equinox")
  D = xs_btd.shape[-1]
  make = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell]
  module = make(D, H, key=_key(seed))
  params, static = eqx.partition(module, eqx.is_array)
  scan_kwargs = {} if unroll is None else {"unroll": unroll}

  def apply(p, x_btd):
    core = eqx.combine(p, static)

    def one(x_td):
      if cell == "lstm":
        init = (jnp.zeros(H, x_td.dtype), jnp.zeros(H, x_td.dtype))

        def step(state, x_t):
          state = core(x_t, state)
          return state, state[0]
      else:
        init = jnp.zeros(H, x_td.dtype)

        def step(state, x_t):
          state = core(x_t, state)
          return state, state

      _, ys = jax.lax.scan(step, init, x_td, **scan_kwargs)
      return ys

    return jax.vmap(one)(x_btd)

  return _jax_impl("equinox", PEER_CLASSES["equinox"][cell], apply, params,
                   jax.device_put(xs_btd), task)


def build_haiku(cell, xs_tbd, H, task, *, seed=0, unroll=None):
  import jax
  hk = _import("haiku")
  make = {"lstm": hk.LSTM, "gru": hk.GRU, "elman": hk.VanillaRNN}[cell]
  B = xs_tbd.shape[1]
  unroll_kwargs = {} if unroll is None else {"unroll": unroll}

  def fn(x_tbd):
    core = make(H)
    ys, _ = hk.dynamic_unroll(core, x_tbd, core.initial_state(B), time_major=True,
                              **unroll_kwargs)
    return ys

  model = hk.without_apply_rng(hk.transform(fn))
  xs = jax.device_put(xs_tbd)
  params = model.init(_key(seed), xs)
  impl = _jax_impl("haiku", PEER_CLASSES["haiku"][cell], model.apply, params, xs,
                   task, batch_major_out=False)
  impl.note = NOTES.get(("haiku", cell))
  return impl


def build_jax_cudnn(cell, xs_btd, H, task, *, seed=0):
  """``jax.experimental.rnn.lstm``: cuDNN's LSTM kernel (NVIDIA GPUs only)."""
  import jax
  import jax.numpy as jnp
  assert cell == "lstm"
  if jax.default_backend() != "gpu":
    raise Unavailable("jax.experimental.rnn runs cuDNN kernels: GPU only")
  from jax.experimental import rnn as jrnn
  B, T, D = xs_btd.shape
  weights = jrnn.init_lstm_weight(_key(seed), D, H, 1, False)
  zeros = jnp.zeros((1, B, H), jnp.float32)
  lengths = jnp.full((B,), T, jnp.int32)

  def apply(w, x):
    # Positional: input_size, hidden_size, num_layers, dropout, bidirectional.
    ys, _, _ = jrnn.lstm(x, zeros, zeros, w, lengths, D, H, 1, 0.0, False)
    return ys

  return _jax_impl("jax-cudnn", PEER_CLASSES["jax-cudnn"][cell], apply, weights,
                   jax.device_put(xs_btd), task)


# ---------------------------------------------------------------------------
# PyTorch.


def torch_module(cell, D, H):
  import torch
  if cell == "lstm":
    return torch.nn.LSTM(D, H)
  if cell == "gru":
    return torch.nn.GRU(D, H)
  return torch.nn.RNN(D, H, nonlinearity="tanh")


def build_torch(cell, xs_tbd, H, task, *, seed=0, device="cpu"):
  torch = _import("torch")
  torch.manual_seed(seed)
  T, B, D = xs_tbd.shape
  target = "cuda" if device == "gpu" else "cpu"
  if target == "cuda" and not torch.cuda.is_available():
    raise Unavailable("this PyTorch build has no CUDA device")
  module = torch_module(cell, D, H).float().to(target)
  xs = torch.from_numpy(np.ascontiguousarray(xs_tbd)).to(target)
  sync = torch.cuda.synchronize if target == "cuda" else (lambda: None)

  if task == "fwd":
    def call():
      with torch.no_grad():
        ys, _ = module(xs)
        loss = (ys * ys).sum()
      sync()
      return loss.item()
  else:
    def call():
      module.zero_grad(set_to_none=True)
      ys, _ = module(xs)
      loss = (ys * ys).sum()
      loss.backward()
      sync()
      return loss.item()

  return Impl("torch", PEER_CLASSES["torch"][cell], "torch", call, (B, T, H))


# ---------------------------------------------------------------------------


def build(peer, cell, xs_btd, H, task, *, peer_unroll=None, jaxrnn_options=None,
          device="cpu"):
  """Builds ``peer`` for ``cell``.

  Raises `Unavailable` (with the reason) when the library lacks the cell, is
  not installed, or needs another device.
  """
  if PEER_CLASSES[peer][cell] is None:
    raise Unavailable(SKIP_REASONS.get((peer, cell), f"{peer} has no {cell} cell"))
  if peer == "jaxrnn":
    return build_jaxrnn(cell, xs_btd, H, task, **(jaxrnn_options or {}))
  if peer == "flax":
    return build_flax(cell, xs_btd, H, task, unroll=peer_unroll)
  if peer == "flax-opt":
    return build_flax(cell, xs_btd, H, task, optimized=True, unroll=peer_unroll)
  if peer == "equinox":
    return build_equinox(cell, xs_btd, H, task, unroll=peer_unroll)
  if peer == "jax-cudnn":
    return build_jax_cudnn(cell, xs_btd, H, task)
  xs_tbd = np.ascontiguousarray(np.swapaxes(xs_btd, 0, 1))
  if peer == "haiku":
    return build_haiku(cell, xs_tbd, H, task, unroll=peer_unroll)
  if peer == "torch":
    return build_torch(cell, xs_tbd, H, task, device=device)
  raise ValueError(f"unknown peer {peer!r}")


# ---------------------------------------------------------------------------
# Numerical cross-check: jaxrnn and PyTorch with identical weights.


def torch_agreement(cell, *, B=4, T=20, D=8, H=16, seed=0):
  """Loads one PyTorch module's weights into jaxrnn and compares both ways.

  jaxrnn's layout is PyTorch's transposed (gates i, f, g, o for the LSTM and
  r, z, n for the GRU, two biases), so the copy is exact. Returns the largest
  absolute differences of the outputs, the loss and the weight gradients.
  """
  import jax
  import jax.numpy as jnp
  import torch
  import jaxrnn

  torch.manual_seed(seed)
  module = torch_module(cell, D, H).double()
  rng = np.random.default_rng(seed)
  xs_btd = rng.standard_normal((B, T, D))
  xs_t = torch.from_numpy(np.swapaxes(xs_btd, 0, 1).copy())
  ys_t, _ = module(xs_t)
  loss_t = (ys_t * ys_t).sum()
  loss_t.backward()

  def get(name):
    return getattr(module, name).detach().numpy()

  make = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}[cell]
  params_type = {"lstm": jaxrnn.LSTMParams, "gru": jaxrnn.GRUParams,
                 "elman": jaxrnn.ElmanParams}[cell]
  layer = jaxrnn.rnn(make(H))
  # float32 on the JAX side (x64 stays off); compare at float32 tolerance.
  params = params_type(
      W_x=jnp.asarray(get("weight_ih_l0").T, jnp.float32),
      W_h=jnp.asarray(get("weight_hh_l0").T, jnp.float32),
      b_x=jnp.asarray(get("bias_ih_l0"), jnp.float32),
      b_h=jnp.asarray(get("bias_hh_l0"), jnp.float32))
  xs = jnp.asarray(xs_btd, jnp.float32)

  def loss(p):
    ys = jax.vmap(layer.apply, in_axes=(None, 0))(p, xs)[0]
    return jnp.sum(ys ** 2), ys

  # Full float32 products: on GPUs JAX's default precision multiplies in
  # TF32, which this float32-tolerance check is not about.
  with jax.default_matmul_precision("highest"):
    (loss_j, ys_j), grads = jax.value_and_grad(loss, has_aux=True)(params)
  ys_ref = np.swapaxes(ys_t.detach().numpy(), 0, 1)
  grad_diff = max(
      float(np.max(np.abs(np.asarray(grads.W_x) - module.weight_ih_l0.grad.numpy().T))),
      float(np.max(np.abs(np.asarray(grads.W_h) - module.weight_hh_l0.grad.numpy().T))))
  scale = max(1.0, float(np.max(np.abs(module.weight_hh_l0.grad.numpy()))))
  return {
      "cell": cell,
      "max_abs_diff_ys": float(np.max(np.abs(np.asarray(ys_j) - ys_ref))),
      "rel_diff_loss": abs(float(loss_j) - loss_t.item()) / max(1.0, abs(loss_t.item())),
      "max_rel_diff_grad": grad_diff / scale,
  }
