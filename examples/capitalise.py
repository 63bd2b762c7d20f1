"""Restores capitalisation: a bidirectional LSTM against a unidirectional one.

The text is the documentation shipped with Python itself (the topics of the
standard library's ``pydoc_data`` package, about 465 KB of English). The
input is that text lower-cased, one character at a time; the target at each
character is whether it was upper case. Both models have (almost) the same
number of parameters and train on the same batches for the same number of
steps. The bidirectional one also reads the characters that follow, which is
what it takes to tell "none" (-> "None") from "not", or the "t" of
"typeerror" (-> "TypeError") from the "t" of "type".

The library pieces in use: `jaxrnn.pad_sequences` and
`jaxrnn.bucket_by_length` batch paragraphs of different lengths,
``length`` masks the padding, `jaxrnn.labelling_loss` is the masked
per-character loss, and `jaxrnn.stack` puts a `jaxrnn.readout` on
`jaxrnn.rnn` or `jaxrnn.bidirectional`; training steps are jitted optax
updates over ``jax.vmap``-ed sequences.

Run: ``make demo``, or
``python examples/capitalise.py [--steps N] [--hidden H] [--seed S] [--out PATH] [--quick]``
"""

import argparse
import dataclasses
import math
import pathlib
import string
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn

# Vocabulary of the lower-cased text: 0 is padding, 1 any other character.
PAD, UNK = 0, 1
CHARS = " \n" + string.ascii_lowercase + string.digits + string.punctuation
CHAR_IDS = {c: i + 2 for i, c in enumerate(CHARS)}
VOCAB_SIZE = len(CHARS) + 2
SPLIT_SEED = 0  # the train / held-out split of the topics never changes
KINDS = ("unidirectional", "bidirectional")


@dataclasses.dataclass(frozen=True)
class Config:
  steps: int = 1500
  hidden: int = 64            # the unidirectional LSTM's hidden size
  embed: int = 32             # character embedding size (both models)
  batch_size: int = 32
  max_length: int = 128       # longer paragraphs are cut at a space
  pad_multiple: int = 64      # batches pad to a multiple: few compiled shapes
  learning_rate: float = 2e-2
  held_out: float = 0.15      # share of the characters held out, by topic
  max_chars: Optional[int] = None  # train on a prefix of this many characters
  seed: int = 0
  out: str = "build/capitalise_loss.png"


QUICK = Config(steps=40, hidden=16, embed=8, max_length=64, pad_multiple=64,
               max_chars=20_000)


# ---------------------------------------------------------------------------
# Data


def split_topics(held_out: float) -> tuple[list[str], list[str]]:
  """Texts of the pydoc topics, split by topic into (train, held-out)."""
  from pydoc_data.topics import topics

  names = sorted(topics)
  total = sum(len(topics[n]) for n in names)
  held, size = set(), 0
  for i in np.random.default_rng(SPLIT_SEED).permutation(len(names)):
    if size >= held_out * total:
      break
    held.add(names[i])
    size += len(topics[names[i]])
  return ([topics[n] for n in names if n not in held],
          [topics[n] for n in names if n in held])


def paragraphs(text: str, max_length: int) -> list[str]:
  """Splits at blank lines; cuts longer paragraphs after a space."""
  pieces = []
  for para in text.split("\n\n"):
    para = para.strip("\n")
    while len(para) > max_length:
      cut = para.rfind(" ", 0, max_length) + 1  # keeps the piece <= max_length
      cut = cut if cut > 0 else max_length
      pieces.append(para[:cut])
      para = para[cut:]
    if para:
      pieces.append(para)
  return pieces


def encode(text: str) -> tuple[np.ndarray, np.ndarray]:
  """``(ids, upper)``: lower-cased character ids and 0/1 targets, both ``(T,)``."""
  ids = np.array([CHAR_IDS.get(c.lower(), UNK) for c in text], np.int32)
  upper = np.array([c.isupper() for c in text], np.int32)
  return ids, upper


def take_prefix(pieces: list[str], max_chars: Optional[int]) -> list[str]:
  if max_chars is None:
    return pieces
  kept, size = [], 0
  for p in pieces:
    if size + len(p) > max_chars:
      break
    kept.append(p)
    size += len(p)
  return kept


