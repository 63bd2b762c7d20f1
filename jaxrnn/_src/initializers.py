"""Default initialisers and their per-gate application.

Initialisers follow ``jax.nn.initializers``: ``init(key, shape, dtype)``.
"""

from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

# Input matrices: variance 1/input_size (LeCun normal), as Flax's cells.
default_input_init: Initializer = jax.nn.initializers.lecun_normal()
# Recurrent matrices: orthogonal per gate block, as Keras and Flax.
default_recurrent_init: Initializer = jax.nn.initializers.orthogonal()
default_bias_init: Initializer = jax.nn.initializers.zeros


def draw(init: Initializer, key, shape, dtype):
  """``init(key, shape, dtype)``, drawn in float32 for 16-bit dtypes.

  Initialisers such as ``orthogonal`` need a QR decomposition, which has no
  bfloat16 or float16 kernel; the values are drawn in float32 and rounded.
  """
  if jnp.finfo(dtype).bits < 32:
    return init(key, shape, jnp.float32).astype(dtype)
  return init(key, shape, dtype)


def per_gate(init: Initializer, key, rows: int, hidden_size: int, num_gates: int, dtype):
  """Initialises a fused ``(rows, num_gates * hidden_size)`` matrix gate by gate.

  Each ``(rows, hidden_size)`` block is drawn separately, so an orthogonal
  initialiser gives an orthogonal matrix per gate rather than one wide
  semi-orthogonal matrix.
  """
  keys = jax.random.split(key, num_gates)
  blocks = [draw(init, k, (rows, hidden_size), dtype) for k in keys]
  return jnp.concatenate(blocks, axis=1)
