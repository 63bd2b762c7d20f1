"""Exact weight interop with PyTorch, Keras 3 and Flax.

Models trained elsewhere load into jaxrnn layers with exactly the same
numbers (up to floating-point rounding), and PyTorch modules go back:

* `from_torch` / `to_torch`: ``torch.nn.RNN`` (tanh, relu), ``torch.nn.LSTM``
  (incl. ``proj_size``) and ``torch.nn.GRU``, any ``num_layers``,
  ``bidirectional``, ``bias``, ``batch_first``. Round trips are bit for bit.
  `carry_from_torch` / `carry_to_torch` convert ``(h_0, c_0)`` and
  ``(h_n, c_n)``.
* `from_keras`: Keras 3 ``SimpleRNN``, ``LSTM``, ``GRU`` (both
  ``reset_after``), ``keras.layers.RNN`` of their cells and ``Bidirectional``,
  from a built layer or from raw ``(class_name, config, weights)`` without
  Keras installed. `carry_from_keras` / `carry_to_keras` convert states.
* `from_flax`: Flax linen ``SimpleCell``, ``LSTMCell``,
  ``OptimizedLSTMCell``, ``GRUCell``, and ``nn.RNN`` / ``nn.Bidirectional``
  of them. `carry_from_flax` / `carry_to_flax` convert Flax's ``(c, h)``.
* `from_recurrentgemma`: the params of recurrentgemma's ``RGLRU`` as
  `jaxrnn.RGLRUParams`; `from_mamba`: a state dict of mambapy's
  ``MambaBlock`` (or ``mamba_ssm``'s ``Mamba``) as `jaxrnn.MambaParams`.

PyTorch, Keras and Flax are imported lazily: this module imports without
them. A configuration that cannot be carried over exactly (dropout,
another activation, stateful layers, mixed precision...) raises a
``ValueError`` or ``TypeError`` naming the option; nothing is dropped
silently.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np, torch
  >>> from jaxrnn.interop import from_torch
  >>> module = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
  >>> layer, params = from_torch(module)
  >>> xs = jnp.ones((2, 6, 3))                      # (B, T, D)
  >>> lengths = jnp.array([6, 2])
  >>> run = lambda x, n: layer.apply(params, x, length=n)
  >>> ys, carry = jax.vmap(run)(xs, lengths)        # zeros after each length
  >>> ys.shape, bool(jnp.all(ys[1, 2:] == 0))
  ((2, 6, 8), True)
"""

from jaxrnn._src.interop.flax import carry_from_flax as carry_from_flax
from jaxrnn._src.interop.flax import carry_to_flax as carry_to_flax
from jaxrnn._src.interop.flax import from_flax as from_flax
from jaxrnn._src.interop.keras import carry_from_keras as carry_from_keras
from jaxrnn._src.interop.keras import carry_to_keras as carry_to_keras
from jaxrnn._src.interop.keras import from_keras as from_keras
from jaxrnn._src.interop.recurrences import from_mamba as from_mamba
from jaxrnn._src.interop.recurrences import from_recurrentgemma as from_recurrentgemma
from jaxrnn._src.interop.torch import carry_from_torch as carry_from_torch
from jaxrnn._src.interop.torch import carry_to_torch as carry_to_torch
from jaxrnn._src.interop.torch import from_torch as from_torch
from jaxrnn._src.interop.torch import to_torch as to_torch

__all__ = (
    "carry_from_flax",
    "carry_from_keras",
    "carry_from_torch",
    "carry_to_flax",
    "carry_to_keras",
    "carry_to_torch",
    "from_flax",
    "from_keras",
    "from_mamba",
    "from_recurrentgemma",
    "from_torch",
    "to_torch",
)