def batches(examples, config: Config, rng: Optional[np.random.Generator]):
  """Padded minibatches ``(ids, labels, lengths)`` of similar lengths.

  With ``rng``: shuffled, full batches only (for training). Without: every
  example once, the last batch filled up with empty sequences, so that all
  batches have the same size and pad to the same few lengths.
  """
  lengths = np.array([len(ids) for ids, _ in examples])
  empty = (np.zeros(0, np.int32), np.zeros(0, np.int32))
  for index in jaxrnn.bucket_by_length(lengths, config.batch_size, rng=rng,
                                       drop_remainder=rng is not None):
    chosen = [examples[i] for i in index]
    chosen += [empty] * (config.batch_size - len(chosen))
    ids, lens = jaxrnn.pad_sequences([e[0] for e in chosen], pad_value=PAD,
                                     pad_to_multiple=config.pad_multiple)
    labels, _ = jaxrnn.pad_sequences([e[1] for e in chosen],
                                     pad_to_multiple=config.pad_multiple)
    yield ids, labels, lens


# ---------------------------------------------------------------------------
# Models


def build(kind: str, hidden_size: int) -> jaxrnn.Layer:
  """An LSTM layer (one- or two-directional) with a 2-class readout."""
  if kind == "unidirectional":
    body = jaxrnn.rnn(jaxrnn.lstm(hidden_size))
  else:
    body = jaxrnn.bidirectional(jaxrnn.lstm(hidden_size), jaxrnn.lstm(hidden_size))
  return jaxrnn.stack(body, jaxrnn.readout(2))


def init_params(net: jaxrnn.Layer, key, embed_size: int) -> dict:
  k_embed, k_net = jax.random.split(key)
  return {"embed": 0.3 * jax.random.normal(k_embed, (VOCAB_SIZE, embed_size)),
          "net": net.init_params(k_net, embed_size)}


def count_params(net: jaxrnn.Layer, embed_size: int) -> int:
  shapes = jax.eval_shape(lambda k: init_params(net, k, embed_size), jax.random.key(0))
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


def matched_hidden_size(hidden_size: int, embed_size: int) -> int:
  """The per-direction size giving the bidirectional model the same count."""
  target = count_params(build("unidirectional", hidden_size), embed_size)
  gap = lambda h: count_params(build("bidirectional", h), embed_size) - target  # noqa: E731
  lo, hi = 1, hidden_size  # the count grows with h: bisect to gap(lo) <= 0 < gap(hi)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if gap(mid) <= 0 else (lo, mid)
  return min((lo, hi), key=lambda h: abs(gap(h)))


def logits_fn(net: jaxrnn.Layer, params: dict, ids, lengths):
  """``ids: (B, T)``, ``lengths: (B,)`` -> logits ``(B, T, 2)`` (0 at padding)."""
  xs = params["embed"][ids]  # (B, T, E)
  logits, _ = jax.vmap(net.apply, in_axes=(None, 0))(params["net"], xs, length=lengths)
  return logits


def loss_fn(net, params, ids, labels, lengths):
  """Cross-entropy per valid character of the batch."""
  per_sequence = jaxrnn.labelling_loss(logits_fn(net, params, ids, lengths), labels,
                                       lengths, reduction="sum")
  return jnp.sum(per_sequence) / jnp.maximum(jnp.sum(lengths), 1)


# ---------------------------------------------------------------------------
# Training and evaluation


