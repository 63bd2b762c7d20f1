"""The adding problem: LSTM and GRU solve it, a tanh Elman network does not.

Each sequence has T steps of (value, marker) pairs. The values are uniform in
[0, 1]; exactly two markers are 1, one in the first half of the sequence and
one in the second half (as in Le et al.), all others are 0. The target, read
after the last step, is the sum of the two marked values. Predicting 1 (the
mean of the target) gives the baseline mean squared error Var(u1 + u2) = 1/6
≈ 0.167; a model "solves" the task when its test MSE falls below 0.01.

Gated cells carry the first marked value across up to T steps and solve it; a
tanh Elman network, trained with the same hidden size, optimiser and step
budget, stays at the baseline (Hochreiter & Schmidhuber 1997, experiment 4;
Le, Jaitly & Hinton 2015, figure 2).

Every training step draws a fresh minibatch from a ``jax.random`` key inside
the jit-compiled step; the test set is one fixed held-out batch. Training
stops early once a cell's test MSE is below 0.01 (checked every
``--eval-every`` steps), so ``steps`` in the table is the number of steps it
took to solve the task, or the whole budget; ``seconds`` is the wall-clock
time of that training, compilation included.

Run: python examples/adding_problem.py [--lengths 100 200] [--steps N]
       [--hidden H] [--seed S] [--quick] [--json PATH]

References:
  S. Hochreiter and J. Schmidhuber, "Long Short-Term Memory", Neural
  Computation 9(8), 1997.
  Q. V. Le, N. Jaitly and G. E. Hinton, "A Simple Way to Initialize Recurrent
  Networks of Rectified Linear Units", arXiv:1504.00941, 2015.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import optax

import jaxrnn

SOLVED_MSE = 0.01
CELLS = {
    "lstm": jaxrnn.lstm,
    "gru": jaxrnn.gru,
    "elman": lambda hidden: jaxrnn.elman(hidden, activation="tanh"),
}


def make_batch(key, batch_size, length):
  """Draws adding-problem sequences.

  Args:
    key: a ``jax.random`` key.
    batch_size: the number of sequences B.
    length: the number of steps T (at least 2).

  Returns:
    ``(xs, targets)``: ``xs: (B, T, 2)`` holds the value in channel 0 and the
    marker (0 or 1) in channel 1; ``targets: (B,)`` is the sum of the two
    marked values. One marker lies in ``[0, T // 2)``, the other in
    ``[T // 2, T)``.
  """
  if length < 2:
    raise ValueError(f"length: expected at least 2 steps (one per marker), got {length}")
  k_value, k_first, k_second = jax.random.split(key, 3)
  half = length // 2
  values = jax.random.uniform(k_value, (batch_size, length))
  first = jax.random.randint(k_first, (batch_size,), 0, half)
  second = jax.random.randint(k_second, (batch_size,), half, length)
  steps = jnp.arange(length)[None, :]
  markers = (steps == first[:, None]) | (steps == second[:, None])
  markers = markers.astype(values.dtype)
  xs = jnp.stack([values, markers], axis=-1)
  targets = jnp.sum(values * markers, axis=1)
  return xs, targets


def make_model(cell_name, hidden):
  """An RNN over the sequence and a linear readout; the prediction is its last step."""
  return jaxrnn.stack(jaxrnn.rnn(CELLS[cell_name](hidden)), jaxrnn.readout(1))


def train_one(cell_name, length, *, hidden, steps, batch_size, learning_rate,
              clip, test_set, eval_every, seed):
  """Trains one cell on one sequence length; returns a result row (a dict)."""
  net = make_model(cell_name, hidden)
  optimizer = optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate))

  def predict(params, xs):
    ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs)
    return ys[:, -1, 0]  # the readout at the last step

  def loss_fn(params, xs, targets):
    return jnp.mean((predict(params, xs) - targets) ** 2)

  @jax.jit
  def train_step(params, opt_state, key):
    xs, targets = make_batch(key, batch_size, length)
    loss, grads = jax.value_and_grad(loss_fn)(params, xs, targets)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  test_loss = jax.jit(loss_fn)
  key_init, key_data = jax.random.split(jax.random.key(seed))
  params = net.init_params(key_init, 2)
  opt_state = optimizer.init(params)
  start = time.perf_counter()
  first_loss = float(test_loss(params, *test_set))
  mse, step, curve = first_loss, 0, [(0, first_loss)]
  while step < steps:
    for _ in range(min(eval_every, steps - step)):
      params, opt_state, _ = train_step(params, opt_state, jax.random.fold_in(key_data, step))
      step += 1
    mse = float(test_loss(params, *test_set))
    curve.append((step, mse))
    if mse < SOLVED_MSE:
      break
  return {
      "T": length, "cell": cell_name, "test_mse": mse, "initial_test_mse": first_loss,
      "solved": mse < SOLVED_MSE, "steps": step,
      "seconds": time.perf_counter() - start, "curve": curve,
  }


# The quick run's option values (the full run's are the options' defaults).
QUICK = {"lengths": [10], "steps": 200, "hidden": 16, "lr": 1e-2, "test_size": 256,
         "eval_every": 50}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200],
                      help="sequence lengths T")
  parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS),
                      help="the cells to train")
  parser.add_argument("--steps", type=int, default=4000, help="training-step budget per cell")
  parser.add_argument("--hidden", type=int, default=64, help="hidden size")
  parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
  parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
  parser.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
  parser.add_argument("--test-size", type=int, default=1000, help="held-out sequences")
  parser.add_argument("--eval-every", type=int, default=100,
                      help="steps between held-out evaluations")
  parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
  parser.add_argument("--quick", action="store_true",
                      help="a tiny run for tests (T=10, hidden 16, 200 steps, learning rate "
                      "0.01, 256 test sequences, evaluated every 50 steps); options given "
                      "still apply")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
  return args


def main(argv=None):
  """Runs the table; returns its rows (a list of dicts)."""
  args = parse_args(argv)
  rows = []
  header = (f"{'T':>4}  {'cell':<6} {'test MSE':>9} {'baseline':>9}  {'solved':<6} "
            f"{'steps':>6} {'seconds':>8}")
  print(header)
  print("-" * len(header))
  for length in args.lengths:
    test_set = make_batch(jax.random.key(10_000 + args.seed), args.test_size, length)
    baseline = float(jnp.mean((1.0 - test_set[1]) ** 2))
    for cell_name in args.cells:
      row = train_one(
          cell_name, length, hidden=args.hidden, steps=args.steps,
          batch_size=args.batch_size, learning_rate=args.lr, clip=args.clip,
          test_set=test_set, eval_every=args.eval_every, seed=args.seed)
      row["baseline_mse"] = baseline
      rows.append(row)
      print(f"{length:>4}  {cell_name:<6} {row['test_mse']:>9.5f} {baseline:>9.5f}  "
            f"{'yes' if row['solved'] else 'no':<6} {row['steps']:>6} {row['seconds']:>8.1f}",
            flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": vars(args), "rows": rows}, f, indent=2)
  return rows


if __name__ == "__main__":
  main()
