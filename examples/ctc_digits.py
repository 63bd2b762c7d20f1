"""Reads lines of handwritten digits with CTC: no alignment given, none needed.

The digits are scikit-learn's 8x8 scans (``load_digits``: 1,797 images, 16
grey levels), which ship inside the scikit-learn package: nothing is
downloaded. The images are split first (500 held out, by a fixed seed, as in
``digits_2d.py``); lines of 3 to 8 digits are then joined from one side of
the split only, with 0 to 2 blank pixel columns between neighbouring digits,
so no held-out line holds an image seen in training. A line is read column
by column: T = its width (at most 78 columns, the batch padded to 78), 8
pixels per step; the label is its digit string, and where each digit starts
is never given.

The model is ``jaxrnn.stack(jaxrnn.bidirectional(jaxrnn.lstm(H),
jaxrnn.lstm(H)), jaxrnn.readout(11))`` with a second bidirectional layer by
default (``--layers``): per column, scores for the 10 digits and the CTC
blank. It trains with Adam on the mean of `jaxrnn.ctc_loss` over
a minibatch of fresh random lines (``jax.vmap`` with per-line lengths), and
decodes the held-out lines twice: best path (`jaxrnn.ctc_greedy_decode`) and
the CTC prefix beam search (`jaxrnn.ctc_beam_search`). The table gives, for
each decoder, the share of held-out lines read exactly right and the
character error rate (edit distance to the true string over its length,
summed over the lines).

Run: python examples/ctc_digits.py [--steps N] [--hidden H] [--layers 1|2]
       [--beam-size K] [--lines N] [--seed S] [--quick] [--json PATH]

References:
  A. Graves, S. Fernandez, F. Gomez and J. Schmidhuber, "Connectionist
  Temporal Classification: Labelling Unsegmented Sequence Data with
  Recurrent Neural Networks", ICML 2006.
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn

# The image split is digits_2d.py's, next to this file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import digits_2d  # noqa: E402

BLANK = 0  # CTC's blank; digit d is class d + 1
NUM_CLASSES = 11
MIN_DIGITS, MAX_DIGITS = 3, 8
MAX_GAP = 2  # blank pixel columns between neighbouring digits: 0 to MAX_GAP
WIDTH = 8 * MAX_DIGITS + MAX_GAP * (MAX_DIGITS - 1)  # the widest line: 78 columns
SPLIT_SEED = 0  # the image split and the held-out lines never change


def make_lines(images, labels, count, rng):
  """``count`` random lines joined from ``images`` (N, 8, 8) and their ``labels``.

  Returns:
    ``(xs, lengths, targets, num_digits)``: ``xs`` ``(count, WIDTH, 8)``
    float32, line ``n`` read column by column in its first ``lengths[n]``
    steps and zero after; ``targets`` ``(count, MAX_DIGITS)`` int32, the
    digits as classes 1-10 in the first ``num_digits[n]`` places, then 0.
  """
  xs = np.zeros((count, WIDTH, 8), np.float32)
  lengths = np.zeros(count, np.int32)
  targets = np.zeros((count, MAX_DIGITS), np.int32)
  num_digits = rng.integers(MIN_DIGITS, MAX_DIGITS + 1, size=count).astype(np.int32)
  for n, k in enumerate(num_digits):
    picked = rng.integers(0, len(images), size=k)
    gaps = rng.integers(0, MAX_GAP + 1, size=k - 1)
    column = 0
    for i, index in enumerate(picked):
      xs[n, column:column + 8] = images[index].T  # a step is a column of 8 pixels
      column += 8 + (gaps[i] if i < k - 1 else 0)
    lengths[n] = column
    targets[n, :k] = labels[picked] + 1
  return xs, lengths, targets, num_digits


def build(hidden, layers):
  """``layers`` bidirectional LSTM layers and a readout of 11 scores per step."""
  body = [jaxrnn.bidirectional(jaxrnn.lstm(hidden), jaxrnn.lstm(hidden))
          for _ in range(layers)]
  return jaxrnn.stack(*body, jaxrnn.readout(NUM_CLASSES))


def edit_distance(a, b):
  """Levenshtein distance between two sequences (insertions, deletions and
  substitutions all cost 1)."""
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


def score(decoded, references):
  """``(sequence accuracy, character error rate)`` of decoded label lists."""
  errors = sum(edit_distance(d, r) for d, r in zip(decoded, references))
  exact = sum(list(d) == list(r) for d, r in zip(decoded, references))
  return exact / len(references), errors / sum(len(r) for r in references)


def to_lists(tokens, num_tokens):
  """Fixed-shape decoder output ``(N, T)``, ``(N,)`` -> a list of label lists."""
  return [row[:n].tolist() for row, n in zip(np.asarray(tokens), np.asarray(num_tokens))]


def train(net, params, data, *, steps, batch_size, learning_rate, rng):
  """Adam on fresh random training lines; returns (params, losses, seconds)."""
  images, labels = data
  schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))

  def line_loss(params, xs, length, target, num_digits):
    logits, _ = net.apply(params, xs, length=length)
    return jaxrnn.ctc_loss(logits, length, target, num_digits, blank=BLANK)

  def loss_fn(params, batch):
    return jnp.mean(jax.vmap(line_loss, in_axes=(None, 0, 0, 0, 0))(params, *batch))

  @jax.jit
  def train_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  report = max(1, steps // 10)
  start = time.perf_counter()
  for step in range(steps):
    batch = make_lines(images, labels, batch_size, rng)
    params, opt_state, loss = train_step(params, opt_state, batch)
    losses.append(float(loss))
    if (step + 1) % report == 0 or step + 1 == steps:
      recent = np.mean(losses[-report:])
      print(f"step {step + 1}/{steps}  CTC loss {recent:.3f} per line "
            f"({time.perf_counter() - start:.0f} s)", flush=True)
  return params, np.array(losses), time.perf_counter() - start


def make_decoders(net, beam_size):
  """Jitted ``greedy(params, xs, lengths)`` and ``beam(...)`` over a batch."""

  def logits_of(params, xs, lengths):
    return jax.vmap(lambda x, n: net.apply(params, x, length=n)[0])(xs, lengths)

  @jax.jit
  def greedy(params, xs, lengths):
    return jax.vmap(lambda l, n: jaxrnn.ctc_greedy_decode(l, n, blank=BLANK))(
        logits_of(params, xs, lengths), lengths)

  @jax.jit
  def beam(params, xs, lengths):
    tokens, num_tokens, _ = jax.vmap(lambda l, n: jaxrnn.ctc_beam_search(
        l, n, beam_size=beam_size, blank=BLANK))(logits_of(params, xs, lengths), lengths)
    return tokens[:, 0], num_tokens[:, 0]  # the most probable labelling of each line

  return greedy, beam


def digits_of(labels):
  return "".join(str(c - 1) for c in labels)


def evaluate(net, params, held, beam_size):
  """Decodes the held-out lines both ways: ``{decoder: figures}``, greedy first."""
  xs, lengths, targets, num_digits = held
  references = to_lists(targets, num_digits)
  greedy, beam = make_decoders(net, beam_size)
  results = {}
  for name, decode in (("greedy", greedy), (f"beam {beam_size}", beam)):
    t0 = time.perf_counter()
    decoded = to_lists(*decode(params, jnp.asarray(xs), jnp.asarray(lengths)))
    seconds = time.perf_counter() - t0
    accuracy, cer = score(decoded, references)
    results[name] = {"sequence_accuracy": accuracy, "cer": cer, "seconds": seconds,
                     "decoded": [digits_of(d) for d in decoded]}
  return results


def print_results(results, references):
  """Prints the table and three lines; returns how many lines the decoders
  read differently."""
  (greedy, greedy_r), (beam, beam_r) = results.items()
  header = f"{'decoder':<8} {'held-out lines right':>20} {'CER':>7} {'seconds':>8}"
  print(f"\nheld-out: {len(references)} lines, {sum(map(len, references)):,} digits")
  print(header)
  print("-" * len(header))
  for name, r in results.items():
    print(f"{name:<8} {100 * r['sequence_accuracy']:>19.1f}% {100 * r['cer']:>6.2f}% "
          f"{r['seconds']:>8.1f}")
  print("(CER: edit distance to the true digits over their number; seconds include "
        "compilation)")
  differ = sum(g != b for g, b in zip(greedy_r["decoded"], beam_r["decoded"]))
  print(f"the two decoders read {differ} of the {len(references)} lines differently")
  for n in range(min(3, len(references))):
    print(f"line {n}: true {digits_of(references[n]):<8}  {greedy} "
          f"{greedy_r['decoded'][n]:<8}  {beam} {beam_r['decoded'][n]}")
  return differ


# The quick run's option values (the full run's are the options' defaults).
QUICK = {"steps": 10, "hidden": 8, "layers": 1, "batch_size": 8, "lines": 20, "beam_size": 4}
QUICK_NOTE = ("--quick: a check that the script runs, not a result; after so few steps "
              "the model reads (almost) nothing, so its figures are not meaningful")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=1500, help="training steps")
  parser.add_argument("--hidden", type=int, default=64, help="hidden size per direction")
  parser.add_argument("--layers", type=int, choices=(1, 2), default=2,
                      help="bidirectional LSTM layers")
  parser.add_argument("--batch-size", type=int, default=32, help="lines per step")
  parser.add_argument("--lr", type=float, default=3e-3, help="initial Adam step size")
  parser.add_argument("--beam-size", type=int, default=8, help="prefixes kept by the beam search")
  parser.add_argument("--lines", type=int, default=1000, help="held-out lines decoded")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the weights and the training lines (the image split and "
                      "the held-out lines are fixed)")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests, seconds ({QUICK['steps']} steps, one layer of "
                      f"hidden size {QUICK['hidden']}, {QUICK['lines']} held-out lines; options "
                      "given still apply); its figures are not meaningful")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
  for name in ("steps", "hidden", "batch_size", "beam_size", "lines"):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')}: expected a positive integer, "
                   f"got {getattr(args, name)}")
  return args


def main(argv=None):
  """Trains, decodes the held-out lines both ways and prints the table;
  returns the figures (a dict)."""
  args = parse_args(argv)
  start = time.perf_counter()
  train_images, train_labels, held_images, held_labels = digits_2d.load_split(SPLIT_SEED)
  held = make_lines(held_images, held_labels, args.lines, np.random.default_rng(SPLIT_SEED))
  references = to_lists(held[2], held[3])
  print(f"lines of {MIN_DIGITS}-{MAX_DIGITS} digits, 0-{MAX_GAP} blank columns between "
        f"digits, read column by column (T <= {WIDTH}, 8 pixels per step); training lines "
        f"from {len(train_images)} images, {args.lines} held-out lines from the other "
        f"{len(held_images)}")
  if args.quick:
    print(QUICK_NOTE)

  net = build(args.hidden, args.layers)
  params = net.init_params(jax.random.key(args.seed), 8)
  num_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
  print(f"{args.layers} x bidirectional LSTM({args.hidden}) + readout({NUM_CLASSES}), "
        f"{num_params:,} parameters; {args.steps} Adam steps of {args.batch_size} lines")
  params, losses, train_s = train(
      net, params, (train_images, train_labels), steps=args.steps,
      batch_size=args.batch_size, learning_rate=args.lr,
      rng=np.random.default_rng([args.seed, 1]))

  results = evaluate(net, params, held, args.beam_size)
  differ = print_results(results, references)
  total = time.perf_counter() - start
  print(f"trained in {train_s:.0f} s ({1e3 * train_s / args.steps:.0f} ms per step, "
        f"compilation included); total {total:.0f} s")
  result = {"params": num_params, "train_seconds": train_s, "seconds": total,
            "losses": losses, "decoders": results, "lines_differ": differ}
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": vars(args), "params": num_params, "train_seconds": train_s,
                 "seconds": total, "decoders": results, "lines_differ": differ}, f, indent=2)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
