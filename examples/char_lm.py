"""A character-level language model: stacked GRUs, truncated BPTT, sampling.

Trains ``jaxrnn.stack(rnn(gru(H)), rnn(gru(H)), readout(V))`` (or LSTMs) to
predict the next character of Python's own documentation (the ``pydoc_data``
topics, split by topic into train and held-out text as in ``capitalise.py``).
The training text is cut into parallel streams that are read chunk by chunk
(`jaxrnn.split_chunks`); `jaxrnn.tbptt` takes one optimizer step per chunk,
hands the carry at the end of one chunk to the next and stops gradients at
chunk boundaries (truncated backpropagation through time), and its ``reset``
restarts the carries when the streams wrap around. It prints the held-out
bits per character before and after training (`jaxrnn.language_model_loss`),
then samples text from the model with a jitted loop that feeds each sampled
character back in through ``layer.apply`` with the carry.

Run: ``python examples/char_lm.py [--steps N] [--hidden H] [--cell gru|lstm]
[--prompt TEXT] [--temperature T] [--seed S] [--quick]``
"""

import argparse
import dataclasses
import functools
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

# The data split and the progress bar are capitalise.py's, next to this file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import capitalise  # noqa: E402

Progress = functools.partial(capitalise.Progress, metric="bpc", digits=3)

UNK = 0  # any character outside CHARS
CHARS = "".join(c for c in string.printable if c not in "\r\x0b\x0c")
CHAR_IDS = {c: i + 1 for i, c in enumerate(CHARS)}
VOCAB_SIZE = len(CHARS) + 1
CHUNKS_PER_CALL = 10  # training steps per jitted call (one progress update)


@dataclasses.dataclass(frozen=True)
class Config:
  steps: int = 600
  hidden: int = 256
  layers: int = 2
  cell: str = "gru"
  embed: int = 32
  streams: int = 32            # parallel streams per batch
  chunk: int = 64              # steps between truncations
  learning_rate: float = 3e-3
  held_out: float = 0.15
  max_chars: Optional[int] = None  # train on a prefix of this many characters
  eval_streams: int = 8
  prompt: str = "The "
  temperature: float = 0.7
  sample_length: int = 300
  seed: int = 0


QUICK = Config(steps=30, hidden=32, streams=8, chunk=32, max_chars=20_000,
               sample_length=60)


def split_topics(held_out: float) -> tuple[str, str]:
  """The pydoc topics joined into (train, held-out) text, split as in capitalise.py."""
  train, held = capitalise.split_topics(held_out)
  return "\n\n".join(train), "\n\n".join(held)


def encode(text: str) -> np.ndarray:
  return np.array([CHAR_IDS.get(c, UNK) for c in text], np.int32)


def decode(ids) -> str:
  return "".join(CHARS[i - 1] if i > 0 else "?" for i in np.asarray(ids).tolist())


def streams(ids: np.ndarray, num_streams: int) -> np.ndarray:
  """``(N,)`` -> ``(num_streams, N // num_streams)``: consecutive slices of the text."""
  per_stream = ids.shape[0] // num_streams
  return ids[:num_streams * per_stream].reshape(num_streams, per_stream)


def build(config: Config) -> jaxrnn.Layer:
  make_cell = {"gru": jaxrnn.gru, "lstm": jaxrnn.lstm}[config.cell]
  layers = [jaxrnn.rnn(make_cell(config.hidden)) for _ in range(config.layers)]
  return jaxrnn.stack(*layers, jaxrnn.readout(VOCAB_SIZE))


def init_params(net: jaxrnn.Layer, key, embed_size: int) -> dict:
  k_embed, k_net = jax.random.split(key)
  return {"embed": 0.3 * jax.random.normal(k_embed, (VOCAB_SIZE, embed_size)),
          "net": net.init_params(k_net, embed_size)}


def apply(net, params, ids, carry):
  """``ids: (B, T)`` and a batch of carries -> (logits ``(B, T, V)``, carries)."""
  run = lambda xs, c: net.apply(params["net"], xs, carry=c)  # noqa: E731
  return jax.vmap(run)(params["embed"][ids], carry)


def batch_carry(net, batch_size: int):
  """Zero carries for ``batch_size`` streams (the leading axis of every leaf)."""
  return jax.tree_util.tree_map(
      lambda c: jnp.zeros((batch_size,) + c.shape, c.dtype), net.init_carry())


def make_bits_per_character(net):
  """A jitted ``bpc(params, ids: (B, T)) -> float``: each stream in one pass."""

  @jax.jit
  def nats(params, ids):
    logits, _ = apply(net, params, ids, batch_carry(net, ids.shape[0]))
    return jnp.sum(jaxrnn.language_model_loss(logits, ids, reduction="sum"))

  def bpc(params, ids):
    pairs = ids.shape[0] * (ids.shape[1] - 1)  # logits[t] predict ids[t + 1]
    return float(nats(params, jnp.asarray(ids))) / (pairs * math.log(2))

  return bpc


def make_sampler(net, length: int):
  """A jitted ``sample(params, key, prompt_ids, temperature) -> (length,) ids``."""

  @jax.jit
  def sample(params, key, prompt_ids, temperature):
    logits, carry = net.apply(params["net"], params["embed"][prompt_ids])

    def step(state, key_t):
      carry, logits_t = state
      token = jax.random.categorical(key_t, logits_t / temperature)
      logits, carry = net.apply(params["net"], params["embed"][token][None], carry=carry)
      return (carry, logits[0]), token

    _, tokens = jax.lax.scan(step, (carry, logits[-1]), jax.random.split(key, length))
    return tokens

  return sample


