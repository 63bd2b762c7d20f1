"""mLSTM: ``jaxrnn.rnn(jaxrnn.mlstm(H, num_heads=4), method="parallel")``
against mlstm_kernels' JAX native chunkwise form,
``mlstm_chunkwise__native_autograd`` (chunks of 64 steps, autodiff).

``"parallel"`` (the chunkwise form, chunks of 64 steps at H/K = 64) is what
``method="auto"`` takes on the CPU at every T (``parallel_min_steps``'
``"mlstm"`` entry; benchmarks/README.md), so every grid point measures the
auto choice.

Both compute the same function on the same weights and inputs (float32):
the projections ``xs W_q``, ``xs W_k``, ``xs W_v``, the gates ``xs W_i +
b_i``, ``xs W_f + b_f`` and ``σ(xs W_o + b_o)``, each one product for
every step, around the matrix memory, from a zero state; loss ``sum(ys **
2)``, and for ``"fwd+bwd"`` its gradient with respect to every weight.
The input size is H. mlstm_kernels' ``jax`` package imports jax_triton in
its ``__init__``, so its ``chunkwise/native`` modules are loaded from
their files.
"""

import functools
import importlib
import importlib.util
import pathlib
import sys
import types

import numpy as np

from benchmarks.peers import _jax_impl

NUM_HEADS = 4


@functools.lru_cache(maxsize=None)
def native_chunkwise():
  """mlstm_kernels' ``mlstm_chunkwise__native_autograd``, its package
  ``chunkwise/native`` loaded under a private name (without the
  ``mlstm_kernels.jax`` package's ``__init__``)."""
  root = importlib.util.find_spec("mlstm_kernels").submodule_search_locations[0]
  package = types.ModuleType("_mlstm_kernels_chunkwise_native")
  package.__path__ = [str(pathlib.Path(root) / "jax" / "chunkwise" / "native")]
  sys.modules[package.__name__] = package
  return importlib.import_module(f"{package.__name__}.fwbw").mlstm_chunkwise__native_autograd


def _weights(batch, steps, hidden, seed=0):
  """``(xs (B, T, H), MLSTMParams)``: jaxrnn's initialisation but random
  input and forget gate weights, so that the gates vary from step to step."""
  import jax
  import jax.numpy as jnp
  import jaxrnn
  params = jaxrnn.mlstm(hidden, num_heads=NUM_HEADS).init_params(jax.random.key(seed), hidden)
  rng = np.random.default_rng(seed)
  gate = lambda: jnp.asarray(rng.normal(0, 1 / np.sqrt(hidden), (hidden, NUM_HEADS)),
                             jnp.float32)
  params = params._replace(W_i=gate(), W_f=gate())
  xs = jnp.asarray(rng.standard_normal((batch, steps, hidden), dtype=np.float32))
  return xs, params


def impls(task: str, batch: int, steps: int, hidden: int) -> list:
  """jaxrnn first, then mlstm_kernels' native chunkwise form, on the same
  weights."""
  import jax
  import jax.numpy as jnp
  import jaxrnn

  xs, params = _weights(batch, steps, hidden)
  layer = jaxrnn.rnn(jaxrnn.mlstm(hidden, num_heads=NUM_HEADS), method="parallel")
  chunkwise = native_chunkwise()

  def ours(p, x):
    return jax.vmap(lambda x_b: layer.apply(p, x_b)[0])(x)

  def theirs(p, x):
    B, T, _ = x.shape
    heads = lambda a: jnp.swapaxes(jnp.reshape(a, (B, T, NUM_HEADS, -1)), 1, 2)  # (B, K, T, d)
    gate = lambda w, b: jnp.swapaxes(x @ w + b, 1, 2)  # (B, K, T)
    h = chunkwise(heads(x @ p.W_q), heads(x @ p.W_k), heads(x @ p.W_v), gate(p.W_i, p.b_i),
                  gate(p.W_f, p.b_f), chunk_size=64)
    h = jnp.reshape(jnp.swapaxes(h, 1, 2), (B, T, -1))
    return jax.nn.sigmoid(x @ p.W_o + p.b_o) * h

  return [_jax_impl("jaxrnn", "jaxrnn.mlstm", ours, params, xs, task),
          _jax_impl("mlstm_kernels", "mlstm_chunkwise__native_autograd", theirs, params, xs,
                    task)]
