"""A language model for serving: stepped one character at a time, and exported.

Trains ``jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.readout(V))`` on a
32-dimensional character embedding to predict the next character of
Python's own documentation, with ``char_lm.py``'s data and training (the
``pydoc_data`` topics split by topic into train and held-out text; truncated
BPTT over parallel streams with `jaxrnn.tbptt`). The held-out text is read
topic by topic, each topic from its start, padded to the longest, with
per-topic lengths. Then what a deployment does with the trained network:

- **streaming**: `jaxrnn.as_cell` turns the network into a cell that takes
  one character and the carry; stepped under ``jax.lax.scan`` through held-out
  text it gives the whole-sequence logits, and it samples text with a
  temperature, each sampled character fed back in;
- **export**: the jitted, vmapped forward pass (per-step log-probabilities)
  is exported with ``jax.export``, with symbolic batch and time sizes, for
  cpu, cuda and tpu; its serialized bytes, the params (``np.savez`` of the
  leaves), the held-out batch and a small serving script go to ``--out``,
  and the script runs in a fresh Python process that imports jaxrnn,
  deserializes the export and computes the held-out bits per character,
  which must equal this process's figure.

Run: ``python examples/streaming_lm.py [--steps N] [--hidden H] [--prompt TEXT]
[--temperature T] [--seed S] [--out PATH] [--quick]``
"""

import argparse
import dataclasses
import inspect
import json
import math
import pathlib
import subprocess
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn

# The text, vocabulary and training are char_lm.py's, next to this file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import char_lm  # noqa: E402

PLATFORMS = ("cpu", "cuda", "tpu")
STREAM_CHECK = 500  # held-out characters stepped through as_cell and compared


@dataclasses.dataclass(frozen=True)
class Config(char_lm.Config):
  steps: int = 800
  hidden: int = 256
  layers: int = 1
  cell: str = "lstm"
  learning_rate: float = 1e-2  # held-out bpc after 800 steps: 1.90; char_lm's 3e-3: 2.25
  eval_chars: Optional[int] = None  # cut each held-out topic to this many characters
  out: str = "build/streaming_lm"
  quick: bool = False


QUICK = Config(steps=20, hidden=32, streams=8, chunk=32, max_chars=20_000, eval_chars=300,
               sample_length=60, quick=True)
QUICK_NOTE = (f"--quick: a check that the script runs, not a result; {QUICK.steps} steps of a "
              f"small model on {QUICK.max_chars:,} characters: its figures are not meaningful")


def held_out_batch(config: Config) -> tuple[np.ndarray, np.ndarray]:
  """The held-out topics as ``(ids (B, T), lengths (B,))``, padded with 0."""
  _, held = char_lm.capitalise.split_topics(config.held_out)
  topics = [char_lm.encode(text[:config.eval_chars]) for text in held]
  ids, lengths = jaxrnn.pad_sequences(topics)
  return np.asarray(ids, np.int32), np.asarray(lengths, np.int32)


def make_serve(net):
  """``serve(params, ids (B, T), lengths (B,)) -> (B, T, V)``: the log-probability
  of every next character, each sequence read from a fresh carry."""

  def serve(params, ids, lengths):
    def one(ids_b, length_b):
      logits, _ = net.apply(params["net"], params["embed"][ids_b], length=length_b)
      return jax.nn.log_softmax(logits)

    return jax.vmap(one)(ids, lengths)

  return serve


def bits_per_character(log_probs, ids, lengths):
  """Mean bits per character of ``ids[b, t + 1]`` given ``log_probs[b, t]``,
  over the ``lengths[b] - 1`` predictions of each sequence (float64)."""
  log_probs, ids, lengths = np.asarray(log_probs, np.float64), np.asarray(ids), np.asarray(lengths)
  picked = np.take_along_axis(log_probs[:, :-1], ids[:, 1:, None], axis=-1)[:, :, 0]
  valid = np.arange(ids.shape[1] - 1)[None, :] < lengths[:, None] - 1
  return float(-np.sum(picked, where=valid) / (np.sum(valid) * np.log(2)))


