"""jaxrnn layers as Flax linen modules (``pip install 'jaxrnn[flax]'``).

`RNN` wraps any jaxrnn layer (`jaxrnn.rnn`, `jaxrnn.bidirectional`,
`jaxrnn.stack`, ...) in a ``flax.linen.Module`` called like
``flax.linen.RNN``: batch-first ``(B, T, D)`` inputs, ``seq_lengths``,
``initial_carry``, ``return_carry`` (``(carry, ys)``). Its params are the
layer's own pytree under ``variables["params"]["layer"]``. Importing this
module without Flax raises an ImportError naming the extra.

Example:
  >>> import jax, jax.numpy as jnp, jaxrnn
  >>> import jaxrnn.flax
  >>> model = jaxrnn.flax.RNN(jaxrnn.rnn(jaxrnn.lstm(4)), return_carry=True)
  >>> xs = jnp.ones((2, 5, 3))
  >>> variables = model.init(jax.random.key(0), xs)
  >>> carry, ys = model.apply(variables, xs, seq_lengths=jnp.array([5, 2]))
  >>> ys.shape, carry.h.shape
  ((2, 5, 4), (2, 4))
"""

from jaxrnn._src.adapters.linen import RNN as RNN

__all__ = ("RNN",)