class Progress:
  """A tqdm progress bar, or a line every tenth of the run without tqdm.

  ``metric`` names the value shown beside the step count (printed with
  ``digits`` decimals); `update` may advance several steps at once.
  """

  def __init__(self, total: int, desc: str, *, metric: str = "loss", digits: int = 4):
    self.total, self.desc, self.count = total, desc, 0
    self.metric, self.digits = metric, digits
    try:
      from tqdm import tqdm
    except ImportError:
      self.bar = None
      print(f"{desc}: {total} steps (install tqdm for a progress bar)", flush=True)
    else:
      self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

  def update(self, value: float, steps: int = 1) -> None:
    before, self.count = self.count, self.count + steps
    text = f"{value:.{self.digits}f}"
    tenth = max(1, self.total // 10)
    if self.bar is not None:
      self.bar.set_postfix(refresh=False, **{self.metric: text})
      self.bar.update(steps)
    elif self.count // tenth > before // tenth or self.count == self.total:
      print(f"{self.desc}: step {self.count}/{self.total}  {self.metric} {text}", flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def train(net, params, examples, config: Config, desc: str):
  """Adam steps on shuffled bucketed batches; returns (params, losses)."""
  schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
  opt_state = optimizer.init(params)
  compiled = []  # the padded length of each compilation (the body runs only when traced)

  @jax.jit
  def step(params, opt_state, ids, labels, lengths):
    compiled.append(ids.shape[1])
    loss, grads = jax.value_and_grad(lambda p: loss_fn(net, p, ids, labels, lengths))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(config.seed)

  def forever():
    while True:
      yield from batches(examples, config, rng)

  stream = forever()
  losses = np.zeros(config.steps)
  progress = Progress(config.steps, desc)
  for i in range(config.steps):
    params, opt_state, loss = step(params, opt_state, *next(stream))
    losses[i] = float(loss)
    progress.update(losses[i])
  progress.close()
  print(f"{desc}: the training step compiled {len(compiled)} time(s), for padded "
        f"lengths {sorted(compiled)}")
  return params, losses


def evaluate(net, params, examples, config: Config) -> tuple[dict, list]:
  """Precision, recall and F1 of the upper-case class over all characters.

  Returns the metrics and the predictions, one ``(T_i,)`` bool array per
  example, in the order of ``examples``.
  """
  predict = jax.jit(lambda params, ids, lengths: jnp.argmax(
      logits_fn(net, params, ids, lengths), axis=-1) == 1)
  lengths = np.array([len(ids) for ids, _ in examples])
  order = np.concatenate(jaxrnn.bucket_by_length(lengths, config.batch_size))
  flat = []  # predictions in the (sorted) batch order
  for ids, _, lens in batches(examples, config, rng=None):
    flat += jaxrnn.unpad_sequences(predict(params, ids, lens), lens)
  predictions = [None] * len(examples)
  for i, pred in zip(order, flat):
    predictions[i] = pred
  pred = np.concatenate(predictions)
  truth = np.concatenate([upper for _, upper in examples]) == 1
  tp, fp, fn = (int(np.sum(pred & truth)), int(np.sum(pred & ~truth)),
                int(np.sum(~pred & truth)))
  precision = tp / max(tp + fp, 1)
  recall = tp / max(tp + fn, 1)
  f1 = 2 * precision * recall / max(precision + recall, 1e-12)
  metrics = {"precision": precision, "recall": recall, "f1": f1,
             "tp": tp, "fp": fp, "fn": fn}
  return metrics, predictions


def restore(text: str, upper: np.ndarray) -> str:
  """The lower-cased ``text`` with capitals where ``upper`` is True."""
  return "".join(c.upper() if u else c for c, u in zip(text.lower(), upper))


def smooth(losses: np.ndarray, decay: float = 0.98) -> np.ndarray:
  """Exponential moving average, bias-corrected (as Adam's moments)."""
  out, avg = np.empty_like(losses), 0.0
  for i, loss in enumerate(losses):
    avg = decay * avg + (1 - decay) * loss
    out[i] = avg / (1 - decay ** (i + 1))
  return out


def plot_losses(curves: dict, path: pathlib.Path) -> bool:
  """Writes the smoothed training losses to a PNG; False without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print(f"matplotlib is not installed: skipped the loss plot ({path}); "
          "pip install 'jaxrnn[plot]' to get it")
    return False
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, losses in curves.items():
    ax.plot(np.arange(1, len(losses) + 1), smooth(losses), label=name)
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("cross-entropy per character")
  ax.set_title("Restoring capitalisation: training loss (moving average)")
  ax.legend()
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote the loss curves to {path}")
  return True


# ---------------------------------------------------------------------------


def parse_config(parser, argv, full, quick, positive=("steps", "hidden")):
  """The config the command line asks for. The options' defaults are the full
  run's (``--help`` shows them); with ``--quick`` they are ``quick``'s, and
  options given on the command line still apply. Those named in
  ``positive`` must be positive integers."""
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**{name: getattr(quick, name) for name in vars(args) if name != "quick"})
    args = parser.parse_args(argv)
  given = {name: value for name, value in vars(args).items() if name != "quick"}
  for name in positive:
    if given[name] < 1:
      parser.error(f"--{name}: expected a positive integer, got {given[name]}")
  return dataclasses.replace(quick if args.quick else full, **given)


def parse_args(argv) -> Config:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=Config.steps, help="training steps per model")
  parser.add_argument("--hidden", type=int, default=Config.hidden,
                      help="hidden size of the unidirectional LSTM; the bidirectional one gets "
                      "the size per direction that matches its parameter count")
  parser.add_argument("--seed", type=int, default=Config.seed,
                      help="seed of the initialisation and batch order")
  parser.add_argument("--out", default=Config.out, help="where to write the loss plot")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests, under a minute (--steps {QUICK.steps} "
                      f"--hidden {QUICK.hidden}, embedding {QUICK.embed}, the first "
                      f"{QUICK.max_chars:,} characters); options given still apply")
  return parse_config(parser, argv, Config(), QUICK)


def main(argv=None) -> dict:
  """Runs the demo; returns the held-out metrics and losses of both models."""
  config = parse_args(argv)
  start = time.perf_counter()
  train_texts, held_texts = split_topics(config.held_out)
  train_pieces = take_prefix(
      [p for t in train_texts for p in paragraphs(t, config.max_length)], config.max_chars)
  held_pieces = take_prefix(
      [p for t in held_texts for p in paragraphs(t, config.max_length)],
      None if config.max_chars is None else config.max_chars // 4)
  train_examples = [encode(p) for p in train_pieces]
  held_examples = [encode(p) for p in held_pieces]
  held_upper = sum(int(u.sum()) for _, u in held_examples)
  print(f"train: {sum(map(len, train_pieces)):,} characters in {len(train_pieces):,} "
        f"paragraphs; held out: {sum(map(len, held_pieces)):,} characters "
        f"({held_upper:,} upper case) in {len(held_pieces):,} paragraphs from "
        f"{len(held_texts)} of {len(train_texts) + len(held_texts)} topics")

  sizes = {"unidirectional": config.hidden,
           "bidirectional": matched_hidden_size(config.hidden, config.embed)}
  results, curves, predictions = {}, {}, {}
  for n, kind in enumerate(KINDS):
    net = build(kind, sizes[kind])
    key = jax.random.fold_in(jax.random.key(config.seed), n)
    params = jax.jit(lambda k: init_params(net, k, config.embed))(key)  # one compile
    label = (f"LSTM({sizes[kind]})" if kind == "unidirectional"
             else f"LSTM({sizes[kind]})+LSTM({sizes[kind]})")
    t0 = time.perf_counter()
    params, losses = train(net, params, train_examples, config, f"{kind} {label}")
    seconds = time.perf_counter() - t0
    metrics, predictions[kind] = evaluate(net, params, held_examples, config)
    results[kind] = dict(metrics, label=label, params=count_params(net, config.embed),
                         hidden=sizes[kind], train_seconds=seconds,
                         last_loss=float(smooth(losses)[-1]))
    curves[f"{kind} {label}"] = losses

  print(f"\nheld-out upper-case characters, after {config.steps} steps each "
        f"(embedding {config.embed}, batch {config.batch_size}):")
  print(f"{'model':<16}{'LSTM':>20}{'params':>9}{'precision':>11}{'recall':>8}{'F1':>7}"
        f"{'train loss':>12}")
  for kind in KINDS:
    r = results[kind]
    print(f"{kind:<16}{r['label']:>20}{r['params']:>9,}{r['precision']:>11.3f}"
          f"{r['recall']:>8.3f}{r['f1']:>7.3f}{r['last_loss']:>12.4f}")
  print("(train loss: cross-entropy per character, moving average at the last step)")

  # A held-out piece of prose with a capital inside a word ("TypeError"), as
  # each model restores it.
  pick = next((i for i, p in enumerate(held_pieces) if len(p) >= 100 and "*" not in p
               and any(a.isalpha() and b.isupper() for a, b in zip(p, p[1:]))), 0)
  rows = [("input", held_pieces[pick].lower())]
  rows += [(kind, restore(held_pieces[pick], predictions[kind][pick])) for kind in KINDS]
  rows += [("original", held_pieces[pick])]
  print()
  for name, text in rows:
    print(f"{name + ':':<16}" + text.strip().replace("\n", "\n" + " " * 16))
  print()

  plotted = plot_losses(curves, pathlib.Path(config.out))
  total = time.perf_counter() - start
  trained = ", ".join(f"{k} trained in {results[k]['train_seconds']:.0f} s" for k in KINDS)
  print(f"total {total:.0f} s ({trained})")
  return {"results": results, "losses": curves, "plot": config.out if plotted else None,
          "seconds": total}


if __name__ == "__main__":
  main(sys.argv[1:])
