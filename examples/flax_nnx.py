"""Classifies handwritten digits read row by row, with a Flax NNX model.

scikit-learn's digits (8x8 images, 10 classes, shipped with the package):
each image row is one time step, T = 8 steps of 8 pixels. The model is an
``nnx.Module``: `jaxrnn.nnx.RNN` over a GRU with variational recurrent
dropout, then ``nnx.Linear`` on the last step. It trains with
``nnx.Optimizer(model, optax.adam(...), wrt=nnx.Param)`` under ``nnx.jit``;
``model.train()`` turns the dropout on (keys from the ``rngs`` given to the
module), ``model.eval()`` off.

Run: ``python examples/flax_nnx.py [--steps N] [--hidden H] [--seed S]``
(needs ``pip install 'jaxrnn[flax]' optax scikit-learn``).
"""

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxrnn
import jaxrnn.nnx


class Classifier(nnx.Module):
  """Images ``(B, 8, 8)`` (rows as steps) -> class scores ``(B, 10)``."""

  def __init__(self, hidden: int, *, rngs: nnx.Rngs):
    layer = jaxrnn.rnn(jaxrnn.gru(hidden), recurrent_dropout=0.1)
    self.rnn = jaxrnn.nnx.RNN(layer, 8, rngs=rngs)
    self.head = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, xs):
    return self.head(self.rnn(xs)[:, -1])


def cross_entropy(model, xs, labels):
  return jnp.mean(jaxrnn.classification_loss(model(xs), labels))


@nnx.jit
def train_step(model, optimizer, xs, labels):
  loss, grads = nnx.value_and_grad(cross_entropy)(model, xs, labels)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, xs, labels):
  return jnp.mean(jnp.argmax(model(xs), -1) == labels)


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
  model = Classifier(args.hidden, rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  rng = np.random.default_rng(args.seed)
  start, losses = time.perf_counter(), []
  model.train()  # recurrent dropout on
  for i in range(args.steps):
    batch = rng.choice(train, 64, replace=False)
    losses.append(float(train_step(model, optimizer, images[batch], digits.target[batch])))
    if (i + 1) % max(1, args.steps // 5) == 0:
      print(f"step {i + 1}/{args.steps}  loss {np.mean(losses[-20:]):.4f}", flush=True)
  model.eval()  # recurrent dropout off
  held_out = float(accuracy(model, images[test], digits.target[test]))
  print(f"held-out accuracy {held_out:.3f} (chance 0.1) after {args.steps} steps, "
        f"{time.perf_counter() - start:.0f} s")
  return {"losses": np.array(losses), "accuracy": held_out}


if __name__ == "__main__":
  main(sys.argv[1:])
