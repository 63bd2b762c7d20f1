"""Sequence to sequence with attention: dates in many formats to ISO form.

Dates between 1950 and 2049, written by Python's ``datetime`` and
``calendar`` in 14 formats ("3 March 1997", "March 3, 1997", "03/03/97",
"1997.03.03", "Mon 3 Mar 1997", "third of march 1997", ...) and in upper,
lower or their own case, are translated character by character into ISO
form ("1997-03-03"). The dates are split into training and held-out dates:
no held-out date is ever seen in training, in any format.

The model (Bahdanau et al. 2015):

- encoder: a character embedding, then
  ``jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H))`` over the padded
  characters with each example's ``length``;
- decoder: a causal layer, ``jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H_dec)))``,
  stepped one token at a time through `jaxrnn.as_cell`;
- additive attention: before decoder step ``t``, the previous decoder
  output ``s_{t-1}`` scores every encoder output ``h_j`` by
  ``e_tj = v . tanh(W s_{t-1} + U h_j)``, masked beyond the input's length;
  the context is ``c_t = sum_j softmax(e_t)_j h_j``;
- the decoder's input at step ``t`` is ``[embedding of y_{t-1}; c_t]``, and
  the logits of ``y_t`` are a linear map of ``[s_t; c_t]``.

One function ``step(state, token) -> (state, logits)`` is the whole
decoder. Training runs it under ``lax.scan`` over the target with teacher
forcing (vmapped over a minibatch, optax Adam); decoding runs it greedily
under ``lax.scan`` and inside `jaxrnn.beam_search`, each vmapped over the
held-out examples. The script prints the held-out exact match (the whole
ISO date right) of both, and the training time.

Run: ``python examples/dates_seq2seq.py [--steps N] [--hidden H]
[--decoder-hidden H] [--beam-size K] [--seed S] [--quick]``
"""

import argparse
import calendar
import dataclasses
import datetime
import functools
import pathlib
import string
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn

# The option parsing and the progress bar are capitalise.py's, next to this file.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import capitalise  # noqa: E402

FIRST_DAY, LAST_DAY = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)

# Input characters: 0 pads.
CHARS = string.ascii_letters + string.digits + " ,./-'"
CHAR_IDS = {c: i + 1 for i, c in enumerate(CHARS)}
INPUT_VOCAB = len(CHARS) + 1
# Output tokens: the ISO characters, then END and the START fed first.
ISO_CHARS = "0123456789-"
END, START = len(ISO_CHARS), len(ISO_CHARS) + 1
OUTPUT_VOCAB = len(ISO_CHARS) + 2  # START is never a target, but has an embedding
TARGET_LENGTH = len("1997-03-03") + 1  # the characters, then END

ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth "
    "twenty-first twenty-second twenty-third twenty-fourth twenty-fifth twenty-sixth "
    "twenty-seventh twenty-eighth twenty-ninth thirtieth thirty-first").split()


def _suffix(day: int) -> str:
  return "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _month(d):
  return calendar.month_name[d.month]


def _mon(d):
  return calendar.month_abbr[d.month]


# Two-digit years read 50-99 as 19xx and 00-49 as 20xx (the range of the
# dates); slashes with numbers are month first, dots day first.
FORMATS = (
    lambda d: f"{d.day} {_month(d)} {d.year}",                                 # 3 March 1997
    lambda d: f"{_month(d)} {d.day}, {d.year}",                                # March 3, 1997
    lambda d: d.strftime("%m/%d/%y"),                                          # 03/03/97
    lambda d: d.strftime("%Y.%m.%d"),                                          # 1997.03.03
    lambda d: f"{calendar.day_abbr[d.weekday()]} {d.day} {_mon(d)} {d.year}",  # Mon 3 Mar 1997
    lambda d: f"{ORDINALS[d.day - 1]} of {_month(d).lower()} {d.year}",        # third of march 1997
    lambda d: f"{d.month}/{d.day}/{d.year}",                                   # 3/3/1997
    lambda d: d.strftime("%d.%m.%Y"),                                          # 03.03.1997
    lambda d: f"{calendar.day_name[d.weekday()]}, {_month(d)} {d.day}, {d.year}",
    lambda d: f"{d.day}{_suffix(d.day)} {_month(d)} {d.year}",                 # 3rd March 1997
    lambda d: f"{d.day}-{_mon(d)}-{d.year}",                                   # 3-Mar-1997
    lambda d: d.strftime("%Y%m%d"),                                            # 19970303
    lambda d: f"{_mon(d)} {d.day} '{d.strftime('%y')}",                        # Mar 3 '97
    lambda d: f"{d.year}/{d.month}/{d.day}",                                   # 1997/3/3
)
CASES = (lambda s: s, str.lower, str.upper)
MAX_INPUT = 32  # characters: "twenty-seventh of september 1997"


