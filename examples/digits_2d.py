"""Two-dimensional recurrence on real images: four ways to read a digit.

The images are scikit-learn's handwritten digits (``load_digits``: 1,797
images of 8x8 pixels, 16 grey levels, 10 classes), which ship inside the
scikit-learn package: nothing is downloaded. Four recurrent readers, each
with about the same number of parameters (``--params``; the hidden size of
each is the largest that fits):

- ``mdlstm``: Graves et al.'s multi-directional 2-D LSTM, four
  ``jaxrnn.rnn2d(jaxrnn.lstm2d(H))`` layers, one from each corner
  (``jaxrnn.multidirectional``), one pixel per position;
- ``renet``: ReNet's separable sweeps (``jaxrnn.renet``): a bidirectional
  LSTM along every row, then one along every column;
- ``rows``: an LSTM over the 8 rows (8 pixels per step);
- ``pixels``: an LSTM over the 64 pixels in raster order.

Each model maps every position (or step) through the same linear readout
to 10 class scores and averages them (mean pooling); it is trained with
``jaxrnn.classification_loss`` and Adam (step size decayed to 0 by a
cosine schedule) on random minibatches of a fixed training split and
evaluated on 500 held-out images (chance: 10%). The table gives the
held-out accuracy after training, the parameter count and the time per
training step (after compilation); ``--plot PATH`` saves the learning curves
(held-out accuracy against step) as a PNG if matplotlib is installed.

Run: python examples/digits_2d.py [--models mdlstm renet rows pixels]
       [--steps N] [--params P] [--eval-every K] [--plot PATH] [--quick]
       [--json PATH]
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
MODELS = ("mdlstm", "renet", "rows", "pixels")
CORNERS = ((False, False), (False, True), (True, False), (True, True))


def load_split(seed=0):
  """The digits scaled to [0, 1]: ``(train_images, train_labels, test_images,
  test_labels)``, images ``(N, 8, 8)`` float32, 1,297 for training."""
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  test, train = order[:TEST_SIZE], order[TEST_SIZE:]
  return images[train], labels[train], images[test], labels[test]


def body_of(name, hidden):
  """The recurrent part of model ``name`` and how an (8, 8) image becomes
  its input: ``(layer, to_input, input_size)``."""
  if name == "mdlstm":
    layer = jaxrnn.multidirectional(
        *[jaxrnn.rnn2d(jaxrnn.lstm2d(hidden), reverse=r) for r in CORNERS])
    return layer, lambda image: image[:, :, None], 1
  if name == "renet":
    sweep = lambda: jaxrnn.bidirectional(jaxrnn.lstm(hidden), jaxrnn.lstm(hidden))
    return jaxrnn.renet(sweep(), sweep()), lambda image: image[:, :, None], 1
  if name == "rows":
    return jaxrnn.rnn(jaxrnn.lstm(hidden)), lambda image: image, 8
  if name == "pixels":
    return jaxrnn.rnn(jaxrnn.lstm(hidden)), lambda image: image.reshape(64, 1), 1
  raise ValueError(f"model: expected one of {MODELS}, got {name!r}")


def make_model(name, hidden):
  """``(init(key) -> params, logits(params, image) -> (10,))``."""
  body, to_input, input_size = body_of(name, hidden)
  head = jaxrnn.readout(NUM_CLASSES)

  def features(body_params, image):
    ys, _ = body.apply(body_params, to_input(image))
    return ys.reshape(-1, ys.shape[-1])  # (positions or steps, F)

  def init(key):
    k_body, k_head = jax.random.split(key)
    body_params = body.init_params(k_body, input_size)
    size = jax.eval_shape(features, body_params, jnp.zeros((8, 8))).shape[-1]
    return body_params, head.init_params(k_head, size)

  def logits(params, image):
    scores, _ = head.apply(params[1], features(params[0], image))
    return jnp.mean(scores, axis=0)  # mean pooling over positions

  return init, logits


def count_params(name, hidden):
  init, _ = make_model(name, hidden)
  shapes = jax.eval_shape(init, jax.random.key(0))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))


def hidden_for_budget(name, budget):
  """The largest hidden size whose model has at most ``budget`` parameters."""
  hidden = 1
  while count_params(name, hidden + 1) <= budget:
    hidden += 1
  return hidden


def train_one(name, *, budget, steps, batch_size, learning_rate, eval_every, data, seed):
  """Trains one model; returns a result row (a dict) with its learning curve."""
  train_images, train_labels, test_images, test_labels = (jnp.asarray(a) for a in data)
  hidden = hidden_for_budget(name, budget)
  init, logits_one = make_model(name, hidden)
  logits_fn = jax.vmap(logits_one, in_axes=(None, 0))
  schedule = optax.cosine_decay_schedule(learning_rate, steps)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))

  def loss_fn(params, images, labels):
    return jnp.mean(jaxrnn.classification_loss(logits_fn(params, images), labels))

  @jax.jit
  def train_step(params, opt_state, key):
    picked = jax.random.randint(key, (batch_size,), 0, train_images.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, train_images[picked],
                                              train_labels[picked])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def accuracy(params):
    predicted = jnp.argmax(logits_fn(params, test_images), axis=-1)
    return jnp.mean((predicted == test_labels).astype(jnp.float32))

  key_init, key_data = jax.random.split(jax.random.key(seed))
  params = init(key_init)
  num_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
  opt_state = optimizer.init(params)
  curve = [(0, float(accuracy(params)))]
  start = time.perf_counter()
  params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(key_data, 0))
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - start
  step_time = 0.0
  for step in range(1, steps):
    t0 = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(key_data, step))
    jax.block_until_ready(loss)
    step_time += time.perf_counter() - t0
    if (step + 1) % eval_every == 0 or step + 1 == steps:
      curve.append((step + 1, float(accuracy(params))))
  return {
      "model": name, "hidden": hidden, "params": num_params,
      "test_accuracy": curve[-1][1], "ms_per_step": 1e3 * step_time / max(steps - 1, 1),
      "compile_s": compile_s, "steps": steps, "curve": curve,
  }


def plot_curves(rows, path):
  """Saves held-out accuracy against training step; False without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print(f"(matplotlib is not installed: no plot written to {path}; "
          "pip install matplotlib)")
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in rows:
    steps, accuracy = zip(*row["curve"])
    ax.plot(steps, [100 * a for a in accuracy],
            label=f"{row['model']} (H={row['hidden']}, {row['params']} params)")
  ax.set_xlabel("training step")
  ax.set_ylabel("held-out accuracy (%)")
  ax.set_title("8x8 digits: four recurrent readers")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote {path}")
  return True


