"""Restores capitalisation with a Flax linen model around a jaxrnn layer.

The task and data are those of the demo (``examples/capitalise.py``): the
documentation shipped with Python, lower-cased; the model labels each
character as upper case or not. Here the model is a ``flax.linen.Module``:
``nn.Embed``, then `jaxrnn.flax.RNN` over a bidirectional LSTM (batch-first,
``seq_lengths`` as ``flax.linen.RNN``), then ``nn.Dense(2)``. Its params
live under ``variables["params"]``; the jaxrnn layer's own params pytree is
``variables["params"]["RNN_0"]["layer"]``.

Batches are padded to a multiple of 64 steps
(``jaxrnn.pad_sequences(..., pad_to_multiple=64)``), so the jitted training
step compiles once per padded length (twice here), not once per batch.

Run: ``python examples/flax_linen.py [--steps N] [--hidden H] [--seed S]``
(needs ``pip install 'jaxrnn[flax]' optax``).
"""

import argparse
import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
import jaxrnn.flax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import capitalise  # noqa: E402  (the demo's data pipeline)


class Capitaliser(nn.Module):
  """Character ids ``(B, T)`` -> logits ``(B, T, 2)`` (upper case or not)."""

  hidden: int
  embed: int = 16

  @nn.compact
  def __call__(self, ids, lengths):
    xs = nn.Embed(capitalise.VOCAB_SIZE, self.embed)(ids)
    body = jaxrnn.bidirectional(jaxrnn.lstm(self.hidden), jaxrnn.lstm(self.hidden))
    ys = jaxrnn.flax.RNN(body)(xs, seq_lengths=lengths)  # 0 at padded steps
    return nn.Dense(2)(ys)


def loss_fn(model, params, ids, labels, lengths):
  """Cross-entropy per valid character."""
  logits = model.apply({"params": params}, ids, lengths)
  per_sequence = jaxrnn.labelling_loss(logits, labels, lengths, reduction="sum")
  return jnp.sum(per_sequence) / jnp.maximum(jnp.sum(lengths), 1)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  parser.add_argument("--hidden", type=int, default=32, help="LSTM size per direction")
  parser.add_argument("--seed", type=int, default=0, help="seed of the weights and batches")
  args = parser.parse_args(argv)
  config = capitalise.Config(steps=args.steps, batch_size=32, max_length=128,
                             pad_multiple=64, seed=args.seed)

  def examples(texts, max_chars=None):
    pieces = [p for t in texts for p in capitalise.paragraphs(t, config.max_length)]
    return [capitalise.encode(p) for p in capitalise.take_prefix(pieces, max_chars)]

  train_texts, held_texts = capitalise.split_topics(config.held_out)
  train_examples, held_examples = examples(train_texts), examples(held_texts, 50_000)

  model = Capitaliser(args.hidden)
  ids, _, lengths = next(capitalise.batches(train_examples, config, rng=None))
  params = jax.jit(model.init)(jax.random.key(args.seed), ids, lengths)["params"]  # one compile
  optimizer = optax.adam(optax.cosine_decay_schedule(2e-2, args.steps, alpha=0.1))
  opt_state = optimizer.init(params)
  compiled = []  # the padded length of each compilation of `step`

  @jax.jit
  def step(params, opt_state, ids, labels, lengths):
    compiled.append(ids.shape[1])
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, ids, labels, lengths))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def forever(rng):  # shuffled epochs of bucketed, padded batches
    while True:
      yield from capitalise.batches(train_examples, config, rng)

  stream = forever(np.random.default_rng(args.seed))
  start, losses = time.perf_counter(), []
  for i in range(args.steps):
    params, opt_state, loss = step(params, opt_state, *next(stream))
    losses.append(float(loss))
    if (i + 1) % max(1, args.steps // 5) == 0:
      print(f"step {i + 1}/{args.steps}  loss {np.mean(losses[-20:]):.4f}", flush=True)

  predict = jax.jit(lambda p, ids, n: jnp.argmax(model.apply({"params": p}, ids, n), -1))
  tp = fp = fn = 0
  for ids, labels, lengths in capitalise.batches(held_examples, config, rng=None):
    valid = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    pred, truth = (np.asarray(predict(params, ids, lengths)) == 1) & valid, (labels == 1) & valid
    tp, fp, fn = tp + np.sum(pred & truth), fp + np.sum(pred & ~truth), fn + np.sum(~pred & truth)
  f1 = 2 * tp / max(2 * tp + fp + fn, 1)
  print(f"held-out F1 of the upper-case characters: {f1:.3f}; trained in "
        f"{time.perf_counter() - start:.0f} s; the step compiled {len(compiled)} time(s), "
        f"for padded lengths {sorted(compiled)}")
  return {"losses": np.array(losses), "f1": f1, "compiled": sorted(compiled)}


if __name__ == "__main__":
  main(sys.argv[1:])