@dataclasses.dataclass(frozen=True)
class Config:
  steps: int = 1500
  hidden: int = 64             # per direction of the encoder
  decoder_hidden: int = 128
  embed: int = 32              # input characters and output tokens
  attention: int = 64          # size of the additive attention's hidden layer
  batch_size: int = 64
  learning_rate: float = 3e-3
  held_out: float = 0.1        # share of the dates held out
  train_examples: int = 50_000
  eval_examples: int = 1_000
  beam_size: int = 4
  seed: int = 0
  quick: bool = False


QUICK = Config(steps=30, hidden=16, decoder_hidden=16, embed=8, attention=8,
               batch_size=16, train_examples=2_000, eval_examples=64, beam_size=2,
               quick=True)
QUICK_NOTE = ("--quick: a check that the script runs, not a result; 30 steps of a tiny "
              "model get few or no dates right")


# ---------------------------------------------------------------------------
# Data


def split_dates(held_out: float, seed: int) -> tuple[list, list]:
  """Every date of the range, shuffled and split into (train, held-out)."""
  days = (LAST_DAY - FIRST_DAY).days + 1
  order = np.random.default_rng(seed).permutation(days)
  dates = [FIRST_DAY + datetime.timedelta(days=int(k)) for k in order]
  cut = int(round(held_out * days))
  return dates[cut:], dates[:cut]


def write(date: datetime.date, rng: np.random.Generator) -> str:
  """``date`` in a random format and case."""
  text = FORMATS[rng.integers(len(FORMATS))](date)
  return CASES[rng.integers(len(CASES))](text)


def make_examples(dates: list, count: int, rng: np.random.Generator) -> dict:
  """``count`` examples of random dates from ``dates``: the texts, the padded
  character ids ``(N, MAX_INPUT)``, their lengths and the targets
  ``(N, TARGET_LENGTH)`` (the ISO characters, then END)."""
  picked = [dates[k] for k in rng.integers(len(dates), size=count)]
  texts = [write(d, rng) for d in picked]
  chars, length = jaxrnn.pad_sequences([[CHAR_IDS[c] for c in t] for t in texts],
                                       max_length=MAX_INPUT, dtype=np.int32)
  isos = [d.isoformat() for d in picked]
  targets = np.array([[ISO_CHARS.index(c) for c in iso] + [END] for iso in isos], np.int32)
  return {"texts": texts, "isos": isos, "chars": chars,
          "length": length.astype(np.int32), "targets": targets}


def to_text(tokens) -> str:
  """Output tokens up to the first END (or START) as a string."""
  out = []
  for token in np.asarray(tokens).tolist():
    if token >= END:
      break
    out.append(ISO_CHARS[token])
  return "".join(out)


# ---------------------------------------------------------------------------
# Model


