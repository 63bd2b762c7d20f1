"""jaxrnn layers as Equinox modules (``pip install 'jaxrnn[equinox]'``).

`RNN` wraps any jaxrnn layer in an ``equinox.Module`` with the layer's
params as the array field ``params`` and the layer as a static field. As
everywhere in Equinox it runs ONE sequence; ``jax.vmap`` it for batches.
Importing this module without Equinox raises an ImportError naming the
extra.

Example:
  >>> import jax, jax.numpy as jnp, equinox as eqx, jaxrnn
  >>> import jaxrnn.equinox
  >>> model = jaxrnn.equinox.RNN(jaxrnn.rnn(jaxrnn.lstm(4)), 3, key=jax.random.key(0))
  >>> loss = lambda m, x: jnp.sum(jax.vmap(m)(x)[0] ** 2)
  >>> grads = eqx.filter_jit(eqx.filter_grad(loss))(model, jnp.ones((2, 5, 3)))
  >>> type(grads.params).__name__, grads.params.W_x.shape
  ('LSTMParams', (3, 16))
"""

from jaxrnn._src.adapters.equinox import RNN as RNN

__all__ = ("RNN",)
