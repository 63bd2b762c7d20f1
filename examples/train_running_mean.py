"""Trains a bidirectional LSTM with a readout on padded, variable-length data.

The task: at every step t of a sequence of scalars, predict the mean of the
WHOLE valid sequence (so the model needs both directions). Sequences in a
minibatch have different lengths; padding holds junk that must not matter.

Run: python examples/train_running_mean.py [num_steps]
"""

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxrnn

BATCH, MAX_LEN, HIDDEN = 32, 24, 32


def make_batch(key):
  k_x, k_len, k_junk = jax.random.split(key, 3)
  xs = jax.random.normal(k_x, (BATCH, MAX_LEN, 1))
  lengths = jax.random.randint(k_len, (BATCH,), 1, MAX_LEN + 1)
  valid = jnp.arange(MAX_LEN)[None, :] < lengths[:, None]
  junk = 100.0 * jax.random.normal(k_junk, xs.shape)
  xs = jnp.where(valid[..., None], xs, junk)  # padding holds junk
  means = jnp.sum(jnp.where(valid[..., None], xs, 0.0), axis=1) / lengths[:, None]
  targets = jnp.broadcast_to(means[:, None, :], xs.shape)
  return xs, lengths, targets


net = jaxrnn.stack(
    jaxrnn.bidirectional(jaxrnn.lstm(HIDDEN), jaxrnn.lstm(HIDDEN)),
    jaxrnn.readout(1),
)
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(2e-3))


def loss_fn(params, xs, lengths, targets):
  ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs, length=lengths)
  per_step = jnp.sum((ys - targets) ** 2, axis=-1)  # (B, T)
  return jnp.mean(jaxrnn.sequence_loss(per_step, lengths, reduction="mean"))


@jax.jit
def train_step(params, opt_state, xs, lengths, targets):
  loss, grads = jax.value_and_grad(loss_fn)(params, xs, lengths, targets)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def main(num_steps: int = 400) -> tuple[float, float]:
  """Trains; returns the held-out loss before and after training."""
  key, k_eval = jax.random.split(jax.random.key(0))
  eval_batch = make_batch(k_eval)
  eval_loss = jax.jit(loss_fn)
  params = net.init_params(key, 1)
  opt_state = optimizer.init(params)
  first = float(eval_loss(params, *eval_batch))
  print(f"step    0  held-out loss {first:.5f}")
  for step in range(1, num_steps + 1):
    key, k_batch = jax.random.split(key)
    params, opt_state, _ = train_step(params, opt_state, *make_batch(k_batch))
    if step % 100 == 0 or step == num_steps:
      last = float(eval_loss(params, *eval_batch))
      print(f"step {step:4d}  held-out loss {last:.5f}")
  return first, last


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("num_steps", type=int, nargs="?", default=400, help="training steps")
  return parser.parse_args(argv)


if __name__ == "__main__":
  main(parse_args().num_steps)
