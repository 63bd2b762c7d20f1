"""Character-level language models, one per recurrence, at equal parameter counts.

Trains the same network around each cell, ``stack(rnn(cell(w)), rnn(cell(w)),
readout(V))`` on a ``w``-wide character embedding, for LSTM, GRU, sLSTM,
mLSTM, RG-LRU and Mamba, with ``w`` chosen per cell so that every model has
about the same number of parameters (``--params``). The text, the streams,
truncated BPTT and the optimiser are ``char_lm.py``'s (Python's pydoc topics,
split by topic into train and held-out text). For each model it reports the
held-out bits per character after training and the time of one training
step (a gradient and an Adam update on one chunk of every stream, the
median of ``--timing-repeats`` after compilation), as a Markdown table.

The cells run as layers of the same plain stack, with no residual
connections, normalisation or MLP blocks, so the comparison is of the
recurrences themselves, not of the architectures their papers wrap them in.

Run: ``python examples/recurrences_lm.py [--steps N] [--params P] [--cells
lstm gru ...] [--seed S] [--quick]``
"""

import argparse
import dataclasses
import math
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import capitalise  # noqa: E402
import char_lm  # noqa: E402

HEADS = 4  # heads of sLSTM, mLSTM and RG-LRU: widths are multiples of this
CELLS = {
    "lstm": lambda w: jaxrnn.lstm(w),
    "gru": lambda w: jaxrnn.gru(w),
    "slstm": lambda w: jaxrnn.slstm(w, num_heads=HEADS),
    "mlstm": lambda w: jaxrnn.mlstm(w, num_heads=HEADS),
    "rg_lru": lambda w: jaxrnn.rg_lru(w, num_heads=HEADS),
    "mamba": lambda w: jaxrnn.mamba(w),
}
NAMES = {"lstm": "LSTM", "gru": "GRU", "slstm": "sLSTM", "mlstm": "mLSTM",
         "rg_lru": "RG-LRU", "mamba": "Mamba"}


@dataclasses.dataclass(frozen=True)
class Config:
  steps: int = 600
  params: int = 400_000
  cells: tuple = tuple(CELLS)
  layers: int = 2
  streams: int = 32
  chunk: int = 64
  learning_rate: float = 3e-3
  held_out: float = 0.15
  max_chars: int = 0  # 0: the whole text
  eval_streams: int = 8
  timing_repeats: int = 10
  seed: int = 0


QUICK = Config(steps=10, params=20_000, streams=4, chunk=16, max_chars=8_000,
               timing_repeats=2)


def build(cell: str, width: int, layers: int) -> jaxrnn.Layer:
  rnns = [jaxrnn.rnn(CELLS[cell](width)) for _ in range(layers)]
  return jaxrnn.stack(*rnns, jaxrnn.readout(char_lm.VOCAB_SIZE))


def count_params(cell: str, width: int, layers: int) -> int:
  """The model's parameters, embedding included (shapes only: nothing runs)."""
  net = build(cell, width, layers)
  shapes = jax.eval_shape(lambda k: char_lm.init_params(net, k, width), jax.random.key(0))
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


def width_for(cell: str, budget: int, layers: int) -> int:
  """The multiple of `HEADS` whose model's parameter count is nearest ``budget``."""
  low, high = 1, 512  # in units of HEADS; the count grows with the width
  while high - low > 1:
    mid = (low + high) // 2
    low, high = (mid, high) if count_params(cell, mid * HEADS, layers) <= budget else (low, mid)
  return min((low * HEADS, high * HEADS),
             key=lambda w: abs(count_params(cell, w, layers) - budget))


def step_seconds(net, params, config: Config, ids: np.ndarray) -> float:
  """The median time of one training step (gradient and Adam update) on a
  ``(streams, chunk)`` batch, after compilation."""
  import optax
  optimizer = optax.adam(config.learning_rate)
  chunk = jnp.asarray(char_lm.streams(ids, config.streams)[:, :config.chunk + 1])
  carry = char_lm.batch_carry(net, config.streams)

  def loss(p):
    logits, _ = char_lm.apply(net, p, chunk[:, :-1], carry)
    return jnp.mean(jaxrnn.per_step_cross_entropy(logits, chunk[:, 1:]))

  @jax.jit
  def step(p, state):
    grads = jax.grad(loss)(p)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  state = optimizer.init(params)
  jax.block_until_ready(step(params, state))
  times = []
  for _ in range(config.timing_repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, state))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run_one(cell: str, config: Config, train_ids, held_ids) -> dict:
  width = width_for(cell, config.params, config.layers)
  net = build(cell, width, config.layers)
  lm_config = char_lm.Config(steps=config.steps, hidden=width, layers=config.layers,
                             cell=cell, embed=width, streams=config.streams,
                             chunk=config.chunk, learning_rate=config.learning_rate)
  params = jax.jit(lambda k: char_lm.init_params(net, k, width))(jax.random.key(config.seed))
  seconds = step_seconds(net, params, config, train_ids)
  params, _ = char_lm.train(net, params, train_ids, lm_config)
  bpc = char_lm.make_bits_per_character(net)(params, held_ids)
  return {"cell": cell, "width": width, "params": count_params(cell, width, config.layers),
          "bpc": bpc, "step_ms": 1e3 * seconds}


def table(rows: list) -> str:
  lines = ["| cell | width | parameters | held-out bits per character | step time (ms) |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {NAMES[r['cell']]} | {r['width']} | {r['params']:,} | {r['bpc']:.3f} "
                 f"| {r['step_ms']:.1f} |")
  return "\n".join(lines)


def parse_args(argv) -> Config:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=Config.steps, help="training steps per model")
  parser.add_argument("--params", type=int, default=Config.params,
                      help="the parameter count every model is sized to")
  parser.add_argument("--cells", nargs="+", choices=tuple(CELLS), default=list(Config.cells),
                      help="the cells to compare")
  parser.add_argument("--seed", type=int, default=Config.seed, help="seed of the initialisation")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests (--steps {QUICK.steps} --params "
                      f"{QUICK.params:,}, the first {QUICK.max_chars:,} characters); "
                      "options given still apply")
  config = capitalise.parse_config(parser, argv, Config(), QUICK, positive=("steps", "params"))
  return dataclasses.replace(config, cells=tuple(config.cells))


def main(argv=None) -> list:
  """Trains and measures every model; returns one row per cell."""
  config = parse_args(argv)
  train_text, held_text = char_lm.split_topics(config.held_out)
  if config.max_chars:
    train_text, held_text = train_text[:config.max_chars], held_text[:config.max_chars // 4]
  train_ids = char_lm.encode(train_text)
  held_ids = char_lm.streams(char_lm.encode(held_text), config.eval_streams)
  print(f"train: {len(train_ids):,} characters; held out: {held_ids.size:,}; "
        f"{config.steps} steps of {config.streams} streams x {config.chunk} characters; "
        f"about {config.params:,} parameters per model; {jax.devices()[0].platform}, "
        f"{jax.device_count()} device(s)")
  rows = []
  for cell in config.cells:
    rows.append(run_one(cell, config, train_ids, held_ids))
    print(f"{NAMES[cell]}: {rows[-1]['bpc']:.3f} bits per character, "
          f"{rows[-1]['step_ms']:.1f} ms per step", flush=True)
  print("\n" + table(rows))
  return rows


if __name__ == "__main__":
  main(sys.argv[1:])
