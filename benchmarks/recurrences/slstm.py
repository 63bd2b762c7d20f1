"""sLSTM: ``jaxrnn.rnn(jaxrnn.slstm(H, num_heads=4))`` against xlstm's vanilla
``slstm_forward`` (PyTorch, its time loop in Python, autograd backward).

Both compute the same function on the same weights and inputs (float32):
the input projection ``xs W_x`` (one product for all steps), then the
recurrence with the block-diagonal ``R`` from a zero state; loss
``sum(ys ** 2)``, and for ``"fwd+bwd"`` its gradient with respect to
``W_x``, ``R`` and ``b``. The input size is H.
"""

import numpy as np

import benchmarks
from benchmarks import peers

NUM_HEADS = 4


def _weights(batch, steps, hidden, seed=0):
  """``(xs (B, T, D), SLSTMParams as NumPy)``, D = H: xlstm's initialisation
  but a random ``R`` (its ``"standard"`` recurrent init), so that the
  recurrence is not trivial."""
  import jax
  import jaxrnn
  params = jaxrnn.slstm(hidden, num_heads=NUM_HEADS).init_params(jax.random.key(seed), hidden)
  rng = np.random.default_rng(seed)
  bound = 1 / np.sqrt(hidden)
  R = rng.uniform(-bound, bound, params.R.shape).astype(np.float32)
  params = jaxrnn.SLSTMParams(np.asarray(params.W_x), R, np.asarray(params.b))
  xs = rng.standard_normal((batch, steps, hidden)).astype(np.float32)
  return xs, params


def _jaxrnn(task, xs, params):
  import jax
  import jaxrnn
  layer = jaxrnn.rnn(jaxrnn.slstm(xs.shape[-1], num_heads=NUM_HEADS))
  batched = jax.vmap(layer.apply, in_axes=(None, 0))
  return peers._jax_impl("jaxrnn", "jaxrnn.slstm", lambda p, x: batched(p, x)[0],
                         jax.device_put(params), jax.device_put(xs), task)


def _xlstm(task, xs, params):
  torch = peers._import("torch")
  vanilla = peers._import("xlstm.blocks.slstm.src.vanilla")
  torch.set_num_threads(benchmarks.available_cores())
  B, T, H = xs.shape
  xs_t = torch.from_numpy(np.ascontiguousarray(np.swapaxes(xs, 0, 1)))  # (T, B, D)
  W_x = torch.from_numpy(np.array(params.W_x)).requires_grad_(task != "fwd")
  # xlstm's R is (K, 4 H/K, H/K), each head's block transposed.
  R = torch.from_numpy(np.ascontiguousarray(np.swapaxes(params.R, 1, 2)))
  R.requires_grad_(task != "fwd")
  b = torch.from_numpy(np.array(params.b)).requires_grad_(task != "fwd")
  pointwise = vanilla.slstm_pointwise_function_registry["slstm"]
  weights = (W_x, R, b)

  def loss():
    states = torch.zeros((4, B, H))
    all_states, _, _ = vanilla.slstm_forward(xs_t @ W_x, states, R, b, pointwise)
    ys = all_states[0, 1:]
    return (ys * ys).sum()

  if task == "fwd":
    def call():
      with torch.no_grad():
        return loss().item()
  else:
    def call():
      for w in weights:
        w.grad = None
      value = loss()
      value.backward()
      return value.item()

  return peers.Impl("xlstm", "xlstm slstm_forward (vanilla)", "torch", call, (B, T, H))


def impls(task: str, batch: int, steps: int, hidden: int) -> list:
  """jaxrnn first, then xlstm's vanilla PyTorch loop, on the same weights."""
  xs, params = _weights(batch, steps, hidden)
  return [_jaxrnn(task, xs, params), _xlstm(task, xs, params)]