# The serving script, written beside the model: a fresh process runs it. It
# carries `bits_per_character` itself (that function's source is copied in),
# so both processes compute the figure alike.
SERVE_HEADER = '''"""Held-out bits per character of model.jax: ``python serve.py FOLDER``."""

import json
import pathlib
import sys

import jax
import numpy as np

import jaxrnn  # noqa: F401  registers jaxrnn's params types with jax.export


'''
SERVE_MAIN = '''

def main(folder):
  folder = pathlib.Path(folder)
  exported = jax.export.deserialize(bytearray((folder / "model.jax").read_bytes()))
  saved = np.load(folder / "params.npz")
  params_tree = exported.in_tree.children()[0].children()[0]  # ((params, ids, lengths), {})
  params = jax.tree_util.tree_unflatten(params_tree,
                                        [saved[f"p{i}"] for i in range(int(saved["n"]))])
  held = np.load(folder / "held_out.npz")
  log_probs = exported.call(params, held["ids"], held["lengths"])
  print(json.dumps({"bpc": bits_per_character(log_probs, held["ids"], held["lengths"]),
                    "backend": jax.default_backend()}))


if __name__ == "__main__":
  main(sys.argv[1])
'''


def make_sampler(net, length: int):
  """A jitted ``sample(params, key, prompt_ids, temperature) -> (length,) ids``,
  stepping the network one character at a time through `jaxrnn.as_cell`."""
  step = jaxrnn.as_cell(net)

  @jax.jit
  def sample(params, key, prompt_ids, temperature):
    read = lambda carry, token: step.cell_apply(params["net"], carry,  # noqa: E731
                                                params["embed"][token])
    carry, logits = jax.lax.scan(read, step.init_carry(), prompt_ids)

    def body(state, key_t):
      carry, logits_t = state
      token = jax.random.categorical(key_t, logits_t / temperature)
      return read(carry, token), token

    _, tokens = jax.lax.scan(body, (carry, logits[-1]), jax.random.split(key, length))
    return tokens

  return sample


def streamed_difference(net, params, ids) -> float:
  """Largest |difference| between the logits of ``ids`` stepped one at a time
  through `jaxrnn.as_cell` and those of one whole-sequence ``net.apply``."""
  step = jaxrnn.as_cell(net)

  @jax.jit
  def both(params, ids):
    xs = params["embed"][ids]
    _, streamed = jax.lax.scan(lambda c, x: step.cell_apply(params["net"], c, x),
                               step.init_carry(), xs)
    return jnp.max(jnp.abs(streamed - net.apply(params["net"], xs)[0]))

  return float(both(params, jnp.asarray(ids)))


