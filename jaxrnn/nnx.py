"""jaxrnn layers as Flax NNX modules (``pip install 'jaxrnn[flax]'``).

`RNN` wraps any jaxrnn layer in a ``flax.nnx.Module`` whose params are
``nnx.Param`` leaves in the layer's own structure (``nnx.Optimizer(model,
tx, wrt=nnx.Param)`` trains them); it is called like ``flax.linen.RNN``.
Importing this module without Flax raises an ImportError naming the extra.

Example:
  >>> import jax.numpy as jnp, jaxrnn
  >>> from flax import nnx
  >>> import jaxrnn.nnx
  >>> model = jaxrnn.nnx.RNN(jaxrnn.rnn(jaxrnn.gru(4)), 3, rngs=nnx.Rngs(0))
  >>> nnx.jit(lambda m, x: m(x))(model, jnp.ones((2, 5, 3))).shape
  (2, 5, 4)
"""

from jaxrnn._src.adapters.nnx import RNN as RNN

__all__ = ("RNN",)
