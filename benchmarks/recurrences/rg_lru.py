"""RG-LRU: ``jaxrnn.rnn(rg_lru(H, num_heads=4))`` against recurrentgemma's ``RGLRU``.

Both start each sequence at ``segment_pos == 0`` (jaxrnn: ``reset[0] =
True``) and share the weights (`jaxrnn.interop.from_recurrentgemma`).
recurrentgemma runs its own scan on the CPU (``ScanType.AUTO``: its linear
``lax.scan``, unrolled 128 steps per iteration); jaxrnn runs
``method="auto"``.
"""

import numpy as np

from benchmarks.peers import _jax_impl

NUM_HEADS = 4


def impls(task, batch, steps, hidden):
  import jax
  import jax.numpy as jnp
  from recurrentgemma.jax import layers

  import jaxrnn
  from jaxrnn.interop import from_recurrentgemma

  xs = jnp.asarray(np.random.default_rng(0).standard_normal((batch, steps, hidden),
                                                            dtype=np.float32))
  module = layers.RGLRU(width=hidden, num_heads=NUM_HEADS)
  pos = jnp.broadcast_to(jnp.arange(steps, dtype=jnp.int32), (batch, steps))
  with jax.numpy_rank_promotion("allow"):
    rg_params = module.init(jax.random.key(0), xs[:1, :8], pos[:1, :8])["params"]

  layer = jaxrnn.rnn(jaxrnn.rg_lru(hidden, num_heads=NUM_HEADS))
  reset = jnp.arange(steps) == 0

  def ours(params, x):
    return jax.vmap(lambda x_b: layer.apply(params, x_b, reset=reset)[0])(x)

  def theirs(params, x):
    with jax.numpy_rank_promotion("allow"):
      return module.apply({"params": params}, x, pos, return_cache=False)[0]

  return [_jax_impl("jaxrnn", "jaxrnn.rg_lru", ours, from_recurrentgemma(rg_params), xs, task),
          _jax_impl("recurrentgemma", "recurrentgemma.jax.layers.RGLRU", theirs, rg_params, xs,
                    task)]