@dataclasses.dataclass(frozen=True)
class Model:
  """The encoder layer, the decoder as a cell, and the sizes."""
  encoder: jaxrnn.Layer
  decoder: jaxrnn.Cell
  config: Config

  def init_params(self, key) -> dict:
    c = self.config
    keys = jax.random.split(key, 8)
    dense = jax.nn.initializers.glorot_uniform()
    enc_size = 2 * c.hidden
    return {
        "embed_in": 0.3 * jax.random.normal(keys[0], (INPUT_VOCAB, c.embed)),
        "encoder": self.encoder.init_params(keys[1], c.embed),
        "embed_out": 0.3 * jax.random.normal(keys[2], (OUTPUT_VOCAB, c.embed)),
        "decoder": self.decoder.init_params(keys[3], c.embed + enc_size),
        "W": dense(keys[4], (c.decoder_hidden, c.attention)),  # queries
        "U": dense(keys[5], (enc_size, c.attention)),          # keys
        "v": dense(keys[6], (c.attention, 1))[:, 0],
        "W_out": dense(keys[7], (c.decoder_hidden + enc_size, OUTPUT_VOCAB)),
        "b_out": jnp.zeros(OUTPUT_VOCAB),
    }

  def encode(self, params, chars, length):
    """One example: ``chars (T,)`` -> (encoder outputs ``(T, 2H)``, their keys ``(T, A)``)."""
    outputs, _ = self.encoder.apply(params["encoder"], params["embed_in"][chars], length=length)
    # U h_j does not depend on the decoder step: computed once per example.
    return outputs, outputs @ params["U"]

  def initial_state(self):
    """The decoder's state before the first token: its carry and ``s_0 = 0``."""
    return self.decoder.init_carry(), jnp.zeros(self.config.decoder_hidden)

  def make_step(self, params, outputs, keys, length):
    """``step(state, token) -> (state, logits (V,))`` for one example's encoding."""
    valid = jnp.arange(outputs.shape[0]) < length

    def step(state, token):
      carry, s_tm1 = state
      scores = jnp.tanh(keys + (s_tm1 @ params["W"])[None, :]) @ params["v"]  # e_tj
      weights = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf))
      context = weights @ outputs                                               # c_t
      x_t = jnp.concatenate([params["embed_out"][token], context])
      carry, s_t = self.decoder.cell_apply(params["decoder"], carry, x_t)
      logits = jnp.concatenate([s_t, context]) @ params["W_out"] + params["b_out"]
      return (carry, s_t), logits

    return step

  def teacher_forced_logits(self, params, chars, length, targets):
    """One example's logits ``(TARGET_LENGTH, V)`` with the true previous tokens fed."""
    step = self.make_step(params, *self.encode(params, chars, length), length)
    previous = jnp.concatenate([jnp.array([START], jnp.int32), targets[:-1]])
    _, logits = jax.lax.scan(step, self.initial_state(), previous)
    return logits

  def greedy(self, params, chars, length):
    """One example's argmax decoding: ``(TARGET_LENGTH,)`` tokens."""
    step = self.make_step(params, *self.encode(params, chars, length), length)

    def body(state_token, _):
      state, token = state_token
      state, logits = step(state, token)
      token = jnp.argmax(logits).astype(jnp.int32)
      return (state, token), token

    _, tokens = jax.lax.scan(body, (self.initial_state(), jnp.int32(START)), None,
                             length=TARGET_LENGTH)
    return tokens

  def beam(self, params, chars, length, beam_size):
    """One example's `jaxrnn.beam_search`: the best hypothesis ``(TARGET_LENGTH,)``."""
    step = self.make_step(params, *self.encode(params, chars, length), length)

    def log_probs_step(state, token):
      state, logits = step(state, token)
      return state, jax.nn.log_softmax(logits)

    tokens, _ = jaxrnn.beam_search(log_probs_step, self.initial_state(), START,
                                   beam_size=beam_size, max_length=TARGET_LENGTH,
                                   end_token=END)
    return tokens[0]


def build(config: Config) -> Model:
  encoder = jaxrnn.bidirectional(jaxrnn.lstm(config.hidden), jaxrnn.lstm(config.hidden))
  decoder = jaxrnn.as_cell(jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(config.decoder_hidden))))
  return Model(encoder, decoder, config)


# ---------------------------------------------------------------------------
# Training and evaluation


def train(model: Model, params, data: dict, config: Config):
  """Adam on random minibatches with teacher forcing; returns (params,
  losses per step, compile seconds)."""
  schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
  logits_fn = jax.vmap(model.teacher_forced_logits, in_axes=(None, 0, 0, 0))
  chars, length, targets = (jnp.asarray(data[k]) for k in ("chars", "length", "targets"))

  def loss_fn(params, chars, length, targets):
    logits = logits_fn(params, chars, length, targets)
    return jnp.mean(jaxrnn.per_step_cross_entropy(logits, targets))

  @jax.jit
  def train_step(params, opt_state, key):
    picked = jax.random.randint(key, (config.batch_size,), 0, chars.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, chars[picked], length[picked],
                                              targets[picked])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  key = jax.random.key(config.seed + 1)
  losses = []
  progress = capitalise.Progress(config.steps, "seq2seq")
  for step in range(config.steps):
    t0 = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, jax.random.fold_in(key, step))
    losses.append(float(loss))
    if step == 0:
      compile_s = time.perf_counter() - t0
    progress.update(losses[-1])
  progress.close()
  return params, np.array(losses), compile_s


def decode_all(model: Model, params, data: dict, beam_size: int):
  """Greedy and beam-search decodings of every example, as strings."""
  greedy = jax.jit(jax.vmap(model.greedy, in_axes=(None, 0, 0)))
  beam = jax.jit(jax.vmap(functools.partial(model.beam, beam_size=beam_size),
                          in_axes=(None, 0, 0)))
  chars, length = jnp.asarray(data["chars"]), jnp.asarray(data["length"])
  return ([to_text(t) for t in greedy(params, chars, length)],
          [to_text(t) for t in beam(params, chars, length)])


