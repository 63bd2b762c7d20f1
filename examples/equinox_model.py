"""Classifies handwritten digits read row by row, with an Equinox model.

scikit-learn's digits (8x8 images, 10 classes): each image row is one time
step, T = 8 steps of 8 pixels. The model is an ``equinox.Module`` on ONE
image, as Equinox layers are: `jaxrnn.equinox.RNN` over an LSTM with zoneout,
then ``eqx.nn.Linear`` on the last step; ``jax.vmap`` makes the minibatch.
It trains with optax under ``eqx.filter_jit`` / ``eqx.filter_value_and_grad``.
Zoneout is on when the model gets a ``key`` (one per image) and off in
``eqx.nn.inference_mode``.

Run: ``python examples/equinox_model.py [--steps N] [--hidden H] [--seed S]``
(needs ``pip install 'jaxrnn[equinox]' optax scikit-learn``).
"""

import argparse
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxrnn
import jaxrnn.equinox


class Classifier(eqx.Module):
  """One image ``(8, 8)`` (rows as steps) -> class scores ``(10,)``."""

  rnn: jaxrnn.equinox.RNN
  head: eqx.nn.Linear

  def __init__(self, hidden: int, *, key):
    k_rnn, k_head = jax.random.split(key)
    layer = jaxrnn.rnn(jaxrnn.lstm(hidden), zoneout=0.1)
    self.rnn = jaxrnn.equinox.RNN(layer, 8, key=k_rnn)
    self.head = eqx.nn.Linear(hidden, 10, key=k_head)

  def __call__(self, xs, *, key=None):
    ys, _ = self.rnn(xs, key=key)
    return self.head(ys[-1])


def cross_entropy(model, xs, labels, key=None):
  keys = None if key is None else jax.random.split(key, xs.shape[0])
  logits = jax.vmap(lambda x, k: model(x, key=k))(xs, keys)
  return jnp.mean(jaxrnn.classification_loss(logits, labels))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  parser.add_argument("--hidden", type=int, default=32, help="hidden size")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the weights and the batches")
  args = parser.parse_args(argv)

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  order = np.random.default_rng(args.seed).permutation(len(images))
  test, train = order[:500], order[500:]
  key_model, key_train = jax.random.split(jax.random.key(args.seed))
  model = Classifier(args.hidden, key=key_model)
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

  @eqx.filter_jit
  def train_step(model, opt_state, xs, labels, key):
    loss, grads = eqx.filter_value_and_grad(cross_entropy)(model, xs, labels, key)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, loss

  @eqx.filter_jit
  def accuracy(model, xs, labels):
    return jnp.mean(jnp.argmax(jax.vmap(model)(xs), -1) == labels)

  rng = np.random.default_rng(args.seed)
  start, losses = time.perf_counter(), []
  for i in range(args.steps):
    batch = rng.choice(train, 64, replace=False)
    model, opt_state, loss = train_step(model, opt_state, images[batch], digits.target[batch],
                                        jax.random.fold_in(key_train, i))
    losses.append(float(loss))
    if (i + 1) % max(1, args.steps // 5) == 0:
      print(f"step {i + 1}/{args.steps}  loss {np.mean(losses[-20:]):.4f}", flush=True)
  held_out = float(accuracy(eqx.nn.inference_mode(model), images[test], digits.target[test]))
  print(f"held-out accuracy {held_out:.3f} (chance 0.1) after {args.steps} steps, "
        f"{time.perf_counter() - start:.0f} s")
  return {"losses": np.array(losses), "accuracy": held_out}


if __name__ == "__main__":
  main(sys.argv[1:])
