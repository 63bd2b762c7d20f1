"""Mamba: ``jaxrnn.rnn(mamba(H))`` against mambapy's ``MambaBlock``.

Both hold the same weights (`jaxrnn.interop.from_mamba` of the block's
``state_dict()``; d_model = H, the block's defaults: d_state 16, d_conv 4,
expand 2). mambapy runs its PyTorch parallel scan (``MambaConfig(pscan=True)``,
its default); jaxrnn runs ``method="auto"`` unless ``method`` says otherwise
(``"sequential"``: the multiply-add scan, ``"parallel"``: the associative
scan).
"""

import numpy as np

from benchmarks.peers import Impl, _jax_impl


def _torch_impl(name, cls, module, xs, task):
  """``module(xs)`` as `benchmarks.peers`' PyTorch peers time it."""
  import torch

  if task == "fwd":
    def call():
      with torch.no_grad():
        ys = module(xs)
        return (ys * ys).sum().item()
  else:
    def call():
      module.zero_grad(set_to_none=True)
      ys = module(xs)
      loss = (ys * ys).sum()
      loss.backward()
      return loss.item()

  return Impl(name, cls, "torch", call, tuple(xs.shape))


def impls(task, batch, steps, hidden, *, method="auto"):
  import jax
  import jax.numpy as jnp
  import torch
  from mambapy.mamba import MambaBlock, MambaConfig

  import jaxrnn
  from jaxrnn.interop import from_mamba

  xs = np.random.default_rng(0).standard_normal((batch, steps, hidden), dtype=np.float32)
  torch.manual_seed(0)
  block = MambaBlock(MambaConfig(d_model=hidden, n_layers=1, pscan=True)).float()
  layer = jaxrnn.rnn(jaxrnn.mamba(hidden), method=method)

  def ours(params, x):
    return jax.vmap(lambda x_b: layer.apply(params, x_b)[0])(x)

  return [_jax_impl("jaxrnn", "jaxrnn.mamba", ours, from_mamba(block.state_dict()),
                    jnp.asarray(xs), task),
          _torch_impl("mambapy", "mambapy.mamba.MambaBlock", block, torch.from_numpy(xs), task)]