def train(net, params, ids: np.ndarray, config: Config):
  """Truncated BPTT over parallel streams; returns (params, bits per character per step).

  One step is one chunk of ``config.chunk`` characters in every stream: a
  gradient over that chunk and one Adam update. `jaxrnn.tbptt` runs
  ``CHUNKS_PER_CALL`` such steps in one jitted scan (``config.steps`` is
  rounded up to a multiple); after the last chunk of the text, the streams
  start again from the beginning with fresh carries (``reset``).
  """
  calls = math.ceil(config.steps / CHUNKS_PER_CALL)
  total = calls * CHUNKS_PER_CALL
  schedule = optax.cosine_decay_schedule(config.learning_rate, total, alpha=0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))

  def loss_fn(params, carry, chunk):
    inputs, targets = chunk  # (B, L) each: targets are the next characters
    logits, carry = apply(net, params, inputs, carry)
    return jnp.mean(jaxrnn.per_step_cross_entropy(logits, targets)), carry

  run = jax.jit(jaxrnn.tbptt(loss_fn, optimizer))
  data = streams(ids, config.streams)
  inputs, targets = (np.asarray(a) for a in jaxrnn.split_chunks(
      (data[:, :-1], data[:, 1:]), config.chunk))
  num_chunks = (data.shape[1] - 1) // config.chunk  # full chunks: the last may be padded
  if num_chunks == 0:
    raise ValueError(f"the training text is too short for {config.streams} streams "
                     f"of at least {config.chunk + 1} characters")
  order = np.arange(total) % num_chunks  # the chunk of every step
  reset = np.repeat((order == 0)[:, None], config.streams, axis=1)  # (steps, B)

  opt_state = optimizer.init(params)
  carry = batch_carry(net, config.streams)
  bpc = []
  progress = Progress(total, f"{config.layers}-layer {config.cell.upper()}({config.hidden})")
  for k in range(calls):
    steps = slice(k * CHUNKS_PER_CALL, (k + 1) * CHUNKS_PER_CALL)
    chunks = (inputs[order[steps]], targets[order[steps]])
    params, opt_state, carry, losses = run(params, opt_state, carry, chunks,
                                           reset[steps])
    bpc.extend(np.asarray(losses) / math.log(2))
    progress.update(bpc[-1], CHUNKS_PER_CALL)
  progress.close()
  return params, np.array(bpc)


def parse_args(argv) -> Config:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=Config.steps, help="training steps")
  parser.add_argument("--hidden", type=int, default=Config.hidden, help="hidden size per layer")
  parser.add_argument("--cell", choices=("gru", "lstm"), default=Config.cell, help="cell")
  parser.add_argument("--prompt", default=Config.prompt,
                      help="text the sample starts from (default: %(default)r)")
  parser.add_argument("--temperature", type=float, default=Config.temperature,
                      help="sampling temperature, > 0")
  parser.add_argument("--seed", type=int, default=Config.seed,
                      help="seed of the initialisation and the sample")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests, under a minute (--steps {QUICK.steps} "
                      f"--hidden {QUICK.hidden}, the first {QUICK.max_chars:,} characters); "
                      "options given still apply")
  config = capitalise.parse_config(parser, argv, Config(), QUICK)
  if config.temperature <= 0:
    parser.error(f"--temperature: expected a positive number, got {config.temperature}")
  if config.prompt == "":
    parser.error("--prompt: expected at least one character")
  return config


def main(argv=None) -> dict:
  """Trains, evaluates and samples; returns bits per character and the sample."""
  config = parse_args(argv)
  start = time.perf_counter()
  train_text, held_text = split_topics(config.held_out)
  if config.max_chars is not None:
    train_text, held_text = train_text[:config.max_chars], held_text[:config.max_chars // 4]
  train_ids = encode(train_text)
  held_ids = streams(encode(held_text), config.eval_streams)
  print(f"train: {len(train_ids):,} characters in {config.streams} streams, chunks of "
        f"{config.chunk}; held out: {held_ids.size:,} characters in {config.eval_streams} streams")

  net = build(config)
  key_init, key_sample = jax.random.split(jax.random.key(config.seed))
  params = jax.jit(lambda k: init_params(net, k, config.embed))(key_init)
  bits_per_character = make_bits_per_character(net)
  before = bits_per_character(params, held_ids)
  print(f"held-out bits per character before training: {before:.3f} "
        f"(uniform over {VOCAB_SIZE} symbols: {math.log2(VOCAB_SIZE):.3f})")
  t0 = time.perf_counter()
  params, train_bpc = train(net, params, train_ids, config)
  seconds = time.perf_counter() - t0
  after = bits_per_character(params, held_ids)
  print(f"held-out bits per character after {config.steps} steps: {after:.3f} "
        f"(trained in {seconds:.0f} s)")

  sample = make_sampler(net, config.sample_length)
  tokens = sample(params, key_sample, jnp.asarray(encode(config.prompt)), config.temperature)
  text = config.prompt + decode(tokens)
  shown = "\n".join(line.rstrip() for line in text.split("\n"))  # no trailing blanks
  print(f"\nsample (temperature {config.temperature}):\n{shown}\n")
  total = time.perf_counter() - start
  print(f"total {total:.0f} s")
  return {"bpc_before": before, "bpc_after": after, "train_bpc": train_bpc,
          "sample": text, "seconds": total}


if __name__ == "__main__":
  main(sys.argv[1:])