# The quick run's option values (the full run's are the options' defaults).
QUICK = {"steps": 20, "params": 1500, "eval_every": 10}
QUICK_NOTE = ("--quick: a check that the script runs, not a result; so few steps and "
              "parameters leave the accuracies at or a little above chance (10%)")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                      help="the readers to train")
  parser.add_argument("--steps", type=int, default=600, help="training steps")
  parser.add_argument("--params", type=int, default=12000, help="parameter budget per model")
  parser.add_argument("--batch-size", type=int, default=64, help="images per step")
  parser.add_argument("--lr", type=float, default=1e-2, help="initial Adam step size")
  parser.add_argument("--eval-every", type=int, default=50,
                      help="steps between held-out evaluations")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the weights and the batches")
  parser.add_argument("--plot", metavar="PATH", help="save the learning curves as a PNG")
  parser.add_argument("--quick", action="store_true",
                      help="a tiny run for tests (20 steps, 1,500 parameters, evaluated every "
                      "10 steps; options given still apply). It checks that the script runs; "
                      "its accuracies are at or a little above chance (10%%), not results")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
  return args


def main(argv=None):
  """Trains each model and prints the table; returns its rows (dicts)."""
  args = parse_args(argv)
  data = load_split(args.seed)
  header = (f"{'model':<8} {'hidden':>6} {'params':>7} {'held-out accuracy':>17} "
            f"{'ms/step':>8} {'compile s':>9}")
  print(f"8x8 digits, {args.steps} steps of {args.batch_size} images, "
        f"budget {args.params} parameters")
  if args.quick:
    print(QUICK_NOTE)
  print(header)
  print("-" * len(header))
  rows = []
  for name in args.models:
    row = train_one(name, budget=args.params, steps=args.steps,
                    batch_size=args.batch_size, learning_rate=args.lr,
                    eval_every=args.eval_every, data=data, seed=args.seed)
    rows.append(row)
    print(f"{name:<8} {row['hidden']:>6} {row['params']:>7} "
          f"{100 * row['test_accuracy']:>16.1f}% {row['ms_per_step']:>8.1f} "
          f"{row['compile_s']:>9.1f}", flush=True)
  if args.plot:
    plot_curves(rows, args.plot)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": vars(args), "rows": rows}, f, indent=2)
  return rows


if __name__ == "__main__":
  main()