def export_and_save(serve, params, held, folder: pathlib.Path) -> jax.export.Exported:
  """Exports ``serve`` with symbolic ``(b, t)`` for every platform and writes
  the model, the params, the held-out batch and the serving script."""
  b, t = jax.export.symbolic_shape("b, t")
  specs = (jax.eval_shape(lambda: params), jax.ShapeDtypeStruct((b, t), jnp.int32),
           jax.ShapeDtypeStruct((b,), jnp.int32))
  exported = jax.export.export(jax.jit(serve), platforms=PLATFORMS)(*specs)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "model.jax").write_bytes(exported.serialize())
  leaves = jax.tree_util.tree_leaves(params)
  np.savez(folder / "params.npz", n=len(leaves),
           **{f"p{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
  np.savez(folder / "held_out.npz", ids=held[0], lengths=held[1])
  (folder / "serve.py").write_text(
      SERVE_HEADER + inspect.getsource(bits_per_character) + SERVE_MAIN)
  return exported


def run_fresh_process(folder: pathlib.Path) -> dict:
  """Runs ``folder/serve.py`` in a new Python process; returns its JSON line."""
  done = subprocess.run([sys.executable, str(folder / "serve.py"), str(folder)],
                        capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"the serving process failed:\n{done.stderr}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv) -> Config:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=Config.steps, help="training steps")
  parser.add_argument("--hidden", type=int, default=Config.hidden, help="LSTM hidden size")
  parser.add_argument("--prompt", default=Config.prompt,
                      help="text the sample starts from (default: %(default)r)")
  parser.add_argument("--temperature", type=float, default=Config.temperature,
                      help="sampling temperature, > 0")
  parser.add_argument("--seed", type=int, default=Config.seed,
                      help="seed of the initialisation and the sample")
  parser.add_argument("--out", metavar="PATH", default=Config.out,
                      help="folder for the exported model, its params and the serving script")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests, seconds (--steps {QUICK.steps} --hidden "
                      f"{QUICK.hidden}, the first {QUICK.max_chars:,} training characters, "
                      f"held-out topics cut to {QUICK.eval_chars}); options given still "
                      "apply; its figures are not meaningful")
  config = char_lm.capitalise.parse_config(parser, argv, Config(), QUICK)
  if config.temperature <= 0:
    parser.error(f"--temperature: expected a positive number, got {config.temperature}")
  if config.prompt == "":
    parser.error("--prompt: expected at least one character")
  return config


def main(argv=None) -> dict:
  """Trains, streams, samples, exports and serves in a fresh process; returns
  the figures (bits per character in both processes) and the sample."""
  config = parse_args(argv)
  start = time.perf_counter()
  train_text, _ = char_lm.split_topics(config.held_out)
  if config.max_chars is not None:
    train_text = train_text[:config.max_chars]
  train_ids = char_lm.encode(train_text)
  held = held_out_batch(config)
  print(f"train: {len(train_ids):,} characters in {config.streams} streams, chunks of "
        f"{config.chunk}; held out: {len(held[1])} topics, {int(held[1].sum()):,} characters, "
        f"each read from its start")
  if config.quick:
    print(QUICK_NOTE)
  net = char_lm.build(config)
  key_init, key_sample = jax.random.split(jax.random.key(config.seed))
  params = jax.jit(lambda k: char_lm.init_params(net, k, config.embed))(key_init)
  serve = make_serve(net)
  serve_here = jax.jit(serve)
  held_bpc = lambda p: bits_per_character(serve_here(p, *held), *held)  # noqa: E731
  before = held_bpc(params)
  print(f"held-out bits per character before training: {before:.3f} "
        f"(uniform over {char_lm.VOCAB_SIZE} symbols: {math.log2(char_lm.VOCAB_SIZE):.3f})")
  t0 = time.perf_counter()
  params, train_bpc = char_lm.train(net, params, train_ids, config)
  train_s = time.perf_counter() - t0
  after = held_bpc(params)
  print(f"held-out bits per character after {config.steps} steps: {after:.4f} "
        f"(trained in {train_s:.0f} s)")

  # Streaming: one character at a time through as_cell.
  streamed = held[0][0, :min(STREAM_CHECK, int(held[1][0]))]
  difference = streamed_difference(net, params, streamed)
  print(f"\nstreaming: {len(streamed)} held-out characters stepped one at a time through "
        f"jaxrnn.as_cell; largest |difference| from the whole-sequence logits: {difference:.1e}")
  sample = make_sampler(net, config.sample_length)
  tokens = sample(params, key_sample, jnp.asarray(char_lm.encode(config.prompt)),
                  config.temperature)
  text = config.prompt + char_lm.decode(tokens)
  shown = "\n".join(line.rstrip() for line in text.split("\n"))  # no trailing blanks
  print(f"sample (temperature {config.temperature}):\n{shown}\n")

  # Export, then serve from the bytes in a fresh process.
  folder = pathlib.Path(config.out)
  t0 = time.perf_counter()
  exported = export_and_save(serve, params, held, folder)
  export_s = time.perf_counter() - t0
  size = (folder / "model.jax").stat().st_size
  print(f"exported for {', '.join(exported.platforms)} with input shapes "
        f"{', '.join(str(a.shape) for a in exported.in_avals[-2:])}: "
        f"{folder / 'model.jax'} ({size / 1024:.0f} KiB, {export_s:.1f} s)")
  t0 = time.perf_counter()
  fresh = run_fresh_process(folder)
  fresh_s = time.perf_counter() - t0
  print(f"held-out bits per character, this process:  {after:.4f}")
  print(f"held-out bits per character, fresh process: {fresh['bpc']:.4f} "
        f"({sys.executable} {folder / 'serve.py'} {folder}, {fresh['backend']}, "
        f"{fresh_s:.1f} s); |difference| {abs(fresh['bpc'] - after):.1e}")
  total = time.perf_counter() - start
  print(f"total {total:.0f} s")
  return {"bpc_before": before, "bpc_after": after, "bpc_fresh_process": fresh["bpc"],
          "stream_difference": difference, "train_bpc": train_bpc, "sample": text,
          "train_seconds": train_s, "seconds": total, "out": folder}


if __name__ == "__main__":
  main(sys.argv[1:])