def exact_match(predicted: list, isos: list) -> float:
  return float(np.mean([p == t for p, t in zip(predicted, isos)]))


def parse_args(argv) -> Config:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=Config.steps, help="training steps")
  parser.add_argument("--hidden", type=int, default=Config.hidden,
                      help="hidden size of each encoder direction")
  parser.add_argument("--decoder-hidden", type=int, default=Config.decoder_hidden,
                      help="hidden size of the decoder LSTM")
  parser.add_argument("--beam-size", type=int, default=Config.beam_size,
                      help="hypotheses kept by beam search")
  parser.add_argument("--seed", type=int, default=Config.seed,
                      help="seed of the date split, the examples, the weights and the batches")
  parser.add_argument("--quick", action="store_true",
                      help=f"a tiny run for tests, in seconds (--steps {QUICK.steps} --hidden "
                      f"{QUICK.hidden} --decoder-hidden {QUICK.decoder_hidden}, "
                      f"{QUICK.eval_examples} held-out examples); options given still apply. "
                      "It checks that the script runs; its exact match is no result")
  return capitalise.parse_config(parser, argv, Config(), QUICK,
                                 positive=("steps", "hidden", "decoder_hidden", "beam_size"))


def main(argv=None) -> dict:
  """Trains, decodes the held-out dates; returns exact match and times."""
  config = parse_args(argv)
  start = time.perf_counter()
  train_dates, held_dates = split_dates(config.held_out, config.seed)
  rng = np.random.default_rng(config.seed)
  train_data = make_examples(train_dates, config.train_examples, rng)
  held_data = make_examples(held_dates, config.eval_examples, rng)
  print(f"dates {FIRST_DAY} to {LAST_DAY}: {len(train_dates):,} for training "
        f"({config.train_examples:,} examples), {len(held_dates):,} held out "
        f"({config.eval_examples:,} examples); {len(FORMATS)} formats x {len(CASES)} cases")

  model = build(config)
  params = jax.jit(model.init_params)(jax.random.key(config.seed))
  num_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
  print(f"encoder bidirectional LSTM({config.hidden})x2, decoder LSTM({config.decoder_hidden}) "
        f"with additive attention ({config.attention}): {num_params:,} parameters")
  t0 = time.perf_counter()
  params, losses, compile_s = train(model, params, train_data, config)
  train_s = time.perf_counter() - t0
  print(f"trained {config.steps} steps of {config.batch_size} in {train_s:.0f} s "
        f"(compile {compile_s:.1f} s); last loss {losses[-1]:.4f}")

  t0 = time.perf_counter()
  greedy, beam = decode_all(model, params, held_data, config.beam_size)
  decode_s = time.perf_counter() - t0
  isos = held_data["isos"]
  greedy_match, beam_match = exact_match(greedy, isos), exact_match(beam, isos)
  if config.quick:
    print(QUICK_NOTE)
  print(f"held-out exact match ({len(isos):,} dates never seen in training):")
  print(f"  greedy:            {100 * greedy_match:6.2f}%")
  print(f"  beam search (k={config.beam_size}): {100 * beam_match:6.2f}%")
  print(f"(decoding both took {decode_s:.1f} s, compilation included)")
  differ = sum(g != b for g, b in zip(greedy, beam))
  wrong = [k for k, iso in enumerate(isos) if iso != greedy[k] or iso != beam[k]]
  print(f"greedy and beam search differ on {differ} dates; wrong by either: {len(wrong)}")
  if not wrong:
    print("for instance:")
  for k in wrong[:5] if wrong else range(min(3, len(isos))):
    print(f"  {held_data['texts'][k]!r:34} -> greedy {greedy[k]!r:14} beam {beam[k]!r:14} "
          f"true {isos[k]!r}")
  total = time.perf_counter() - start
  print(f"total {total:.0f} s")
  return {"greedy_exact_match": greedy_match, "beam_exact_match": beam_match,
          "losses": losses, "train_seconds": train_s, "compile_seconds": compile_s,
          "decode_seconds": decode_s, "seconds": total, "params": num_params,
          "greedy_beam_differ": differ,
          "greedy": greedy, "beam": beam, "targets": isos, "texts": held_data["texts"]}


if __name__ == "__main__":
  main(sys.argv[1:])
