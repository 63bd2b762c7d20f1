"""Classifies images with an RNN that reads them as sequences.

The images are scikit-learn's handwritten digits (``load_digits``: 1,797
images of 8x8 pixels, 16 grey levels, 10 classes), which ship inside the
scikit-learn package: nothing is downloaded. Two ways to turn an image into a
sequence:

- ``rows``: each image row is one time step, T = 8 steps of 8 pixels;
- ``pixels``: one pixel per step in raster order, T = 64 steps of 1 value,
  the small version of "pixel-by-pixel MNIST" (Le, Jaitly & Hinton 2015),
  where the class depends on inputs seen up to 64 steps before the end.

The model is ``jaxrnn.rnn(jaxrnn.gru(H))`` (or ``--cell lstm``) followed by
a linear readout; the class scores are the readout at the last step
(``jaxrnn.last_step``), trained with ``jaxrnn.classification_loss`` and Adam
(step size decayed to 0 by a cosine schedule) on random minibatches of a
fixed training split. Accuracy is measured on a held-out split of 500 images
(chance: 10%).

Run: python examples/image_rows.py [--settings rows pixels] [--steps N]
       [--cell gru|lstm] [--hidden H] [--seed S] [--quick] [--json PATH]

References:
  Q. V. Le, N. Jaitly and G. E. Hinton, "A Simple Way to Initialize Recurrent
  Networks of Rectified Linear Units", arXiv:1504.00941, 2015.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxrnn

NUM_CLASSES = 10
TEST_SIZE = 500
# How an (8, 8) image becomes a sequence xs: (T, input_size).
SETTINGS = {"rows": (8, 8), "pixels": (64, 1)}


def load_split(seed=0):
  """The digits scaled to [0, 1] and split into training and held-out images.

  Args:
    seed: seed of the (NumPy) permutation that picks the held-out images.

  Returns:
    ``(train_images, train_labels, test_images, test_labels)``: images of
    shape ``(N, 8, 8)`` (float32) and integer labels of shape ``(N,)``, with
    ``N = 1297`` for training and 500 held out.
  """
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  test, train = order[:TEST_SIZE], order[TEST_SIZE:]
  return images[train], labels[train], images[test], labels[test]


def as_sequences(images, setting):
  """``(N, 8, 8)`` images as ``(N, T, input_size)`` sequences for ``setting``."""
  num_steps, input_size = SETTINGS[setting]
  return images.reshape(images.shape[0], num_steps, input_size)


CELLS = {"gru": jaxrnn.gru, "lstm": jaxrnn.lstm}


def train_one(setting, *, cell, hidden, steps, batch_size, learning_rate, data, seed):
  """Trains one model; returns a result row (a dict)."""
  train_images, train_labels, test_images, test_labels = data
  train_xs = jnp.asarray(as_sequences(train_images, setting))
  test_xs = jnp.asarray(as_sequences(test_images, setting))
  train_ys, test_ys = jnp.asarray(train_labels), jnp.asarray(test_labels)
  net = jaxrnn.stack(jaxrnn.rnn(CELLS[cell](hidden)), jaxrnn.readout(NUM_CLASSES))
  # Cosine decay to 0 over the run: a settled final model, no step-size tuning.
  schedule = optax.cosine_decay_schedule(learning_rate, steps)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))

  def logits_fn(params, xs):
    ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs)  # (B, T, 10)
    return jax.vmap(jaxrnn.last_step)(ys)  # (B, 10)

  def loss_fn(params, xs, labels):
    return jnp.mean(jaxrnn.classification_loss(logits_fn(params, xs), labels))

  @jax.jit
  def train_step(params, opt_state, key):
    picked = jax.random.randint(key, (batch_size,), 0, train_xs.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, train_xs[picked], train_ys[picked])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params):
    logits = logits_fn(params, test_xs)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == test_ys).astype(jnp.float32))
    return jnp.mean(jaxrnn.classification_loss(logits, test_ys)), accuracy

  key_init, key_data = jax.random.split(jax.random.key(seed))
  params = net.init_params(key_init, train_xs.shape[-1])
  opt_state = optimizer.init(params)
  start = time.perf_counter()
  first_loss, first_accuracy = (float(v) for v in evaluate(params))
  for step in range(steps):
    params, opt_state, _ = train_step(params, opt_state, jax.random.fold_in(key_data, step))
  loss, accuracy = (float(v) for v in evaluate(params))
  num_steps, input_size = SETTINGS[setting]
  return {
      "setting": setting, "T": num_steps, "input_size": input_size, "cell": cell,
      "hidden": hidden, "test_accuracy": accuracy, "test_loss": loss,
      "initial_test_accuracy": first_accuracy, "initial_test_loss": first_loss,
      "steps": steps, "seconds": time.perf_counter() - start,
  }


# The quick run's option values (the full run's are the options' defaults).
QUICK = {"settings": ["rows"], "steps": 150, "hidden": 32}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                      help="rows (T=8) and/or pixels (T=64)")
  parser.add_argument("--steps", type=int, default=1500, help="training steps")
  parser.add_argument("--cell", choices=list(CELLS), default="gru", help="the cell")
  parser.add_argument("--hidden", type=int, default=64, help="hidden size")
  parser.add_argument("--batch-size", type=int, default=64, help="images per step")
  parser.add_argument("--lr", type=float, default=1e-2, help="initial Adam learning rate")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the weights and the batches")
  parser.add_argument("--quick", action="store_true",
                      help="a tiny run for tests (rows only, hidden 32, 150 steps); options "
                      "given still apply")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
  return args


def main(argv=None):
  """Trains each setting and prints the table; returns its rows (a list of dicts)."""
  args = parse_args(argv)
  data = load_split(args.seed)
  header = (f"{'input':<7} {'T':>3} {'cell':<5} {'hidden':>6} {'test accuracy':>13} "
            f"{'steps':>6} {'seconds':>8}")
  print(header)
  print("-" * len(header))
  rows = []
  for setting in args.settings:
    row = train_one(setting, cell=args.cell, hidden=args.hidden, steps=args.steps,
                    batch_size=args.batch_size, learning_rate=args.lr, data=data,
                    seed=args.seed)
    rows.append(row)
    print(f"{setting:<7} {row['T']:>3} {row['cell']:<5} {row['hidden']:>6} "
          f"{100 * row['test_accuracy']:>12.1f}% {row['steps']:>6} {row['seconds']:>8.1f}",
          flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": vars(args), "rows": rows}, f, indent=2)
  return rows


if __name__ == "__main__":
  main()
